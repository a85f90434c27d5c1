"""The fallback's common coin (zkpot/coin.py): threshold BLS over BLS12-381, dealt at genesis.

What the fallback relies on: any 2f+1 valid shares give the same coin and it verifies; fewer give
nothing; a bad share of any kind is refused (False, never an exception); the coin is bound to its
chain and view and its value looks uniform; the dealt keys are checked for consistency when the
coin section or the genesis file loads; share files are checked; a replica refuses to start
without its own share.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chain_factory import make_genesis
from ledger_process import REPO, free_port

from zkpot import coin
from zkpot.errors import StartupError
from zkpot.genesis import Genesis, GenesisFileError

PUBLIC4, SHARES4 = coin.deal(4, 3, seed=b"test-coin-4")
OTHER4, OTHER_SHARES4 = coin.deal(4, 3, seed=b"another dealing")
MSG = coin.coin_message("zkpot-test", 7)
GOOD = coin.sign_share(SHARES4[0], MSG)  # validator 0's share of MSG
G2_IDENTITY = bytes([0xC0]) + bytes(95)  # compressed point at infinity


def _signed(shares: list[bytes], msg: bytes) -> dict[int, bytes]:
    return {i: coin.sign_share(s, msg) for i, s in enumerate(shares)}


# --- combining -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t"), [(4, 3), (7, 5)])
def test_every_quorum_of_shares_gives_the_same_verified_coin(n: int, t: int) -> None:
    public, shares = coin.deal(n, t, seed=b"quorums")
    signed = _signed(shares, MSG)
    assert all(coin.verify_share(public, i, MSG, sh) for i, sh in signed.items())
    assert coin.sign_share(shares[0], MSG) == signed[0]  # deterministic (BLS is unique)
    coins = {coin.combine(public, {i: signed[i] for i in subset}) for subset in itertools.combinations(range(n), t)}
    assert len(coins) == 1
    (sig,) = coins
    assert coin.verify_coin(public, MSG, sig)
    assert coin.combine(public, signed) == sig  # more than t shares: the lowest t are used, same coin
    assert sig not in signed.values()  # the coin is no validator's share


@pytest.mark.parametrize(("n", "t"), [(4, 3), (7, 5)])
def test_fewer_than_threshold_shares_make_no_coin(n: int, t: int) -> None:
    public, shares = coin.deal(n, t, seed=b"few")
    signed = _signed(shares, MSG)
    for subset in ({}, {i: signed[i] for i in range(t - 1)}, {i: signed[i] for i in range(n - t + 1, n)}):
        with pytest.raises(coin.CoinError, match=f"{len(subset)} coin shares, {t} needed"):
            coin.combine(public, subset)


def test_a_quorum_with_one_bad_share_gives_a_coin_that_does_not_verify() -> None:
    """Why a replica verifies each share before combining: one wrong share spoils the coin."""
    signed = _signed(SHARES4, MSG)
    spoiled = {0: coin.sign_share(OTHER_SHARES4[0], MSG), 1: signed[1], 2: signed[2]}
    assert not coin.verify_coin(PUBLIC4, MSG, coin.combine(PUBLIC4, spoiled))
    with pytest.raises(coin.CoinError, match="validator 1 is not a point of G2"):
        coin.combine(PUBLIC4, {0: signed[0], 1: bytes(96), 2: signed[2]})


# --- bad shares ------------------------------------------------------------------------------------

BAD_SHARES: dict[str, tuple[int, bytes]] = {
    "another validator's index": (1, GOOD),
    "validator 1's share under index 0": (0, coin.sign_share(SHARES4[1], MSG)),
    "another view": (0, coin.sign_share(SHARES4[0], coin.coin_message("zkpot-test", 8))),
    "another chain": (0, coin.sign_share(SHARES4[0], coin.coin_message("zkpot-other", 7))),
    "another dealing's secret": (0, coin.sign_share(OTHER_SHARES4[0], MSG)),
    "a wrong secret": (0, coin.sign_share(bytes(31) + b"\x01", MSG)),
    "negated share": (0, bytes([GOOD[0] ^ 0x20]) + GOOD[1:]),  # the sign flag flipped: -share, a valid point
    "zeros": (0, bytes(96)),
    "junk": (0, b"\xff" * 96),
    "empty": (0, b""),
    "short": (0, GOOD[:95]),
    "oversize": (0, GOOD + b"\x00"),
    "huge": (0, GOOD * 1000),
    "a G1 point": (0, PUBLIC4.group_key),
    "the G2 identity": (0, G2_IDENTITY),
    "index out of range": (4, GOOD),
    "negative index": (-1, GOOD),
}


@pytest.mark.parametrize("case", sorted(BAD_SHARES))
def test_a_bad_share_is_refused_never_raised(case: str) -> None:
    index, share = BAD_SHARES[case]
    assert coin.verify_share(PUBLIC4, index, MSG, share) is False


def test_identity_keys_and_shares_are_refused() -> None:
    """A zero secret has the identity as key, under which the identity share passes the pairing
    check and the coin is fixed: such keys are refused when parsed, the identity share always."""
    for key in (bytes([0xC0]) + bytes(47), b"\xff" * 48):  # arkworks reads any 0xC0-flagged bytes as it
        with pytest.raises(coin.CoinError, match="point at infinity"):
            coin.CoinPublic(PUBLIC4.group_key, (key, *PUBLIC4.share_keys[1:]), 3)
        with pytest.raises(coin.CoinError, match="point at infinity"):
            coin.CoinPublic(key, PUBLIC4.share_keys, 3)
    assert coin.verify_share(PUBLIC4, 0, MSG, G2_IDENTITY) is False
    assert coin.verify_share(PUBLIC4, 0, MSG, b"\xff" * 96) is False
    for secret in (b"\xff" * 32, bytes(32), coin.ORDER.to_bytes(32, "big")):  # not below the order / zero
        assert coin.share_matches(PUBLIC4, 0, secret) is False
        with pytest.raises(coin.CoinError, match="below the group order"):
            coin.sign_share(secret, MSG)


def test_the_good_share_verifies_and_the_coin_check_refuses_junk() -> None:
    assert coin.verify_share(PUBLIC4, 0, MSG, GOOD) is True
    for junk in (b"", b"junk", bytes(96), G2_IDENTITY, GOOD):  # a share is not the coin
        assert coin.verify_coin(PUBLIC4, MSG, junk) is False


# --- binding and value ----------------------------------------------------------------------------


def _coin_of(chain_id: str, view: int) -> bytes:
    msg = coin.coin_message(chain_id, view)
    return coin.combine(PUBLIC4, {i: coin.sign_share(SHARES4[i], msg) for i in (0, 2, 3)})


def test_the_coin_is_bound_to_its_chain_and_view() -> None:
    sig = _coin_of("zkpot-test", 7)
    assert coin.verify_coin(PUBLIC4, coin.coin_message("zkpot-test", 7), sig)
    assert not coin.verify_coin(PUBLIC4, coin.coin_message("zkpot-test", 8), sig)
    assert not coin.verify_coin(PUBLIC4, coin.coin_message("zkpot-test", 6), sig)
    assert not coin.verify_coin(PUBLIC4, coin.coin_message("zkpot-other", 7), sig)
    assert not coin.verify_coin(OTHER4, coin.coin_message("zkpot-test", 7), sig)  # another dealing's group key
    assert coin.coin_value(sig) != coin.coin_value(_coin_of("zkpot-other", 7))
    # the message is unambiguous: chain id length-prefixed, view fixed-width
    assert coin.coin_message("ab", 1) != coin.coin_message("a", 1)
    assert coin.coin_message("a", 256) != coin.coin_message("a", 1)


def test_the_coin_value_differs_across_views_and_looks_uniform() -> None:
    views = 200
    values = [coin.coin_value(_coin_of("zkpot-test", v)) for v in range(views)]
    assert len(set(values)) == views
    assert all(0 <= x < 2**256 for x in values)
    # mod 4 (an election among 4 chains): 50 expected per bucket, sd ~6.1; the deal is seeded, so
    # this is a fixed outcome, and the bounds (~3.3 sd) only catch a stuck or badly skewed coin
    buckets = [sum(1 for x in values if x % 4 == b) for b in range(4)]
    assert all(30 <= b <= 70 for b in buckets), buckets
    high = sum(1 for x in values if x >> 255)  # the top bit too (not only the low bits)
    assert 70 <= high <= 130, high


# --- dealing and public keys ----------------------------------------------------------------------


def test_dealing_is_reproducible_with_a_seed_and_only_then() -> None:
    assert coin.deal(4, 3, seed=b"s") == coin.deal(4, 3, seed=b"s")
    assert coin.deal(4, 3, seed=b"s") != coin.deal(4, 3, seed=b"t")
    a, b = coin.deal(4, 3), coin.deal(4, 3)
    assert a[0] != b[0] and a[1] != b[1]
    assert len(set(a[1])) == 4 and all(len(s) == 32 for s in a[1])


@pytest.mark.parametrize(("n", "t"), [(4, 0), (4, 5), (4, -1), (0, 0), (1, 2)])
def test_a_threshold_outside_1_to_n_is_refused(n: int, t: int) -> None:
    with pytest.raises(coin.CoinError, match="threshold"):
        coin.deal(n, t)
    if n:
        with pytest.raises(coin.CoinError, match="outside"):
            coin.CoinPublic(PUBLIC4.group_key, PUBLIC4.share_keys[:n], t)


def test_share_matches_only_its_own_index() -> None:
    for i, secret in enumerate(SHARES4):
        assert [coin.share_matches(PUBLIC4, j, secret) for j in range(4)] == [j == i for j in range(4)]
    assert not coin.share_matches(PUBLIC4, 4, SHARES4[0])
    assert not coin.share_matches(PUBLIC4, -1, SHARES4[3])
    assert not coin.share_matches(PUBLIC4, 0, SHARES4[0][:31])
    assert not coin.share_matches(OTHER4, 0, SHARES4[0])


def test_public_keys_round_trip_through_json() -> None:
    data = json.loads(json.dumps(PUBLIC4.to_json()))
    assert data["scheme"] == "bls12-381-g2-threshold" and data["threshold"] == 3 and len(data["share_keys"]) == 4
    loaded = coin.CoinPublic.from_json(data)
    assert loaded == PUBLIC4
    assert coin.verify_share(loaded, 0, MSG, GOOD)
    assert coin.verify_coin(loaded, MSG, _coin_of("zkpot-test", 7))


def _bad_public(case: str) -> dict:
    data = PUBLIC4.to_json()
    keys, other = data["share_keys"], OTHER4.to_json()
    flipped = bytearray(PUBLIC4.group_key)
    flipped[-1] ^= 1
    return {
        "share keys swapped": {**data, "share_keys": [keys[1], keys[0], *keys[2:]]},
        "last share key swapped with the first": {**data, "share_keys": [keys[3], *keys[1:3], keys[0]]},
        "another dealing's share key": {**data, "share_keys": [*keys[:3], other["share_keys"][3]]},
        "another dealing's group key": {**data, "group_key": other["group_key"]},
        "a share key as group key": {**data, "group_key": keys[0]},
        "group key byte flipped": {**data, "group_key": flipped.hex()},
        "group key not a point": {**data, "group_key": "00" * 48},
        "share key not a point": {**data, "share_keys": [*keys[:3], "9f" + "ff" * 47]},  # x >= p
        "group key not hex": {**data, "group_key": "zz"},
        "group key 47 bytes": {**data, "group_key": data["group_key"][:-2]},
        "wrong scheme": {**data, "scheme": "rsa"},
        "no scheme": {k: v for k, v in data.items() if k != "scheme"},
        "missing share keys": {k: v for k, v in data.items() if k != "share_keys"},
        "missing group key": {k: v for k, v in data.items() if k != "group_key"},
        "missing threshold": {k: v for k, v in data.items() if k != "threshold"},
        "threshold 0": {**data, "threshold": 0},
        "threshold n+1": {**data, "threshold": 5},
        "threshold not a number": {**data, "threshold": "three"},
    }[case]


FROM_JSON_REFUSALS = {
    "share keys swapped": "inconsistent: the group key is not on the dealt polynomial",
    "last share key swapped with the first": "inconsistent",
    "another dealing's share key": "inconsistent: share key 3",
    "another dealing's group key": "inconsistent: the group key",
    "a share key as group key": "inconsistent: the group key",
    "group key byte flipped": "inconsistent|not a point",
    "group key not a point": "group key: not a point of G1",
    "share key not a point": "share key 3: not a point of G1",
    "group key not hex": "coin section: non-hexadecimal",
    "group key 47 bytes": "47 bytes, a compressed G1 point has 48",
    "wrong scheme": "unknown coin scheme 'rsa'",
    "no scheme": "unknown coin scheme None",
    "missing share keys": "coin section: 'share_keys'",
    "missing group key": "coin section: 'group_key'",
    "missing threshold": "coin section: 'threshold' is missing",
    "threshold 0": "threshold 0 outside 1..4",
    "threshold n+1": "threshold 5 outside 1..4",
    "threshold not a number": "coin threshold 'three' is not a whole number",
}


@pytest.mark.parametrize("case", sorted(FROM_JSON_REFUSALS))
def test_an_unusable_coin_section_is_refused(case: str) -> None:
    with pytest.raises(coin.CoinError, match=FROM_JSON_REFUSALS[case]):
        coin.CoinPublic.from_json(_bad_public(case))


# --- genesis --------------------------------------------------------------------------------------


def test_genesis_carries_the_coin_through_save_and_load(tmp_path: Path) -> None:
    fx = make_genesis(n_validators=4, n_participants=2, coin=True)
    path = tmp_path / "genesis.json"
    fx.genesis.save(path)
    assert json.loads(path.read_text())["coin"] == fx.genesis.coin.to_json()  # type: ignore[union-attr]
    loaded = Genesis.load(path)
    assert loaded == fx.genesis
    assert loaded.coin == fx.genesis.coin and loaded.coin is not None and loaded.coin.threshold == 3
    assert all(coin.share_matches(loaded.coin, i, s) for i, s in enumerate(fx.coin_shares))
    msg = coin.coin_message(loaded.chain_id, 1)
    sig = coin.combine(loaded.coin, {i: coin.sign_share(s, msg) for i, s in enumerate(fx.coin_shares)})
    assert coin.verify_coin(loaded.coin, msg, sig)
    plain = make_genesis(n_validators=4, n_participants=2)
    plain.genesis.save(path)
    assert "coin" not in json.loads(path.read_text()) and Genesis.load(path).coin is None


@pytest.mark.parametrize(
    ("n", "bad", "message"),
    [
        (4, lambda: coin.deal(5, 3, seed=b"5")[0].to_json(), "5 share keys for 4 validators"),
        (4, lambda: coin.deal(3, 3, seed=b"3")[0].to_json(), "3 share keys for 4 validators"),
        (4, lambda: coin.deal(4, 1, seed=b"1")[0].to_json(), r"threshold 1 is below f\+1 = 2"),
        (7, lambda: coin.deal(7, 2, seed=b"2")[0].to_json(), r"threshold 2 is below f\+1 = 3"),
        (4, lambda: {**PUBLIC4.to_json(), "share_keys": PUBLIC4.to_json()["share_keys"][::-1]}, "inconsistent"),
        (4, lambda: {**PUBLIC4.to_json(), "scheme": "rsa"}, "unknown coin scheme"),
    ],
    ids=["too-many-keys", "too-few-keys", "threshold-1-of-4", "threshold-2-of-7", "inconsistent", "scheme"],
)
def test_genesis_refuses_a_bad_coin_section(tmp_path: Path, n: int, bad, message: str) -> None:
    fx = make_genesis(n_validators=n, n_participants=1, coin=True)
    path = tmp_path / "genesis.json"
    fx.genesis.save(path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "coin": bad()}))
    with pytest.raises(GenesisFileError, match=message) as err:
        Genesis.load(path)
    assert str(path) in str(err.value)


def test_genesis_accepts_threshold_f_plus_1(tmp_path: Path) -> None:
    fx = make_genesis(n_validators=7, n_participants=1, coin=True)
    path = tmp_path / "genesis.json"
    fx.genesis.save(path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "coin": coin.deal(7, 3, seed=b"f+1")[0].to_json()}))
    assert Genesis.load(path).coin.threshold == 3  # type: ignore[union-attr]


# --- share files ----------------------------------------------------------------------------------


def test_share_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "share.json"
    coin.save_share(path, SHARES4[1], 1)
    assert coin.load_share(path) == SHARES4[1]
    assert path.stat().st_mode & 0o777 == 0o600
    body = json.loads(path.read_text())
    assert body == {"kind": coin.SHARE_FILE_KIND, "index": 1, "secret": SHARES4[1].hex()}


SHARE_FILE_REFUSALS: dict[str, str | None] = {
    "missing": None,
    "not json": "{",
    "empty": "",
    "a json list": "[1, 2]",
    "wrong kind": json.dumps({"kind": "key", "secret": "00" * 32}),
    "no kind": json.dumps({"secret": "00" * 32}),
    "no secret": json.dumps({"kind": coin.SHARE_FILE_KIND, "index": 0}),
    "short secret": json.dumps({"kind": coin.SHARE_FILE_KIND, "secret": "00" * 31}),
    "long secret": json.dumps({"kind": coin.SHARE_FILE_KIND, "secret": "00" * 33}),
    "secret not hex": json.dumps({"kind": coin.SHARE_FILE_KIND, "secret": "zz" * 32}),
    "secret a number": json.dumps({"kind": coin.SHARE_FILE_KIND, "secret": 5}),
    "secret over the group order": json.dumps({"kind": coin.SHARE_FILE_KIND, "secret": "ff" * 32}),
}


@pytest.mark.parametrize("case", sorted(SHARE_FILE_REFUSALS))
def test_an_unusable_share_file_is_refused_naming_it(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case.replace(' ', '-')}.json"
    body = SHARE_FILE_REFUSALS[case]
    if body is not None:
        path.write_text(body)
    with pytest.raises(StartupError, match=f"^coin share {re.escape(str(path))}: cannot use it"):
        coin.load_share(path)


# --- a replica process ----------------------------------------------------------------------------


def test_a_replica_refuses_to_start_without_its_own_share(tmp_path: Path) -> None:
    """The check runs before the replica connects anywhere: no ledger is running here (the ledger
    address is a free port). With its own share the same command gets past it and keeps running
    (waiting for the ledger), so the refusals are about the share, not the missing ledger."""
    fx = make_genesis(n_validators=4, n_participants=1, coin=True)
    genesis = tmp_path / "genesis.json"
    fx.genesis.save(genesis)
    fx.validator_keys[0].save(tmp_path / "key.json")
    coin.save_share(tmp_path / "mine.json", fx.coin_shares[0], 0)
    coin.save_share(tmp_path / "other.json", fx.coin_shares[1], 1)
    base = [sys.executable, "-m", "zkpot.cli", "consensus", "serve", "--genesis", str(genesis), "--key",
            str(tmp_path / "key.json"), "--node", "validator-0", "--listen", f"127.0.0.1:{free_port()}",
            "--ledger", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data")]
    cases = [
        ([], "genesis deals a common coin (the asynchronous fallback): pass --coin-share FILE"),
        (["--coin-share", str(tmp_path / "other.json")],
         f"coin share {tmp_path / 'other.json'}: not the share genesis lists for this validator's key"),
        (["--coin-share", str(tmp_path / "absent.json")], f"coin share {tmp_path / 'absent.json'}: cannot use it"),
    ]
    for extra, message in cases:
        t0 = time.monotonic()
        proc = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True, timeout=30)
        out = (proc.stdout + proc.stderr).strip()
        assert proc.returncode != 0, out
        assert time.monotonic() - t0 < 30
        assert len(out.splitlines()) == 1, out  # one line, no traceback
        assert out.startswith("zkpot consensus: ") and message in out, out
        assert "coin share" in out or "--coin-share" in out
    control = subprocess.Popen([*base, "--coin-share", str(tmp_path / "mine.json")], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            control.wait(timeout=3)  # the refusals above came in well under a second
    finally:
        control.kill()
        out = control.communicate(timeout=30)[0]
    assert "coin share" not in out, out


def test_genesis_refuses_a_coin_that_is_not_an_object_or_whose_threshold_could_stall(tmp_path: Path) -> None:
    """Defects found by attacking it: a null/list coin section crashed genesis loading with a
    traceback; a threshold above n-f let f silent validators block every coin; a fractional
    threshold was truncated."""
    fx = make_genesis(n_validators=4, n_participants=1, coin=True)
    path = tmp_path / "genesis.json"
    fx.genesis.save(path)
    data = json.loads(path.read_text())
    four_of_four = coin.deal(4, 4, seed=b"all")[0].to_json()
    for bad, message in ((None, "an object"), ([1, 2], "an object"), ("coin", "an object"),
                         (four_of_four, "above n-f = 3"),
                         ({**data["coin"], "threshold": 3.0}, "not a whole number"),
                         ({**data["coin"], "threshold": True}, "not a whole number")):
        path.write_text(json.dumps({**data, "coin": bad}))
        with pytest.raises(GenesisFileError, match=message):
            Genesis.load(path)

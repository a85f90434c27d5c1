"""The fallback's common coin (zkpot/coin.py): threshold BLS over BLS12-381, dealt at genesis.

What the fallback relies on: any 2f+1 valid shares give the same coin; fewer give nothing; a bad
share of any kind is refused (never raises); the coin is bound to its chain and view; the dealt
keys are checked for consistency when genesis loads; a replica refuses to start without its own
share.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from chain_factory import make_genesis
from ledger_process import REPO, free_port

from zkpot import coin
from zkpot.errors import StartupError
from zkpot.genesis import Genesis, GenesisFileError

PUBLIC4, SHARES4 = coin.deal(4, 3, seed=b"test-coin-4")
MSG = coin.coin_message("zkpot-test", 7)


@pytest.mark.parametrize(("n", "t"), [(4, 3), (7, 5)])
def test_every_quorum_of_shares_gives_the_same_coin(n: int, t: int) -> None:
    public, shares = coin.deal(n, t, seed=b"quorums")
    signed = {i: coin.sign_share(s, MSG) for i, s in enumerate(shares)}
    assert all(coin.verify_share(public, i, MSG, sh) for i, sh in signed.items())
    coins = {coin.combine(public, {i: signed[i] for i in subset}) for subset in itertools.combinations(range(n), t)}
    assert len(coins) == 1
    (sig,) = coins
    assert coin.verify_coin(public, MSG, sig)
    with pytest.raises(coin.CoinError, match="needed"):
        coin.combine(public, {i: signed[i] for i in range(t - 1)})


def test_bad_shares_are_refused_never_raised() -> None:
    good = coin.sign_share(SHARES4[0], MSG)
    other_public, other_shares = coin.deal(4, 3, seed=b"another dealing")
    bad = {
        "another validator's index": (1, good),
        "another view": (0, coin.sign_share(SHARES4[0], coin.coin_message("zkpot-test", 8))),
        "another chain": (0, coin.sign_share(SHARES4[0], coin.coin_message("zkpot-other", 7))),
        "another dealing's secret": (0, coin.sign_share(other_shares[0], MSG)),
        "zeros": (0, bytes(96)),
        "junk": (0, b"\xff" * 96),
        "empty": (0, b""),
        "short": (0, good[:95]),
        "oversize": (0, good + b"\x00"),
        "a G1 point": (0, PUBLIC4.group_key),
        "identity": (0, bytes([0xC0]) + bytes(95)),
        "index out of range": (9, good),
        "negative index": (-1, good),
    }
    for what, (index, share) in bad.items():
        assert coin.verify_share(PUBLIC4, index, MSG, share) is False, what
    assert coin.verify_share(PUBLIC4, 0, MSG, good)
    assert not coin.verify_coin(PUBLIC4, MSG, b"junk")


def test_the_coin_is_bound_to_chain_and_view_and_looks_uniform() -> None:
    def coin_of(chain_id: str, view: int) -> bytes:
        msg = coin.coin_message(chain_id, view)
        return coin.combine(PUBLIC4, {i: coin.sign_share(SHARES4[i], msg) for i in range(3)})

    sig = coin_of("zkpot-test", 7)
    assert not coin.verify_coin(PUBLIC4, coin.coin_message("zkpot-test", 8), sig)
    assert not coin.verify_coin(PUBLIC4, coin.coin_message("zkpot-other", 7), sig)
    values = [coin.coin_value(coin_of("zkpot-test", v)) for v in range(120)]
    assert len(set(values)) == 120
    buckets = [sum(1 for x in values if x % 4 == b) for b in range(4)]
    assert min(buckets) >= 15, buckets  # 30 expected per bucket; a stuck coin would put 120 in one


def test_dealing_is_reproducible_only_with_a_seed_and_thresholds_are_bounded() -> None:
    assert coin.deal(4, 3, seed=b"s") == coin.deal(4, 3, seed=b"s")
    assert coin.deal(4, 3)[0] != coin.deal(4, 3)[0]
    for n, t in ((4, 0), (4, 5)):
        with pytest.raises(coin.CoinError, match="threshold"):
            coin.deal(n, t)
    assert coin.share_matches(PUBLIC4, 2, SHARES4[2]) and not coin.share_matches(PUBLIC4, 1, SHARES4[2])


def test_public_keys_round_trip_and_an_inconsistent_dealing_is_refused() -> None:
    data = PUBLIC4.to_json()
    assert coin.CoinPublic.from_json(json.loads(json.dumps(data))) == PUBLIC4
    swapped = {**data, "share_keys": [data["share_keys"][1], data["share_keys"][0], *data["share_keys"][2:]]}
    other = coin.deal(4, 3, seed=b"other")[0].to_json()
    cases = {
        "share keys swapped": (swapped, "inconsistent"),
        "another dealing's group key": ({**data, "group_key": other["group_key"]}, "inconsistent"),
        "not a point": ({**data, "group_key": "00" * 48}, "not a point"),
        "not hex": ({**data, "group_key": "zz"}, "coin section"),
        "wrong scheme": ({**data, "scheme": "rsa"}, "unknown coin scheme"),
        "missing field": ({k: v for k, v in data.items() if k != "share_keys"}, "coin section"),
    }
    for what, (bad, message) in cases.items():
        with pytest.raises(coin.CoinError, match=message):
            coin.CoinPublic.from_json(bad)
        assert what


def test_genesis_carries_the_coin_and_refuses_a_bad_one(tmp_path: Path) -> None:
    fx = make_genesis(n_validators=4, n_participants=2, coin=True)
    path = tmp_path / "genesis.json"
    fx.genesis.save(path)
    loaded = Genesis.load(path)
    assert loaded.coin == fx.genesis.coin and loaded.coin is not None and loaded.coin.threshold == 3
    assert coin.share_matches(loaded.coin, 3, fx.coin_shares[3])
    data = json.loads(path.read_text())
    five = coin.deal(5, 3, seed=b"5")[0].to_json()
    low = coin.deal(4, 1, seed=b"1")[0].to_json()
    for bad, message in ((five, "5 share keys for 4 validators"), (low, "below f\\+1")):
        path.write_text(json.dumps({**data, "coin": bad}))
        with pytest.raises(GenesisFileError, match=message):
            Genesis.load(path)


def test_share_files(tmp_path: Path) -> None:
    path = tmp_path / "share.json"
    coin.save_share(path, SHARES4[1], 1)
    assert coin.load_share(path) == SHARES4[1]
    assert path.stat().st_mode & 0o777 == 0o600
    bad = {"missing": None, "not json": "{", "wrong kind": json.dumps({"kind": "key", "secret": "00" * 32}),
           "short secret": json.dumps({"kind": coin.SHARE_FILE_KIND, "secret": "00" * 31})}
    for name, body in bad.items():
        p = tmp_path / f"{name}.json"
        if body is not None:
            p.write_text(body)
        with pytest.raises(StartupError, match=f"coin share {p}"):
            coin.load_share(p)


def test_a_replica_refuses_to_start_without_its_own_share(tmp_path: Path) -> None:
    fx = make_genesis(n_validators=4, n_participants=1, coin=True)
    genesis = tmp_path / "genesis.json"
    fx.genesis.save(genesis)
    fx.validator_keys[0].save(tmp_path / "key.json")
    coin.save_share(tmp_path / "other.json", fx.coin_shares[1], 1)
    base = [sys.executable, "-m", "zkpot.cli", "consensus", "serve", "--genesis", str(genesis), "--key",
            str(tmp_path / "key.json"), "--node", "validator-0", "--listen", f"127.0.0.1:{free_port()}",
            "--ledger", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data")]
    for extra, message in (([], "--coin-share"),
                           (["--coin-share", str(tmp_path / "other.json")], "not the share genesis lists")):
        proc = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr

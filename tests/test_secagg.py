"""Secure aggregation crypto (zkpot.secagg): masks cancel, dropouts are recovered from shares,
bad shares are skipped, everything is deterministic under a seeded RNG and refuses bad input."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings

from zkpot import secagg as sa
from zkpot.crypto import KeyPair

TASK = bytes(range(32))
ROUND = 5
N_PARAMS = 1210  # the default MLP 64-16-10


def seeded(seed: int) -> sa.Rng:
    r = random.Random(seed)
    return r.randbytes


@dataclass
class Round:
    """One simulated (task, round): genesis participants, their mask keys and phase-1 boxes."""

    keypairs: dict[bytes, KeyPair]
    pks: list[bytes]
    threshold: int
    masks: dict[bytes, sa.MaskKeys]
    boxes: dict[bytes, list[bytes]]
    xs: dict[bytes, np.ndarray]

    @property
    def publics(self) -> dict[bytes, bytes]:
        return {pk: m.public for pk, m in self.masks.items()}

    def masked(self, members: list[bytes]) -> dict[bytes, np.ndarray]:
        peers = {pk: self.masks[pk].public for pk in members}
        return {pk: sa.mask_update(self.xs[pk], pk, self.masks[pk].secret, peers, TASK, ROUND) for pk in members}

    def reveal(self, dealer: bytes, holders: list[bytes]) -> dict[bytes, bytes]:
        return {h: sa.holder_share_key(self.keypairs[h], self.masks[dealer].public, TASK, ROUND, dealer)
                for h in holders}

    def recover(self, dealer: bytes, revealed: dict[bytes, bytes]) -> bytes | None:
        return sa.reconstruct_mask_secret(self.boxes[dealer], revealed, sa.holders_for(self.pks, dealer),
                                          self.threshold, TASK, ROUND, dealer, self.masks[dealer].public)


def make_round(n: int, seed: int = 1, n_params: int = 64, lo: int = -50_000, hi: int = 50_000) -> Round:
    rng = seeded(seed)
    keypairs = {kp.public: kp for kp in (KeyPair.from_seed(rng(32)) for _ in range(n))}
    pks = sorted(keypairs)
    t = sa.default_threshold(n)
    masks = {pk: sa.MaskKeys.generate(rng) for pk in pks}
    boxes = {pk: sa.encrypt_shares(masks[pk].secret, sa.holders_for(pks, pk), t, TASK, ROUND, pk, rng)
             for pk in pks}
    np_rng = np.random.default_rng(seed)
    xs = {pk: np_rng.integers(lo, hi, size=n_params, dtype=np.int64) for pk in pks}
    return Round(keypairs, pks, t, masks, boxes, xs)


def plain_sum(r: Round, members: list[bytes]) -> np.ndarray:
    return np.sum([r.xs[pk] for pk in members], axis=0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------


def test_masks_cancel_without_dropout_including_negative_values() -> None:
    r = make_round(5)
    r.xs[r.pks[0]][:] = -40_000  # force negative partial and total sums
    ys = r.masked(r.pks)
    total = sa.unmask_sum(ys, {}, r.publics, TASK, ROUND)
    assert total.dtype == np.int64
    assert np.array_equal(total, plain_sum(r, r.pks))
    assert (total < 0).any()


def test_exact_at_the_documented_bound() -> None:
    r = make_round(4)
    bound = sa.sum_bound(4)
    for k, pk in enumerate(r.pks):
        r.xs[pk][:] = -bound if k % 2 == 0 else bound
        r.xs[pk][:5] = -bound  # the most negative sum the bound allows
    total = sa.unmask_sum(r.masked(r.pks), {}, r.publics, TASK, ROUND)
    assert np.array_equal(total, plain_sum(r, r.pks))
    assert total[0] == -4 * bound
    with pytest.raises(ValueError, match="fits int32"):
        x = r.xs[r.pks[0]].copy()
        x[0] = bound + 1
        sa.mask_update(x, r.pks[0], r.masks[r.pks[0]].secret, r.publics, TASK, ROUND)


@pytest.mark.parametrize("n_dropped", [1, 2])
def test_dropouts_are_recovered_from_shares(n_dropped: int) -> None:
    r = make_round(7)  # t = 5: tolerates 7 - 5 = 2 dropouts
    dropped = r.pks[2:2 + n_dropped]
    survivors = [pk for pk in r.pks if pk not in dropped]
    # masked updates are computed against the whole accepted set; the dropped never send theirs
    ys = {pk: y for pk, y in r.masked(r.pks).items() if pk in survivors}
    secrets = {}
    for j in dropped:
        # the dropped members are offline: only survivors reveal
        revealed = r.reveal(j, [h for h in sa.holders_for(r.pks, j) if h in survivors])
        secrets[j] = r.recover(j, revealed)
        assert secrets[j] == r.masks[j].secret
    total = sa.unmask_sum(ys, secrets, r.publics, TASK, ROUND)
    assert np.array_equal(total, plain_sum(r, survivors))
    # without removing the dangling masks the sum is garbage
    with pytest.raises(ValueError, match="dropped"):
        sa.unmask_sum(ys, {}, r.publics, TASK, ROUND)


def test_accepted_set_smaller_than_genesis() -> None:
    # participants that failed the proof phase still hold shares but are not in U
    r = make_round(6)
    u = r.pks[1:5]
    ys = r.masked(u)
    dropped = u[0]
    del ys[dropped]
    secret = r.recover(dropped, r.reveal(dropped, sa.holders_for(r.pks, dropped)))
    total = sa.unmask_sum(ys, {dropped: secret}, {pk: r.masks[pk].public for pk in u}, TASK, ROUND)
    assert np.array_equal(total, plain_sum(r, u[1:]))


def _box(key: bytes, share: int, dealer: bytes, holder: bytes) -> bytes:
    nonce = sa._share_nonce(sa._share_context("mask", TASK, ROUND, dealer, holder))
    return bindings.crypto_secretbox(share.to_bytes(sa.SHARE_LEN, "big"), nonce, key)


def test_malicious_shares_are_skipped() -> None:
    r = make_round(7)  # t = 5 of 6 holders
    dealer = r.pks[3]
    holders = sa.holders_for(r.pks, dealer)
    revealed = r.reveal(dealer, holders)
    # a garbage plaintext under the right key: the box opens, the share is wrong
    bad = holders[0]
    key = sa.share_key(r.masks[dealer].secret, bad, TASK, ROUND, dealer)
    assert key == revealed[bad]
    r.boxes[dealer][0] = _box(key, 12345, dealer, bad)
    assert sa.open_share(r.boxes[dealer][0], key, TASK, ROUND, dealer, bad) == 12345
    assert r.recover(dealer, revealed) == r.masks[dealer].secret  # found by a later 5-subset
    # a wrong revealed key: the box does not open
    revealed[holders[1]] = bytes(32)
    assert sa.open_share(r.boxes[dealer][1], bytes(32), TASK, ROUND, dealer, holders[1]) is None
    assert r.recover(dealer, revealed) is None  # 4 shares open, 1 is garbage: no valid 5-subset
    # a box opened under another holder's context (replayed share) is refused
    assert sa.open_share(r.boxes[dealer][2], revealed[holders[2]], TASK, ROUND, dealer, holders[3]) is None


def test_a_plaintext_beyond_the_field_is_not_a_share() -> None:
    r = make_round(4)
    dealer, holder = r.pks[0], sa.holders_for(r.pks, r.pks[0])[0]
    key = sa.share_key(r.masks[dealer].secret, holder, TASK, ROUND, dealer)
    assert sa.open_share(_box(key, sa.PRIME, dealer, holder), key, TASK, ROUND, dealer, holder) is None


def test_fewer_than_threshold_shares_give_none() -> None:
    r = make_round(5)  # t = 4 of 4 holders
    dealer = r.pks[0]
    holders = sa.holders_for(r.pks, dealer)
    assert r.recover(dealer, r.reveal(dealer, holders[:r.threshold - 1])) is None
    assert r.recover(dealer, {}) is None
    assert r.recover(dealer, r.reveal(dealer, holders[:r.threshold])) == r.masks[dealer].secret


def test_subset_search_is_capped() -> None:
    # n = 11: t = 8 of 10 holders; with garbage at the first two holders the only good 8-subset
    r = make_round(11)
    dealer = r.pks[0]
    holders = sa.holders_for(r.pks, dealer)
    revealed = r.reveal(dealer, holders)
    for k in range(2):
        r.boxes[dealer][k] = _box(revealed[holders[k]], k + 1, dealer, holders[k])
    # is the last of C(10, 8) = 45, within the cap of 64
    assert r.recover(dealer, revealed) == r.masks[dealer].secret
    r2 = make_round(14)  # t = 10 of 13 holders: C(13, 10) = 286 > 64
    dealer = r2.pks[0]
    holders = sa.holders_for(r2.pks, dealer)
    revealed = r2.reveal(dealer, holders)
    for k in range(3):
        r2.boxes[dealer][k] = _box(revealed[holders[k]], k + 1, dealer, holders[k])
    assert r2.recover(dealer, revealed) is None  # the only good subset is #286, past the cap
    assert r2.recover(dealer, {h: revealed[h] for h in holders[3:]}) == r2.masks[dealer].secret


def test_a_masked_vector_is_unrelated_to_the_update() -> None:
    r = make_round(4, n_params=N_PARAMS)
    pk = r.pks[1]
    r.xs[pk][:] = 0
    y = r.masked(r.pks)[pk]
    assert y.dtype == np.uint32 and y.shape == (N_PARAMS,)
    assert np.count_nonzero(y) >= N_PARAMS - 2
    # uniform mod 2^32: mean near 2^31 (std of the mean ~ 2^32/sqrt(12 n) ~ 3.6e7), high bit ~ half set
    assert abs(float(y.mean()) - 2**31) < 6 * 2**32 / np.sqrt(12 * N_PARAMS)
    assert 0.4 < float((y >> 31).mean()) < 0.6
    # the same update masked in another round shares nothing with this one
    peers = r.publics
    y2 = sa.mask_update(r.xs[pk], pk, r.masks[pk].secret, peers, TASK, ROUND + 1)
    assert np.count_nonzero(y == y2) <= 2


def test_the_pipeline_is_deterministic_under_a_seeded_rng() -> None:
    def run(seed: int) -> tuple[list[bytes], bytes, bytes]:
        r = make_round(5, seed=seed)
        ys = r.masked(r.pks)
        dropped = r.pks[4]
        del ys[dropped]
        secret = r.recover(dropped, r.reveal(dropped, sa.holders_for(r.pks, dropped)))
        total = sa.unmask_sum(ys, {dropped: secret}, r.publics, TASK, ROUND)
        boxes = [b for pk in r.pks for b in r.boxes[pk]]
        return boxes, b"".join(sa.encode_masked(ys[pk]) for pk in sorted(ys)), total.tobytes()

    assert run(3) == run(3)
    assert run(3)[0] != run(4)[0]


def test_holder_key_conversion_from_keypair() -> None:
    kp = KeyPair.generate()
    _, sk64 = bindings.crypto_sign_seed_keypair(bytes(kp.signing_key))
    x_secret = bindings.crypto_sign_ed25519_sk_to_curve25519(sk64)
    assert bindings.crypto_scalarmult_base(x_secret) == bindings.crypto_sign_ed25519_pk_to_curve25519(kp.public)
    assert bytes(kp.signing_key.to_curve25519_private_key().public_key) == sa._holder_x25519_public(kp.public)
    dealer = KeyPair.generate().public
    mk = sa.MaskKeys.generate()
    for purpose in ("mask", "self"):
        k = sa.share_key(mk.secret, kp.public, TASK, ROUND, dealer, purpose)
        assert k == sa.holder_share_key(kp, mk.public, TASK, ROUND, dealer, purpose)
    assert sa.share_key(mk.secret, kp.public, TASK, ROUND, dealer, "mask") != sa.share_key(
        mk.secret, kp.public, TASK, ROUND, dealer, "self")
    assert sa.share_key(mk.secret, kp.public, TASK, ROUND, dealer) != sa.share_key(
        mk.secret, kp.public, TASK, ROUND + 1, dealer)


def test_pairwise_seed_is_symmetric_and_bound_to_its_context() -> None:
    a, b = KeyPair.generate().public, KeyPair.generate().public
    ma, mb = sa.MaskKeys.generate(), sa.MaskKeys.generate()
    s_ab = sa.pairwise_seed(a, ma.secret, b, mb.public, TASK, ROUND)
    assert s_ab == sa.pairwise_seed(b, mb.secret, a, ma.public, TASK, ROUND)
    assert s_ab != sa.pairwise_seed(a, ma.secret, b, mb.public, bytes(32), ROUND)
    assert s_ab != sa.pairwise_seed(a, ma.secret, b, mb.public, TASK, ROUND + 1)


def test_hkdf_matches_the_reference() -> None:
    ikm, info = bytes(range(40)), b"zkpot/v1/secagg/test"
    ref = HKDF(algorithm=hashes.SHA256(), length=80, salt=b"zkpot/v1/secagg", info=info).derive(ikm)
    assert sa.hkdf_sha256(ikm, info, 80) == ref


def test_default_threshold() -> None:
    assert [sa.default_threshold(n) for n in (2, 3, 4, 5, 7, 10)] == [1, 2, 3, 4, 5, 7]
    for n in range(2, 40):
        t = sa.default_threshold(n)
        assert 1 <= t <= n - 1 and 3 * t >= 2 * n - 2
    for bad in (0, 1, "4"):
        with pytest.raises(ValueError):
            sa.default_threshold(bad)


def test_self_masks_protect_a_late_update() -> None:
    # j's masked update reached the network but missed the close; e_j is revealed to remove j's
    # pairwise masks from the sum. With a self mask, y_j still hides x_j; survivors' b_i come back
    # from their "self" shares.
    r = make_round(7, n_params=N_PARAMS)  # t = 5 of 6 holders: the late member need not reveal
    rng = seeded(9)
    seeds = {pk: rng(32) for pk in r.pks}
    commits = {pk: sa.self_seed_commitment(seeds[pk], TASK, ROUND, pk) for pk in r.pks}
    self_boxes = {pk: sa.encrypt_shares(r.masks[pk].secret, sa.holders_for(r.pks, pk), r.threshold, TASK, ROUND,
                                        pk, rng, purpose="self", secret=seeds[pk]) for pk in r.pks}
    ys = {pk: sa.mask_update(r.xs[pk], pk, r.masks[pk].secret, r.publics, TASK, ROUND, self_seed=seeds[pk])
          for pk in r.pks}
    late = r.pks[2]
    late_y = ys.pop(late)
    survivors = sorted(ys)

    def self_seed(i: bytes) -> bytes | None:
        holders = sa.holders_for(r.pks, i)
        revealed = {h: sa.holder_share_key(r.keypairs[h], r.masks[i].public, TASK, ROUND, i, "self")
                    for h in holders if h != late}
        return sa.reconstruct_self_seed(self_boxes[i], revealed, holders, r.threshold, TASK, ROUND, i, commits[i])

    recovered = {i: self_seed(i) for i in survivors}
    assert recovered == {i: seeds[i] for i in survivors}
    e_late = r.recover(late, r.reveal(late, [h for h in sa.holders_for(r.pks, late)]))
    total = sa.unmask_sum(ys, {late: e_late}, r.publics, TASK, ROUND, self_seeds=recovered)
    assert np.array_equal(total, plain_sum(r, survivors))
    # an observer holding late_y and e_late strips every pairwise mask, yet the self mask remains
    stripped = sa.unmask_sum({late: late_y}, {pk: r.masks[pk].secret for pk in survivors}, r.publics, TASK, ROUND)
    assert np.count_nonzero(stripped != r.xs[late]) >= N_PARAMS - 2
    # ... whereas without a self mask it would be exposed (the gap self masks close)
    bare = sa.mask_update(r.xs[late], late, r.masks[late].secret, r.publics, TASK, ROUND)
    exposed = sa.unmask_sum({late: bare}, {pk: r.masks[pk].secret for pk in survivors}, r.publics, TASK, ROUND)
    assert np.array_equal(exposed, r.xs[late])
    # a wrong commitment rejects every subset
    holders = sa.holders_for(r.pks, survivors[0])
    revealed = {h: sa.holder_share_key(r.keypairs[h], r.masks[survivors[0]].public, TASK, ROUND, survivors[0], "self")
                for h in holders}
    assert sa.reconstruct_self_seed(self_boxes[survivors[0]], revealed, holders, r.threshold, TASK, ROUND,
                                    survivors[0], bytes(32)) is None


def test_encode_decode_masked() -> None:
    y = np.array([0, 1, 2**32 - 1, 2**31], dtype=np.uint32)
    data = sa.encode_masked(y)
    assert len(data) == 16 and data[:4] == b"\x00\x00\x00\x00" and data[4:8] == b"\x00\x00\x00\x01"
    assert np.array_equal(sa.decode_masked(data, 4), y)
    with pytest.raises(ValueError, match="expected 20 bytes"):
        sa.decode_masked(data, 5)
    with pytest.raises(ValueError, match="uint32"):
        sa.encode_masked(y.astype(np.int64))


def test_mask_publics_are_checked() -> None:
    assert sa.check_mask_public(sa.MaskKeys.generate().public)
    low_order = [bytes(32), (1).to_bytes(32, "little")]
    for e in low_order:
        with pytest.raises(ValueError, match="low-order"):
            sa.check_mask_public(e)
    non_canonical = ((1 << 255) - 19 + 9).to_bytes(32, "little")  # the base point u=9, plus p
    with pytest.raises(ValueError, match="canonical"):
        sa.check_mask_public(non_canonical)
    with pytest.raises(ValueError, match="expected 32 bytes"):
        sa.check_mask_public(bytes(31))
    with pytest.raises(ValueError, match="expected bytes"):
        sa.check_mask_public("00" * 32)


def test_bad_arguments_raise_value_error() -> None:
    r = make_round(4)
    pk, mk = r.pks[0], r.masks[r.pks[0]]
    holders = sa.holders_for(r.pks, pk)
    x = r.xs[pk]
    cases = [
        lambda: sa.MaskKeys.from_secret(bytes(31)),
        lambda: sa.share_key(mk.secret, holders[0], bytes(31), ROUND, pk),
        lambda: sa.share_key(mk.secret, holders[0], TASK, -1, pk),
        lambda: sa.share_key(mk.secret, holders[0], TASK, 2**64, pk),
        lambda: sa.share_key(mk.secret, holders[0], TASK, True, pk),
        lambda: sa.share_key(mk.secret, holders[0], TASK, ROUND, pk, "other"),
        lambda: sa.holder_share_key(bytes(32), mk.public, TASK, ROUND, pk),
        lambda: sa.encrypt_shares(mk.secret, holders, 0, TASK, ROUND, pk),
        lambda: sa.encrypt_shares(mk.secret, holders, len(holders) + 1, TASK, ROUND, pk),
        lambda: sa.encrypt_shares(mk.secret, [*holders, pk], 2, TASK, ROUND, pk),
        lambda: sa.encrypt_shares(mk.secret, [holders[0], holders[0]], 1, TASK, ROUND, pk),
        lambda: sa.encrypt_shares(mk.secret, [holders[0][:31]], 1, TASK, ROUND, pk),
        lambda: sa.encrypt_shares(mk.secret, holders, 2, TASK, ROUND, pk, purpose="self"),
        lambda: sa.encrypt_shares(mk.secret, holders, 2, TASK, ROUND, pk, secret=bytes(32)),
        lambda: sa.open_share(r.boxes[pk][0][:-1], bytes(32), TASK, ROUND, pk, holders[0]),
        lambda: sa.open_share(r.boxes[pk][0], bytes(16), TASK, ROUND, pk, holders[0]),
        lambda: r.recover(pk, {pk: bytes(32)}),  # a reveal from a non-holder
        lambda: sa.reconstruct_mask_secret(r.boxes[pk][:-1], {}, holders, r.threshold, TASK, ROUND, pk, mk.public),
        lambda: sa.pairwise_seed(pk, mk.secret, pk, mk.public, TASK, ROUND),
        lambda: sa.mask_update(x.astype(np.float64), pk, mk.secret, r.publics, TASK, ROUND),
        lambda: sa.mask_update(x.reshape(8, 8), pk, mk.secret, r.publics, TASK, ROUND),
        lambda: sa.mask_update(x.astype(bool), pk, mk.secret, r.publics, TASK, ROUND),
        lambda: sa.mask_update(list(x), pk, mk.secret, r.publics, TASK, ROUND),
        lambda: sa.mask_update(np.array([2**31]), pk, mk.secret, r.publics, TASK, ROUND),
        lambda: sa.mask_update(x, pk, mk.secret, {**r.publics, pk: r.masks[r.pks[1]].public}, TASK, ROUND),
        lambda: sa.mask_update(x, pk, mk.secret, {**r.publics, r.pks[1]: bytes(32)}, TASK, ROUND),
        lambda: sa.holders_for(r.pks[1:], pk),
        lambda: sa.sum_bound(0),
    ]
    for k, case in enumerate(cases):
        with pytest.raises(ValueError):
            case()
            pytest.fail(f"case {k} did not raise")
    ys = r.masked(r.pks)
    unmask_cases = [
        lambda: sa.unmask_sum({}, {}, r.publics, TASK, ROUND),
        lambda: sa.unmask_sum(ys, {r.pks[0]: mk.secret}, r.publics, TASK, ROUND),  # nobody dropped
        lambda: sa.unmask_sum({**ys, b"\x01" * 32: ys[pk]}, {}, r.publics, TASK, ROUND),
        lambda: sa.unmask_sum({**ys, pk: ys[pk][:-1]}, {}, r.publics, TASK, ROUND),
        lambda: sa.unmask_sum({**ys, pk: ys[pk].astype(np.int64)}, {}, r.publics, TASK, ROUND),
        lambda: sa.unmask_sum({k: v for k, v in ys.items() if k != pk}, {pk: r.masks[r.pks[1]].secret},
                              r.publics, TASK, ROUND),  # a secret that is not the dropped member's
        lambda: sa.unmask_sum(ys, {}, r.publics, TASK, ROUND, self_seeds={pk: bytes(32)}),
    ]
    for k, case in enumerate(unmask_cases):
        with pytest.raises(ValueError):
            case()
            pytest.fail(f"unmask case {k} did not raise")

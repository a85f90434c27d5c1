"""Pairwise-masked secure aggregation (after Bonawitz et al., CCS 2017): the pure cryptography.

Deterministic functions only (no I/O); the ledger's state machine drives the phases:

1. Sharing. Per (task, round) participant i draws an ephemeral X25519 pair (e_i, E_i) and publishes
   E_i plus, for every other genesis participant h (the holders, in a canonical order), a Shamir
   share of e_i encrypted to h. The share key k_ih = HKDF(X25519(e_i, X(pk_h)), context) where X()
   maps h's ed25519 key to X25519, so h needs no extra key; each k_ih encrypts exactly one share
   (XSalsa20-Poly1305 with a nonce derived from the public context), so revealing k_ih later lets
   every validator decrypt *and authenticate* that share without learning anything else.
2. Masking. The accepted set U is fixed on chain with every member's E_j. i submits
   y_i = x_i + sum_{j in U, j > i} PRG(s_ij) - sum_{j in U, j < i} PRG(s_ij)   (mod 2^32),
   s_ij = HKDF(X25519(e_i, E_j), context) = s_ji; "<" orders ed25519 public keys as bytes.
3. Recovery. For each j in U that sent no masked update by the close, holders reveal k_jh; anyone
   decrypts the shares, rebuilds e_j (checked against E_j) and removes the masks j shared with the
   survivors. The chain's total order decides once who dropped, so a *counted* y_j is never unmasked.

Optional self masks (Bonawitz's b_i): a y_i that reached the network but missed the close (slow,
or censored by a leader) is refused, yet e_i is then revealed and that y_i would unmask to x_i for
anyone who saw it. Adding PRG(b_i) with b_i shared the same way ("self" purpose), and revealing
b-shares only for counted members and e-shares only for dropped ones, closes that gap.

Arithmetic is mod 2^32 over int32 fixed-point parameters, so the aggregate is bit-exact on every
validator. unmask_sum returns the true sum iff |sum| < 2^31; mask_update enforces the sufficient
per-member bound |x_i| <= (2^31 - 1) // |U| (see sum_bound).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from nacl import bindings
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from zkpot.crypto import KeyPair

Rng = Callable[[int], bytes]
Purpose = Literal["mask", "self"]

PUBLIC_KEY_LEN = 32  # ed25519 participant keys
TASK_ID_LEN = 32
MASK_SECRET_LEN = 32  # X25519 scalar e_i
MASK_PUBLIC_LEN = 32  # X25519 point E_i
SELF_SEED_LEN = 32
SHARE_KEY_LEN = bindings.crypto_secretbox_KEYBYTES  # 32
PRIME = (1 << 521) - 1  # Mersenne prime > 2^256: any 32-byte secret is a field element
SHARE_LEN = 66  # a field element, big-endian (521 bits -> 66 bytes)
CIPHERTEXT_LEN = SHARE_LEN + bindings.crypto_secretbox_MACBYTES  # 82
MAX_SUBSETS = 64  # reconstruction tries at most this many t-subsets of the valid shares
MAX_ROUND = (1 << 64) - 1

_PREFIX = b"zkpot/v1/secagg/"
_SHARE_LABELS = {"mask": b"zkpot/v1/secagg/share", "self": b"zkpot/v1/secagg/self-share"}
_MASK_LABEL = b"zkpot/v1/secagg/mask"
_SELF_MASK_LABEL = b"zkpot/v1/secagg/self-mask"
_COMMIT_LABEL = b"zkpot/v1/secagg/self-commit"
_NONCE_LABEL = b"zkpot/v1/secagg/nonce"
_X25519_P = (1 << 255) - 19
_PROBE = bytes([9]) + bytes(31)  # any fixed scalar: X25519 of a low-order point is 0 for every scalar


# ---------------------------------------------------------------------------------------------
# validation


def _bytes(name: str, value: object, length: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError(f"{name}: expected bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != length:
        raise ValueError(f"{name}: expected {length} bytes, got {len(value)}")
    return value


def _round(round_: object) -> int:
    if not isinstance(round_, int) or isinstance(round_, bool) or not 0 <= round_ <= MAX_ROUND:
        raise ValueError(f"round: expected an integer in [0, 2^64), got {round_!r}")
    return round_


def _keys(name: str, keys: Sequence[bytes]) -> list[bytes]:
    out = [_bytes(f"{name}[{k}]", key, PUBLIC_KEY_LEN) for k, key in enumerate(keys)]
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: duplicate public keys")
    return out


def check_mask_public(mask_public: object) -> bytes:
    """E as published; ValueError unless it is a canonical X25519 point of large order.

    A non-canonical encoding would never equal the X25519 base product of its secret (so the
    member's dropout could not be recovered) and a low-order point makes every shared secret zero.
    """
    e = _bytes("mask public", mask_public, MASK_PUBLIC_LEN)
    if int.from_bytes(e, "little") >= _X25519_P:
        raise ValueError("mask public: not a canonical X25519 encoding")
    try:
        bindings.crypto_scalarmult(_PROBE, e)
    except NaclRuntimeError:
        raise ValueError("mask public: low-order X25519 point") from None
    return e


def _dh(secret: bytes, public: bytes, what: str) -> bytes:
    try:
        return bindings.crypto_scalarmult(secret, public)
    except NaclRuntimeError:
        raise ValueError(f"{what}: X25519 gave the all-zero secret (low-order point)") from None


# ---------------------------------------------------------------------------------------------
# primitives


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32, salt: bytes = b"zkpot/v1/secagg") -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    if not 0 < length <= 255 * 32:
        raise ValueError(f"hkdf: length {length} out of range")
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def _context(label: bytes, task_id: bytes, round_: int, key_a: bytes, key_b: bytes) -> bytes:
    # fixed-size fields after a NUL-terminated label: unambiguous
    return label + b"\x00" + task_id + round_.to_bytes(8, "big") + key_a + key_b


def prg(seed: bytes, length: int) -> np.ndarray:
    """`length` uint32 words of SHAKE-256(seed), little-endian."""
    if length < 0:
        raise ValueError("prg: negative length")
    return np.frombuffer(hashlib.shake_256(_PREFIX + b"prg\x00" + seed).digest(4 * length), dtype="<u4").astype(
        np.uint32
    )


@dataclass(frozen=True)
class MaskKeys:
    """The ephemeral X25519 pair (e_i, E_i) of one participant for one (task, round)."""

    secret: bytes
    public: bytes

    @classmethod
    def generate(cls, rng: Rng | None = None) -> MaskKeys:
        secret = (rng or os.urandom)(MASK_SECRET_LEN)
        return cls.from_secret(secret)

    @classmethod
    def from_secret(cls, secret: bytes) -> MaskKeys:
        secret = _bytes("mask secret", secret, MASK_SECRET_LEN)
        return cls(secret, bindings.crypto_scalarmult_base(secret))


def default_threshold(n_participants: int) -> int:
    """Shamir threshold t for a task with n genesis participants (each dealer has n - 1 holders).

    t = ceil(2n/3), capped at n - 1, at least 1. Privacy: fewer than t colluding holders learn
    nothing about a dealer's secret, so a coalition needs about two thirds of all participants.
    Liveness: f dropped members leave each dropped dealer with n - f online holders (its other
    holders are the other dropouts), so recovery works for f <= n - t, about a third (n=4: t=3,
    one dropout; n=10: t=7, three).
    """
    if not isinstance(n_participants, int) or n_participants < 2:
        raise ValueError(f"threshold: need at least 2 participants, got {n_participants!r}")
    return max(1, min(n_participants - 1, -(-2 * n_participants // 3)))


def holders_for(participants: Sequence[bytes], dealer_pk: bytes) -> list[bytes]:
    """The canonical holder list of a dealer: every other participant, sorted by key bytes."""
    dealer_pk = _bytes("dealer pk", dealer_pk, PUBLIC_KEY_LEN)
    keys = _keys("participants", participants)
    if dealer_pk not in keys:
        raise ValueError("holders: the dealer is not a participant")
    return sorted(k for k in keys if k != dealer_pk)


def sum_bound(n_members: int) -> int:
    """The largest |x| each of n members may mask so that |sum| < 2^31 (the unmasked sum is exact)."""
    if not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"sum bound: need at least one member, got {n_members!r}")
    return (2**31 - 1) // n_members


# ---------------------------------------------------------------------------------------------
# Shamir over GF(2^521 - 1)


def _split(secret: int, threshold: int, n: int, rng: Rng) -> list[int]:
    coeffs = [secret]
    while len(coeffs) < threshold:
        c = int.from_bytes(rng(SHARE_LEN), "big") & ((1 << 521) - 1)
        if c < PRIME:  # rejection keeps coefficients uniform (only 2^521 - 1 itself is redrawn)
            coeffs.append(c)
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        shares.append(y)
    return shares


def _interpolate_at_zero(points: Sequence[tuple[int, int]]) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


# ---------------------------------------------------------------------------------------------
# phase 1: encrypted shares


def _share_context(purpose: Purpose, task_id: bytes, round_: int, dealer_pk: bytes, holder_pk: bytes) -> bytes:
    if purpose not in _SHARE_LABELS:
        raise ValueError(f"purpose: expected 'mask' or 'self', got {purpose!r}")
    return _context(_SHARE_LABELS[purpose], task_id, round_, dealer_pk, holder_pk)


def _share_nonce(context: bytes) -> bytes:
    # public and unique per (purpose, task, round, dealer, holder); each key encrypts one share anyway
    return hashlib.sha256(_NONCE_LABEL + b"\x00" + context).digest()[: bindings.crypto_secretbox_NONCEBYTES]


def _holder_x25519_public(holder_pk: bytes) -> bytes:
    try:
        return bindings.crypto_sign_ed25519_pk_to_curve25519(holder_pk)
    except (NaclRuntimeError, CryptoError, ValueError):
        raise ValueError("holder pk: not a valid ed25519 public key") from None


def share_key(
    dealer_mask_secret: bytes,
    holder_pk: bytes,
    task_id: bytes,
    round_: int,
    dealer_pk: bytes,
    purpose: Purpose = "mask",
) -> bytes:
    """k_ih, the dealer's side: HKDF(X25519(e_i, X(pk_h)), context)."""
    secret = _bytes("dealer mask secret", dealer_mask_secret, MASK_SECRET_LEN)
    holder_pk = _bytes("holder pk", holder_pk, PUBLIC_KEY_LEN)
    context = _share_context(
        purpose, _bytes("task id", task_id, TASK_ID_LEN), _round(round_),
        _bytes("dealer pk", dealer_pk, PUBLIC_KEY_LEN), holder_pk,
    )
    return hkdf_sha256(_dh(secret, _holder_x25519_public(holder_pk), "share key"), context)


def holder_share_key(
    holder: KeyPair,
    dealer_mask_public: bytes,
    task_id: bytes,
    round_: int,
    dealer_pk: bytes,
    purpose: Purpose = "mask",
) -> bytes:
    """k_ih, the holder's side: HKDF(X25519(X(sk_h), E_i), context); equals share_key()."""
    if not isinstance(holder, KeyPair):
        raise ValueError(f"holder: expected a zkpot.crypto.KeyPair, got {type(holder).__name__}")
    e = check_mask_public(dealer_mask_public)
    # the 64-byte libsodium secret key (seed || pk) is what the conversion takes
    _, sk64 = bindings.crypto_sign_seed_keypair(bytes(holder.signing_key))
    context = _share_context(
        purpose, _bytes("task id", task_id, TASK_ID_LEN), _round(round_),
        _bytes("dealer pk", dealer_pk, PUBLIC_KEY_LEN), holder.public,
    )
    return hkdf_sha256(_dh(bindings.crypto_sign_ed25519_sk_to_curve25519(sk64), e, "holder share key"), context)


def encrypt_shares(
    dealer_mask_secret: bytes,
    holders: Sequence[bytes],
    threshold: int,
    task_id: bytes,
    round_: int,
    dealer_pk: bytes,
    rng: Rng | None = None,
    *,
    purpose: Purpose = "mask",
    secret: bytes | None = None,
) -> list[bytes]:
    """One CIPHERTEXT_LEN box per holder (same order), holding a Shamir share (x = 1..n) of e_i.

    purpose="self" shares `secret` (the self-mask seed b_i) instead, under separate share keys.
    """
    rng = rng or os.urandom
    mask_secret = _bytes("dealer mask secret", dealer_mask_secret, MASK_SECRET_LEN)
    keys = _keys("holders", holders)
    dealer_pk = _bytes("dealer pk", dealer_pk, PUBLIC_KEY_LEN)
    if dealer_pk in keys:
        raise ValueError("holders: the dealer cannot hold its own share")
    if not isinstance(threshold, int) or not 1 <= threshold <= len(keys):
        raise ValueError(f"threshold: expected 1..{len(keys)} (the number of holders), got {threshold!r}")
    if purpose == "mask":
        if secret is not None:
            raise ValueError("secret: only for purpose='self' (purpose='mask' shares the mask secret)")
        shared = mask_secret
    elif secret is None:
        raise ValueError("secret: purpose='self' shares a self seed, none given")
    else:
        shared = _bytes("self seed", secret, SELF_SEED_LEN)
    shares = _split(int.from_bytes(shared, "big"), threshold, len(keys), rng)
    out = []
    for holder_pk, y in zip(keys, shares, strict=True):
        key = share_key(mask_secret, holder_pk, task_id, round_, dealer_pk, purpose)
        nonce = _share_nonce(_share_context(purpose, task_id, round_, dealer_pk, holder_pk))
        out.append(bindings.crypto_secretbox(y.to_bytes(SHARE_LEN, "big"), nonce, key))
    return out


def open_share(
    ciphertext: bytes,
    key: bytes,
    task_id: bytes,
    round_: int,
    dealer_pk: bytes,
    holder_pk: bytes,
    purpose: Purpose = "mask",
) -> int | None:
    """The share in `ciphertext` under a revealed k_ih, or None if the box does not open or holds
    no field element. ValueError only for malformed arguments (a garbage reveal is just None)."""
    box = _bytes("ciphertext", ciphertext, CIPHERTEXT_LEN)
    key = _bytes("share key", key, SHARE_KEY_LEN)
    context = _share_context(
        purpose, _bytes("task id", task_id, TASK_ID_LEN), _round(round_),
        _bytes("dealer pk", dealer_pk, PUBLIC_KEY_LEN), _bytes("holder pk", holder_pk, PUBLIC_KEY_LEN),
    )
    try:
        plain = bindings.crypto_secretbox_open(box, _share_nonce(context), key)
    except CryptoError:
        return None
    y = int.from_bytes(plain, "big")
    return y if y < PRIME else None


def _reconstruct(
    ciphertexts: Sequence[bytes],
    revealed: Mapping[bytes, bytes],
    holders: Sequence[bytes],
    threshold: int,
    task_id: bytes,
    round_: int,
    dealer_pk: bytes,
    purpose: Purpose,
    accept: Callable[[bytes], bool],
) -> bytes | None:
    keys = _keys("holders", holders)
    if len(ciphertexts) != len(keys):
        raise ValueError(f"ciphertexts: expected one per holder ({len(keys)}), got {len(ciphertexts)}")
    ciphertexts = [_bytes(f"ciphertexts[{k}]", c, CIPHERTEXT_LEN) for k, c in enumerate(ciphertexts)]
    if not isinstance(threshold, int) or not 1 <= threshold <= len(keys):
        raise ValueError(f"threshold: expected 1..{len(keys)} (the number of holders), got {threshold!r}")
    unknown = set(revealed) - set(keys)
    if unknown:
        raise ValueError(f"revealed: {len(unknown)} key(s) from non-holders")
    points = []  # candidates in holder order (x ascending): the order is what makes this deterministic
    for x, (holder_pk, box) in enumerate(zip(keys, ciphertexts, strict=True), start=1):
        if holder_pk in revealed:
            y = open_share(box, revealed[holder_pk], task_id, round_, dealer_pk, holder_pk, purpose)
            if y is not None:
                points.append((x, y))
    for subset in itertools.islice(itertools.combinations(points, threshold), MAX_SUBSETS):
        value = _interpolate_at_zero(subset)
        if value < 1 << 256:
            candidate = value.to_bytes(32, "big")
            if accept(candidate):
                return candidate
    return None


def reconstruct_mask_secret(
    ciphertexts: Sequence[bytes],
    revealed: Mapping[bytes, bytes],
    holders: Sequence[bytes],
    threshold: int,
    task_id: bytes,
    round_: int,
    dealer_pk: bytes,
    dealer_mask_public: bytes,
) -> bytes | None:
    """e_j from the dealer's on-chain boxes and the holders' revealed keys {holder pk: k_jh}.

    Shares whose box fails to open are skipped; t-subsets of the rest are tried in lexicographic
    (holder) order, at most MAX_SUBSETS, and the first whose X25519 public key equals E_j wins.
    None when no subset does (fewer than t valid shares, or too many bad ones).
    """
    e = check_mask_public(dealer_mask_public)
    return _reconstruct(
        ciphertexts, revealed, holders, threshold, task_id, round_, dealer_pk, "mask",
        lambda s: bindings.crypto_scalarmult_base(s) == e,
    )


def self_seed_commitment(self_seed: bytes, task_id: bytes, round_: int, dealer_pk: bytes) -> bytes:
    """The public check value of a self-mask seed b_i (published with E_i in phase 1)."""
    seed = _bytes("self seed", self_seed, SELF_SEED_LEN)
    context = _context(
        _COMMIT_LABEL, _bytes("task id", task_id, TASK_ID_LEN), _round(round_),
        _bytes("dealer pk", dealer_pk, PUBLIC_KEY_LEN), b"",
    )
    return hashlib.sha256(context + seed).digest()


def reconstruct_self_seed(
    ciphertexts: Sequence[bytes],
    revealed: Mapping[bytes, bytes],
    holders: Sequence[bytes],
    threshold: int,
    task_id: bytes,
    round_: int,
    dealer_pk: bytes,
    commitment: bytes,
) -> bytes | None:
    """b_i from its "self" shares, like reconstruct_mask_secret, checked against its commitment."""
    commitment = _bytes("self seed commitment", commitment, 32)
    return _reconstruct(
        ciphertexts, revealed, holders, threshold, task_id, round_, dealer_pk, "self",
        lambda s: self_seed_commitment(s, task_id, round_, dealer_pk) == commitment,
    )


# ---------------------------------------------------------------------------------------------
# phase 2: masking; phase 3: unmasking


def pairwise_seed(
    my_pk: bytes, my_mask_secret: bytes, peer_pk: bytes, peer_mask_public: bytes, task_id: bytes, round_: int
) -> bytes:
    """s_ij = HKDF(X25519(e_i, E_j), (task, round, min(pk), max(pk))); symmetric in i and j."""
    my_pk = _bytes("my pk", my_pk, PUBLIC_KEY_LEN)
    peer_pk = _bytes("peer pk", peer_pk, PUBLIC_KEY_LEN)
    if my_pk == peer_pk:
        raise ValueError("pairwise seed: a member has no mask with itself")
    secret = _bytes("mask secret", my_mask_secret, MASK_SECRET_LEN)
    ikm = _dh(secret, check_mask_public(peer_mask_public), "pairwise seed")
    lo, hi = sorted((my_pk, peer_pk))
    return hkdf_sha256(ikm, _context(_MASK_LABEL, _bytes("task id", task_id, TASK_ID_LEN), _round(round_), lo, hi))


def _self_mask(self_seed: bytes, n: int, task_id: bytes, round_: int, pk: bytes) -> np.ndarray:
    seed = _bytes("self seed", self_seed, SELF_SEED_LEN)
    return prg(hkdf_sha256(seed, _context(_SELF_MASK_LABEL, task_id, round_, pk, b"")), n)


def _vector(name: str, x: object) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D numpy array")
    if x.dtype.kind not in "iu" or x.dtype == np.bool_:
        raise ValueError(f"{name}: expected an integer array, got dtype {x.dtype}")
    return x


def mask_update(
    x: np.ndarray,
    my_pk: bytes,
    my_mask_secret: bytes,
    peers: Mapping[bytes, bytes],
    task_id: bytes,
    round_: int,
    self_seed: bytes | None = None,
) -> np.ndarray:
    """y_i (uint32) for the accepted set U = {my_pk} | peers ({pk: E_j}; my own entry is optional
    and must then be my E_i). Refuses |x| > sum_bound(|U|), which guarantees an exact sum."""
    x = _vector("x", x)
    my_pk = _bytes("my pk", my_pk, PUBLIC_KEY_LEN)
    keys = MaskKeys.from_secret(my_mask_secret)
    task_id = _bytes("task id", task_id, TASK_ID_LEN)
    round_ = _round(round_)
    others = {_bytes("peer pk", k, PUBLIC_KEY_LEN): v for k, v in peers.items()}
    if my_pk in others:
        if others.pop(my_pk) != keys.public:
            raise ValueError("peers: my entry is not the public key of my mask secret")
    bound = sum_bound(len(others) + 1)
    if x.size and (int(x.max()) > bound or int(x.min()) < -bound):
        raise ValueError(
            f"x: values must lie in [-{bound}, {bound}] so that the sum of {len(others) + 1} updates fits int32"
        )
    y = x.astype(np.int64).astype(np.uint32)  # two's complement mod 2^32
    for peer_pk, peer_public in sorted(others.items()):
        mask = prg(pairwise_seed(my_pk, keys.secret, peer_pk, peer_public, task_id, round_), x.size)
        y = y + mask if peer_pk > my_pk else y - mask  # uint32 arithmetic wraps mod 2^32
    if self_seed is not None:
        y = y + _self_mask(self_seed, x.size, task_id, round_, my_pk)
    return y.astype(np.uint32)


def unmask_sum(
    masked: Mapping[bytes, np.ndarray],
    dropped_secrets: Mapping[bytes, bytes],
    mask_publics: Mapping[bytes, bytes],
    task_id: bytes,
    round_: int,
    self_seeds: Mapping[bytes, bytes] | None = None,
) -> np.ndarray:
    """sum_{i survived} x_i as int64, from the survivors' y_i, the reconstructed e_j of every
    dropped member, and U = mask_publics ({pk: E}). Exact iff |sum| < 2^31 (the result is the
    int32 two's-complement reading of the sum mod 2^32), which mask_update's bound guarantees for
    honest members. self_seeds: the b_i of every survivor, when the round used self masks."""
    task_id = _bytes("task id", task_id, TASK_ID_LEN)
    round_ = _round(round_)
    members = {_bytes("member pk", k, PUBLIC_KEY_LEN): check_mask_public(v) for k, v in mask_publics.items()}
    survivors = sorted(masked)
    if not survivors:
        raise ValueError("masked: no surviving updates")
    if set(survivors) - set(members):
        raise ValueError("masked: updates from outside the accepted set")
    dropped = set(members) - set(survivors)
    if set(dropped_secrets) != dropped:
        raise ValueError(
            f"dropped secrets: expected exactly the {len(dropped)} dropped member(s), got {len(dropped_secrets)}"
        )
    ys = [_vector(f"masked[{k}]", masked[pk]) for k, pk in enumerate(survivors)]
    n = ys[0].size
    if any(y.size != n for y in ys):
        raise ValueError("masked: updates of different lengths")
    if any(y.dtype != np.uint32 for y in ys):
        raise ValueError("masked: expected uint32 arrays")
    total = np.zeros(n, dtype=np.uint32)
    for y in ys:
        total += y
    for j in sorted(dropped):
        e_j = _bytes("dropped secret", dropped_secrets[j], MASK_SECRET_LEN)
        if bindings.crypto_scalarmult_base(e_j) != members[j]:
            raise ValueError("dropped secrets: a secret does not match its member's mask public key")
        for i in survivors:
            mask = prg(pairwise_seed(j, e_j, i, members[i], task_id, round_), n)
            # y_i carried +mask if j > i, -mask if j < i: undo it
            total = total - mask if j > i else total + mask
    if self_seeds is not None:
        if set(self_seeds) != set(survivors):
            raise ValueError("self seeds: expected exactly one per surviving update")
        for i in survivors:
            total = total - _self_mask(self_seeds[i], n, task_id, round_, i)
    return total.astype(np.uint32).view(np.int32).astype(np.int64)


def encode_masked(y: np.ndarray) -> bytes:
    """A masked update as bytes (big-endian uint32, like the model codec's int32)."""
    y = _vector("masked", y)
    if y.dtype != np.uint32:
        raise ValueError("masked: expected a uint32 array")
    return y.astype(">u4").tobytes()


def decode_masked(data: bytes, n_params: int) -> np.ndarray:
    """encode_masked's inverse; ValueError unless `data` holds exactly n_params words."""
    data = _bytes("masked update", data, 4 * n_params)
    return np.frombuffer(data, dtype=">u4").astype(np.uint32)

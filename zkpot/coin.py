"""The common coin of the asynchronous fallback: a (t, n) threshold BLS signature over BLS12-381.

Each validator i holds a share s_i = p(i+1) of a secret polynomial p of degree t-1; its coin share
for a message m is s_i·H(m) in G2 (H: RFC 9380 hash-to-curve). Any t shares combine, by Lagrange
interpolation at 0, into p(0)·H(m): the *same* signature whichever t shares are used (BLS is
unique), checked with one pairing against the group key p(0)·g1. Nobody learns it before t shares
exist, so with t = 2f+1 the f Byzantine replicas cannot predict it before honest ones release
theirs, nor bias it (they can only withhold). The coin's value is sha256 of that signature.

Library: py-arkworks-bls12381 (Rust arkworks, maintained, wheels for cp311 manylinux): measured
(bench/coin.py) 1.3 ms to sign a share, 2.5 ms to verify one (a pairing check), 1.3 ms to combine
3 of 4. blspy verifies in 1.3 ms but its Python API has no point-times-scalar (Lagrange
combination in the exponent needs it) and its maintainers moved on to chia_rs; py_ecc is pure
Python, 451 ms per verify.

The dealer (zkpot devnet, zkpot keys deal-coin) knows p: a trusted set-up. A distributed key
generation (Pedersen/Gennaro DKG) would deal the same public data with no party knowing p; the
rest of this module would not change.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import py_arkworks_bls12381 as bls

from zkpot import durable
from zkpot.errors import StartupError

DST = b"ZKPOT-COIN-V1_BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_"
# the order of BLS12-381's prime subgroup (Scalar arithmetic is modulo it)
ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
SHARE_FILE_KIND = "zkpot-coin-share"


class CoinError(ValueError):
    """A coin public key set or share that cannot be used."""


@dataclass(frozen=True)
class CoinPublic:
    """What every replica knows: the group key and each validator's share key, in genesis order."""

    group_key: bytes  # p(0)·g1, compressed G1 (48 bytes)
    share_keys: tuple[bytes, ...]  # p(i+1)·g1 for validator i
    threshold: int

    def __post_init__(self) -> None:
        # parsed points, cached (decompression with the subgroup check costs ~0.1 ms each)
        object.__setattr__(self, "_group", _g1(self.group_key, "group key"))
        object.__setattr__(self, "_shares", tuple(_g1(k, f"share key {i}") for i, k in enumerate(self.share_keys)))
        if not 1 <= self.threshold <= len(self.share_keys):
            raise CoinError(f"coin threshold {self.threshold} outside 1..{len(self.share_keys)}")

    def check_consistent(self) -> None:
        """Every share key lies on one polynomial of degree threshold-1 through the group key:
        otherwise different sets of shares would combine into different coins (replicas would
        disagree on the elected chain)."""
        t = self.threshold
        base = list(range(t))
        points = [self._shares[i] for i in base]  # type: ignore[attr-defined]
        for target in [-1, *range(t, len(self.share_keys))]:
            coeffs = _lagrange([i + 1 for i in base], target + 1)
            value = bls.G1Point.multiexp_unchecked(points, coeffs)
            want = self._group if target < 0 else self._shares[target]  # type: ignore[attr-defined]
            if value != want:
                name = "the group key" if target < 0 else f"share key {target}"
                raise CoinError(f"coin keys inconsistent: {name} is not on the dealt polynomial")

    def to_json(self) -> dict:
        return {
            "scheme": "bls12-381-g2-threshold",
            "dealer": "trusted (devnet): whoever dealt knows every share",
            "threshold": self.threshold,
            "group_key": self.group_key.hex(),
            "share_keys": [k.hex() for k in self.share_keys],
        }

    @classmethod
    def from_json(cls, data: object) -> CoinPublic:
        if not isinstance(data, dict):
            raise CoinError(f"coin section: an object with scheme, threshold, group_key, share_keys; got "
                            f"{type(data).__name__}")
        try:
            if data.get("scheme") != "bls12-381-g2-threshold":
                raise CoinError(f"unknown coin scheme {data.get('scheme')!r}")
            if not isinstance(data["threshold"], int) or isinstance(data["threshold"], bool):
                raise CoinError(f"coin threshold {data['threshold']!r} is not a whole number")
            if not isinstance(data["share_keys"], list):
                raise CoinError("coin share_keys is not a list")
            public = cls(bytes.fromhex(data["group_key"]), tuple(bytes.fromhex(k) for k in data["share_keys"]),
                         data["threshold"])
        except KeyError as exc:
            raise CoinError(f"coin section: {exc} is missing") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, CoinError):
                raise
            raise CoinError(f"coin section: {exc}") from exc
        public.check_consistent()
        return public


def _g1(raw: bytes, what: str) -> bls.G1Point:
    if len(raw) != 48:
        raise CoinError(f"coin {what}: {len(raw)} bytes, a compressed G1 point has 48")
    try:
        point = bls.G1Point.from_compressed_bytes(raw)  # checks curve and subgroup
    except Exception as exc:  # the binding raises plain exceptions
        raise CoinError(f"coin {what}: not a point of G1 ({exc})") from exc
    if point == bls.G1Point.identity():  # a zero key makes every share (and the coin) fixed
        raise CoinError(f"coin {what}: the point at infinity is not a key")
    return point


def _scalar(value: int) -> bls.Scalar:
    return bls.Scalar.from_be_bytes_mod_order((value % ORDER).to_bytes(32, "big"))


def _lagrange(xs: list[int], at: int) -> list[bls.Scalar]:
    """Lagrange coefficients of the points xs, evaluated at `at`, modulo the group order."""
    out = []
    for i in xs:
        num, den = 1, 1
        for j in xs:
            if j != i:
                num = num * (at - j) % ORDER
                den = den * (i - j) % ORDER
        out.append(_scalar(num * pow(den, -1, ORDER)))
    return out


def deal(n: int, threshold: int, seed: bytes | None = None) -> tuple[CoinPublic, list[bytes]]:
    """A trusted dealing: the public keys and each validator's secret share (32 bytes). `seed`
    makes it reproducible (tests only: whoever knows the seed knows every share)."""
    if not 1 <= threshold <= n:
        raise CoinError(f"coin threshold {threshold} outside 1..{n}")

    def rand(i: int) -> int:
        if seed is None:
            raw = secrets.token_bytes(48)
        else:
            raw = hashlib.sha512(b"zkpot-coin-deal" + seed + i.to_bytes(4, "big")).digest()[:48]
        return int.from_bytes(raw, "big") % ORDER  # 384 bits reduced modulo a 255-bit order: no visible bias

    coeffs = [rand(i) for i in range(threshold)]

    def p(x: int) -> int:
        return sum(c * pow(x, k, ORDER) for k, c in enumerate(coeffs)) % ORDER

    g1 = bls.G1Point()
    shares = [_scalar(p(i + 1)) for i in range(n)]
    public = CoinPublic(
        group_key=(g1 * _scalar(p(0))).to_compressed_bytes(),
        share_keys=tuple((g1 * s).to_compressed_bytes() for s in shares),
        threshold=threshold,
    )
    return public, [s.to_be_bytes() for s in shares]


def coin_message(chain_id: str, view: int) -> bytes:
    """The signed message of the coin of fallback `view` of chain `chain_id` (the chain is the epoch)."""
    cid = chain_id.encode()
    return b"zkpot.v1.coin" + len(cid).to_bytes(2, "big") + cid + view.to_bytes(8, "big")


def _secret(secret: bytes) -> bls.Scalar:
    if not isinstance(secret, bytes | bytearray) or len(secret) != 32:
        raise CoinError("a coin share secret is 32 bytes")
    if not 0 < int.from_bytes(secret, "big") < ORDER:
        raise CoinError("a coin share secret is a nonzero number below the group order")
    return bls.Scalar.from_be_bytes(bytes(secret))


def sign_share(secret: bytes, msg: bytes) -> bytes:
    """This validator's coin share of `msg`: compressed G2 (96 bytes)."""
    return (bls.G2Point.hash_to_curve(msg, DST) * _secret(secret)).to_compressed_bytes()


def _g2(raw: bytes) -> bls.G2Point | None:
    if not isinstance(raw, bytes | bytearray) or len(raw) != 96:
        return None
    try:
        return bls.G2Point.from_compressed_bytes(bytes(raw))  # curve and subgroup checked
    except Exception:  # junk bytes: the binding raises plain exceptions
        return None


def _pairs_equal(pk: bls.G1Point, msg: bytes, sig: bls.G2Point) -> bool:
    # e(g1, sig) == e(pk, H(m))  <=>  e(-g1, sig)·e(pk, H(m)) == 1 (one final exponentiation)
    return bool(bls.GT.pairing_check([-bls.G1Point(), pk], [sig, bls.G2Point.hash_to_curve(msg, DST)]))


def verify_share(public: CoinPublic, index: int, msg: bytes, share: bytes) -> bool:
    """Whether `share` is validator `index`'s coin share of `msg` (False for any junk)."""
    point = _g2(share)
    if point is None or not 0 <= index < len(public.share_keys) or point == bls.G2Point.identity():
        return False
    return _pairs_equal(public._shares[index], msg, point)  # type: ignore[attr-defined]


def combine(public: CoinPublic, shares: dict[int, bytes]) -> bytes:
    """The coin from `threshold` verified shares {validator index: share} (the lowest indices are
    used; any set gives the same signature)."""
    chosen = sorted(shares)[: public.threshold]
    if len(chosen) < public.threshold:
        raise CoinError(f"{len(chosen)} coin shares, {public.threshold} needed")
    points = []
    for i in chosen:
        point = _g2(shares[i])
        if point is None:
            raise CoinError(f"coin share of validator {i} is not a point of G2")
        points.append(point)
    coeffs = _lagrange([i + 1 for i in chosen], 0)
    return bls.G2Point.multiexp_unchecked(points, coeffs).to_compressed_bytes()


def verify_coin(public: CoinPublic, msg: bytes, signature: bytes) -> bool:
    point = _g2(signature)
    if point is None:
        return False
    return _pairs_equal(public._group, msg, point)  # type: ignore[attr-defined]


def coin_value(signature: bytes) -> int:
    """The coin as a 256-bit number (uniform: a hash of the unique threshold signature)."""
    return int.from_bytes(hashlib.sha256(b"zkpot-coin" + signature).digest(), "big")


def share_matches(public: CoinPublic, index: int, secret: bytes) -> bool:
    """Whether `secret` is the share whose key genesis lists for validator `index`."""
    try:
        key = (bls.G1Point() * _secret(secret)).to_compressed_bytes()
    except CoinError:
        return False
    return 0 <= index < len(public.share_keys) and key == public.share_keys[index]


def save_share(path: Path, secret: bytes, index: int) -> None:
    body = json.dumps({"kind": SHARE_FILE_KIND, "index": index, "secret": secret.hex()}) + "\n"
    durable.write_atomic(Path(path), body.encode(), mode=0o600)


def load_share(path: Path) -> bytes:
    """A validator's secret coin share from its file (a StartupError naming the file otherwise)."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("kind") != SHARE_FILE_KIND:
            raise ValueError(f"not a coin share file (kind {data.get('kind')!r})")
        secret = bytes.fromhex(data["secret"])
        _secret(secret)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StartupError(f"coin share {path}: cannot use it ({exc})") from exc
    return secret

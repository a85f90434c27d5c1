"""BN254 (alt_bn128) G1 arithmetic in pure Python: enough to add and scale KZG commitments.

Curve: y^2 = x^3 + 3 over F_p, p = 21888242871839275222246405745257275088696311157297823662689037894645226208583
(the base field; not to be confused with the scalar field R below, the field of ezkl's circuits).
G1 has prime order R and cofactor 1, so every affine point on the curve is in the group.

Points are affine tuples (x, y) of ints in [0, p), or None for the identity. Scalar multiplication
runs in Jacobian coordinates (one inversion per call). Encoding (`from_bytes` / `to_bytes`) is the
one of ezkl's proof bytes (its EVM transcript), checked against real proofs in
tests/test_commitment.py: 64 bytes, x || y, each 32-byte big-endian, plain (not Montgomery) form;
(0, 0) stands for the identity, as in the EVM precompiles.
"""

from __future__ import annotations

P = 21888242871839275222246405745257275088696311157297823662689037894645226208583
R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
B = 3
G1 = (1, 2)  # the standard generator
POINT_BYTES = 64

Point = tuple[int, int] | None
_Jac = tuple[int, int, int]  # (X, Y, Z): x = X/Z^2, y = Y/Z^3; Z = 0 is the identity


class PointError(ValueError):
    """Bytes that are not a BN254 G1 point."""


def is_on_curve(pt: Point) -> bool:
    if pt is None:
        return True
    x, y = pt
    return 0 <= x < P and 0 <= y < P and (y * y - x * x * x - B) % P == 0


def neg(pt: Point) -> Point:
    if pt is None:
        return None
    x, y = pt
    return (x, (-y) % P)


def add(a: Point, b: Point) -> Point:
    """a + b (affine; one inversion)."""
    if a is None:
        return b
    if b is None:
        return a
    x1, y1 = a
    x2, y2 = b
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None  # a == -b (covers doubling a point with y == 0, which BN254 G1 has none of)
        return double(a)
    lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return (x3, (lam * (x1 - x3) - y1) % P)


def double(a: Point) -> Point:
    if a is None or a[1] == 0:
        return None
    x, y = a
    lam = 3 * x * x * pow(2 * y, -1, P) % P
    x3 = (lam * lam - 2 * x) % P
    return (x3, (lam * (x - x3) - y) % P)


def _jac_double(p: _Jac) -> _Jac:
    x, y, z = p
    if z == 0 or y == 0:
        return (1, 1, 0)
    yy = y * y % P
    s = 4 * x * yy % P
    m = 3 * x * x % P  # a = 0
    x3 = (m * m - 2 * s) % P
    return (x3, (m * (s - x3) - 8 * yy * yy) % P, 2 * y * z % P)


def _jac_add_affine(p: _Jac, q: tuple[int, int]) -> _Jac:
    """Jacobian p + affine q (mixed addition)."""
    x1, y1, z1 = p
    if z1 == 0:
        return (q[0], q[1], 1)
    zz = z1 * z1 % P
    u2 = q[0] * zz % P
    s2 = q[1] * zz * z1 % P
    h = (u2 - x1) % P
    r = (s2 - y1) % P
    if h == 0:
        return _jac_double(p) if r == 0 else (1, 1, 0)
    hh = h * h % P
    hhh = h * hh % P
    v = x1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    return (x3, (r * (v - x3) - y1 * hhh) % P, z1 * h % P)


def _to_affine(p: _Jac) -> Point:
    x, y, z = p
    if z == 0:
        return None
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return (x * zi2 % P, y * zi2 * zi % P)


def mul(pt: Point, k: int) -> Point:
    """k * pt for any integer k (negative: -|k| * pt); k is reduced mod the group order R."""
    k %= R
    if pt is None or k == 0:
        return None
    acc: _Jac = (1, 1, 0)
    for bit in bin(k)[2:]:
        acc = _jac_double(acc)
        if bit == "1":
            acc = _jac_add_affine(acc, pt)
    return _to_affine(acc)


def linear_combination(points: list[Point], scalars: list[int]) -> Point:
    """sum_i scalars[i] * points[i]."""
    if len(points) != len(scalars):
        raise ValueError("one scalar per point")
    acc: Point = None
    for pt, k in zip(points, scalars, strict=True):
        acc = add(acc, mul(pt, k))
    return acc


def from_bytes(data: bytes) -> Point:
    """Parse x || y (32-byte big-endian each); all zeros is the identity. PointError if off the curve."""
    if len(data) != POINT_BYTES:
        raise PointError(f"a G1 point is {POINT_BYTES} bytes, got {len(data)}")
    x = int.from_bytes(data[:32], "big")
    y = int.from_bytes(data[32:], "big")
    if x == 0 and y == 0:
        return None
    if not is_on_curve((x, y)):
        raise PointError("not a point of BN254 G1 (coordinates out of range or off the curve)")
    return (x, y)


def to_bytes(pt: Point) -> bytes:
    if pt is None:
        return bytes(POINT_BYTES)
    return pt[0].to_bytes(32, "big") + pt[1].to_bytes(32, "big")


def points_from_bytes(data: bytes) -> list[Point]:
    """A concatenation of 64-byte points (a model commitment of n_commitments points)."""
    if len(data) % POINT_BYTES:
        raise PointError(f"length {len(data)} is not a multiple of {POINT_BYTES}")
    return [from_bytes(data[i : i + POINT_BYTES]) for i in range(0, len(data), POINT_BYTES)]


def points_to_bytes(points: list[Point]) -> bytes:
    return b"".join(to_bytes(pt) for pt in points)


def from_compressed_le(data: bytes) -> Point:
    """halo2curves' compressed G1 (how ezkl writes processed_params.polycommit in a witness, as hex):
    x little-endian in 32 bytes, bit 7 of the last byte = y is odd, bit 6 = the identity."""
    if len(data) != 32:
        raise PointError(f"a compressed G1 point is 32 bytes, got {len(data)}")
    raw = bytearray(data)
    odd, infinity = raw[31] >> 7, (raw[31] >> 6) & 1
    raw[31] &= 0x3F
    x = int.from_bytes(raw, "little")
    if infinity:
        if x or odd:
            raise PointError("malformed compressed identity")
        return None
    if x >= P:
        raise PointError("x out of range")
    rhs = (x * x * x + B) % P
    y = pow(rhs, (P + 1) // 4, P)  # P = 3 (mod 4)
    if y * y % P != rhs:
        raise PointError("x is not the abscissa of a BN254 G1 point")
    if y & 1 != odd:
        y = P - y
    return (x, y)


def _jac_add(p: _Jac, q: _Jac) -> _Jac:
    """Jacobian p + q."""
    x1, y1, z1 = p
    x2, y2, z2 = q
    if z1 == 0:
        return q
    if z2 == 0:
        return p
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    if h == 0:
        return _jac_double(p) if r == 0 else (1, 1, 0)
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    return (x3, (r * (v - x3) - s1 * hhh) % P, z1 * z2 * h % P)


def msm(points: list[Point], scalars: list[int]) -> Point:
    """sum_i scalars[i] * points[i] by bucketed windows (Pippenger); fast for small signed scalars.

    Each scalar is taken mod R as its representative nearest zero, and a negative one scales the
    negated point, so a vector of small integers (a model) costs a few windows of additions.
    """
    if len(points) != len(scalars):
        raise ValueError("one scalar per point")
    half = R // 2
    pairs: list[tuple[tuple[int, int], int]] = []
    for pt, k in zip(points, scalars, strict=True):
        k %= R
        if k > half:
            k, pt = R - k, neg(pt)
        if k and pt is not None:
            pairs.append((pt, k))
    if not pairs:
        return None
    bits = max(k for _, k in pairs).bit_length()
    c = 4 if len(pairs) < 32 else 6 if len(pairs) < 512 else 7
    mask = (1 << c) - 1
    acc: _Jac = (1, 1, 0)
    for shift in range(((bits + c - 1) // c - 1) * c, -1, -c):
        for _ in range(c):
            acc = _jac_double(acc)
        buckets: list[_Jac | None] = [None] * (mask + 1)
        for pt, k in pairs:
            digit = (k >> shift) & mask
            if digit:
                bucket = buckets[digit]
                buckets[digit] = (pt[0], pt[1], 1) if bucket is None else _jac_add_affine(bucket, pt)
        running: _Jac = (1, 1, 0)
        window: _Jac = (1, 1, 0)
        for digit in range(mask, 0, -1):  # sum_d d * bucket_d as a running sum of suffix sums
            bucket = buckets[digit]
            if bucket is not None:
                running = _jac_add(running, bucket)
            window = _jac_add(window, running)
        acc = _jac_add(acc, window)
    return _to_affine(acc)

"""Model parameters on the wire and on chain: named tensors in fixed point.

Validators must aggregate bit-identically on any machine, so parameters travel and are averaged
as int32 fixed point (FRAC_BITS fractional bits) with integer arithmetic only; floats appear
only at the edges (training, export).
"""

from __future__ import annotations

import struct

import numpy as np

from zkpot.codec import content_id

MAGIC = b"ZKPM\x01"
FRAC_BITS = 16
MAX_MODEL_BYTES = 16 * 1024 * 1024
_MAX_TENSORS = 256
_MAX_NDIM = 4

Tensors = list[tuple[str, np.ndarray]]


class ModelFormatError(ValueError):
    pass


def to_fixed(values: np.ndarray) -> np.ndarray:
    scaled = np.rint(np.asarray(values, dtype=np.float64) * (1 << FRAC_BITS))
    return np.clip(scaled, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)


def quantized(tensors: list[tuple[str, np.ndarray]], scale: int) -> bytes:
    """The model as a proof commits it: every fixed-point value rounded to `scale` fractional bits,
    half away from zero (ezkl's rule, zkpot.zkp.circuit.quantize), as canonical big-endian int64
    bytes. Two models with equal bytes here have the same commitment: what free-riding compares.
    Integer arithmetic equals the circuit's float path for |w| < 256 (float32 holds v / 2**16
    exactly below 2**24), far beyond any task's weight bound."""
    if not 0 <= scale <= FRAC_BITS:
        raise ValueError(f"scale must be 0..{FRAC_BITS}")
    shift = FRAC_BITS - scale
    half = (1 << shift) >> 1
    flat = np.concatenate([np.asarray(arr, dtype=np.int64).ravel() for _, arr in tensors])
    q = np.sign(flat) * ((np.abs(flat) + half) >> shift)
    return q.astype(">i8").tobytes()


def from_fixed(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values, dtype=np.float64) / (1 << FRAC_BITS)).astype(np.float32)


def encode_fixed(tensors: list[tuple[str, np.ndarray]]) -> bytes:
    """Encode int32 fixed-point tensors."""
    out = bytearray(MAGIC)
    out += struct.pack(">I", len(tensors))
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype=">i4")
        raw_name = name.encode()
        out += struct.pack(">H", len(raw_name)) + raw_name
        out += struct.pack(">B", arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
        out += arr.tobytes()
    return bytes(out)


def encode(tensors: Tensors) -> bytes:
    """Encode float tensors (rounded to fixed point)."""
    return encode_fixed([(name, to_fixed(arr)) for name, arr in tensors])


def decode_fixed(data: bytes) -> list[tuple[str, np.ndarray]]:
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFormatError(f"model of {len(data)} bytes exceeds {MAX_MODEL_BYTES}")
    if not data.startswith(MAGIC):
        raise ModelFormatError("not a zkpot model (bad magic)")
    pos = len(MAGIC)

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ModelFormatError("truncated model")
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    (count,) = struct.unpack(">I", take(4))
    if count > _MAX_TENSORS:
        raise ModelFormatError(f"{count} tensors exceeds {_MAX_TENSORS}")
    tensors = []
    for _ in range(count):
        (name_len,) = struct.unpack(">H", take(2))
        name = take(name_len).decode("utf-8", errors="strict")
        (ndim,) = struct.unpack(">B", take(1))
        if ndim > _MAX_NDIM:
            raise ModelFormatError(f"tensor {name!r} has {ndim} dimensions")
        shape = tuple(struct.unpack(">I", take(4))[0] for _ in range(ndim))
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        arr = np.frombuffer(take(4 * size), dtype=">i4").astype(np.int32).reshape(shape)
        tensors.append((name, arr))
    if pos != len(data):
        raise ModelFormatError("trailing bytes after model")
    return tensors


def decode(data: bytes) -> Tensors:
    return [(name, from_fixed(arr)) for name, arr in decode_fixed(data)]


def model_cid(data: bytes) -> str:
    return content_id(data)


def same_layout(a: list[tuple[str, np.ndarray]], b: list[tuple[str, np.ndarray]]) -> bool:
    return [(n, x.shape) for n, x in a] == [(n, x.shape) for n, x in b]


def fedavg_fixed(models: list[bytes], weights: list[int] | None = None) -> bytes:
    """Weighted integer mean of fixed-point models (floor division: bit-exact everywhere)."""
    if not models:
        raise ValueError("nothing to aggregate")
    decoded = [decode_fixed(m) for m in models]
    weights = weights or [1] * len(models)
    if len(weights) != len(models) or any(w <= 0 for w in weights):
        raise ValueError("weights must be positive, one per model")
    for other in decoded[1:]:
        if not same_layout(decoded[0], other):
            raise ModelFormatError("models to aggregate have different layouts")
    total = sum(weights)
    out = []
    for i, (name, _) in enumerate(decoded[0]):
        acc = sum(np.asarray(d[i][1], dtype=np.int64) * w for d, w in zip(decoded, weights, strict=True))
        out.append((name, np.floor_divide(acc, total).astype(np.int32)))
    return encode_fixed(out)

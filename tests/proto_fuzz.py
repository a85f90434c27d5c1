"""Hypothesis strategies for hostile protobuf input: random bytes, byte-level and field-level mutants.

`request_bytes(seeds)` draws raw request bodies (sent with identity serializers, so the server
parses them): pure random bytes, byte-level mutations of a valid message's encoding (bit flips,
truncation, insertion, splices) and field-level mutations (any field, at any depth, set to an
edge-case value of its type, cleared, or a repeated field grown or emptied).
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import Message
from hypothesis import strategies as st

INT_EDGES = {
    "u32": [0, 1, 2, 255, 2**31 - 1, 2**32 - 1],
    "u64": [0, 1, 2, 2**32, 2**63 - 1, 2**64 - 1],
    "i32": [0, 1, -1, -(2**31), 2**31 - 1],
    "i64": [0, 1, -1, -(2**63), 2**63 - 1],
}
_INT_KIND = {
    F.TYPE_UINT32: "u32", F.TYPE_FIXED32: "u32",
    F.TYPE_UINT64: "u64", F.TYPE_FIXED64: "u64",
    F.TYPE_INT32: "i32", F.TYPE_SINT32: "i32", F.TYPE_SFIXED32: "i32",
    F.TYPE_INT64: "i64", F.TYPE_SINT64: "i64", F.TYPE_SFIXED64: "i64",
}  # fmt: skip
_RANGES = {"u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1), "i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1)}
BYTE_LENGTHS = [0, 1, 16, 31, 32, 33, 63, 64, 65, 300]


def _scalar(data: st.DataObject, fd: F) -> object:
    if fd.type in _INT_KIND:
        kind = _INT_KIND[fd.type]
        lo, hi = _RANGES[kind]
        return data.draw(st.one_of(st.sampled_from(INT_EDGES[kind]), st.integers(lo, hi)))
    if fd.type == F.TYPE_BOOL:
        return data.draw(st.booleans())
    if fd.type == F.TYPE_ENUM:
        return data.draw(st.integers(-5, 64))  # proto3 enums are open: unknown values are legal on the wire
    if fd.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return data.draw(st.floats(allow_nan=True, allow_infinity=True, width=32 if fd.type == F.TYPE_FLOAT else 64))
    if fd.type == F.TYPE_STRING:
        return data.draw(st.one_of(st.text(max_size=40), st.sampled_from(["", "bafy", "../../etc/passwd", "x" * 300])))
    if fd.type == F.TYPE_BYTES:
        n = data.draw(st.sampled_from(BYTE_LENGTHS))
        return data.draw(st.binary(min_size=n, max_size=n))
    raise AssertionError(f"unhandled field type {fd.type}")


def _fields(msg: Message) -> list[tuple[Message, F]]:
    """Every (message, field) pair reachable through set sub-messages (the message's own fields included)."""
    out: list[tuple[Message, F]] = [(msg, fd) for fd in msg.DESCRIPTOR.fields]
    for fd, value in msg.ListFields():
        if fd.type != F.TYPE_MESSAGE:
            continue
        items = value if fd.is_repeated else [value]
        for sub in list(items)[:4]:
            out.extend(_fields(sub))
    return out


def mutate_fields(data: st.DataObject, seed: Message, rounds: int = 3) -> Message:
    msg = type(seed)()
    msg.CopyFrom(seed)
    for _ in range(data.draw(st.integers(1, rounds))):
        fields = _fields(msg)
        if not fields:  # an empty message type: only unknown fields could be added
            break
        owner, fd = data.draw(st.sampled_from(fields))
        repeated = fd.is_repeated
        action = data.draw(st.sampled_from(["set", "clear", "grow"] if repeated else ["set", "clear"]))
        if action == "clear":
            owner.ClearField(fd.name)
        elif fd.type == F.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                owner.ClearField(fd.name)
            elif repeated:
                field = getattr(owner, fd.name)
                if len(field) and data.draw(st.booleans()):
                    field.add().CopyFrom(field[data.draw(st.integers(0, len(field) - 1))])  # duplicate an entry
                else:
                    field.add()
            else:
                getattr(owner, fd.name).SetInParent()
        elif repeated:
            getattr(owner, fd.name).extend(_scalar(data, fd) for _ in range(data.draw(st.integers(1, 3))))
        else:
            setattr(owner, fd.name, _scalar(data, fd))
    return msg


def mutate_bytes(data: st.DataObject, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
        if op == "flip" and b:
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "truncate" and b:
            del b[data.draw(st.integers(0, len(b) - 1)):]
        elif op == "insert":
            i = data.draw(st.integers(0, len(b)))
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and b:
            i = data.draw(st.integers(0, len(b) - 1))
            del b[i : i + data.draw(st.integers(1, 8))]
        elif op == "splice" and b:  # repeat a slice: duplicated fields, nested length prefixes
            i = data.draw(st.integers(0, len(b) - 1))
            j = data.draw(st.integers(i, min(len(b), i + 64)))
            b[i:i] = b[i:j]
    return bytes(b)


def request_bytes(data: st.DataObject, seeds: list[Message]) -> tuple[str, bytes]:
    """(kind, raw request body): random bytes, a byte-mutated seed or a field-mutated seed."""
    kinds = ["random", "bytes", "fields"] if seeds else ["random"]
    kind = data.draw(st.sampled_from(kinds))
    if kind == "random":
        return kind, data.draw(st.binary(max_size=512))
    seed = data.draw(st.sampled_from(seeds))
    if kind == "bytes":
        return kind, mutate_bytes(data, seed.SerializeToString())
    return kind, mutate_fields(data, seed).SerializeToString()

"""Canonical bytes, hashes and content ids: the one place that defines what gets hashed.

Protobuf's own serialization is not canonical across implementations, so everything that is
hashed or signed goes through `canonical_bytes`: fields in field-number order, each as
(number, kind, length, value), maps sorted by key, default scalars omitted (proto3 presence).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Iterable

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# value kinds: 0 int, 1 bytes/string, 2 message, 3 list, 4 map, 5 float


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 dropped FieldDescriptor.label; older releases lack is_repeated
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


# Each value kind as (kind byte, payload). One function per field type, picked once per field:
# this encoder is on every hot path (tx ids, block hashes), so no per-call descriptor walks.
def _enc_bytes(value: object) -> bytes:
    raw = bytes(value)  # type: ignore[call-overload]
    return b"\x01" + _U32.pack(len(raw)) + raw


def _enc_str(value: object) -> bytes:
    raw = str(value).encode("utf-8")
    return b"\x01" + _U32.pack(len(raw)) + raw


def _enc_msg(value: object) -> bytes:
    raw = canonical_bytes(value)  # type: ignore[arg-type]
    return b"\x02" + _U32.pack(len(raw)) + raw


def _enc_float(value: object) -> bytes:
    return b"\x05" + struct.pack(">d", float(value))  # type: ignore[arg-type]


def _enc_int(value: object) -> bytes:
    # every integer kind (u64, i64, enums, bools) fits 9 signed big-endian bytes
    return b"\x00" + int(value).to_bytes(9, "big", signed=True)  # type: ignore[call-overload]


def _value_encoder(field: FieldDescriptor) -> Callable[[object], bytes]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return _enc_str
    if t == FieldDescriptor.TYPE_BYTES:
        return _enc_bytes
    if t == FieldDescriptor.TYPE_MESSAGE:
        return _enc_msg
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _enc_float
    return _enc_int


def _field_encoder(field: FieldDescriptor) -> Callable[[object], bytes]:
    """value of a present field -> its bytes in the canonical encoding (b"" if it is absent)."""
    head = _U32.pack(field.number)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        enc_k = _value_encoder(field.message_type.fields_by_name["key"])
        enc_v = _value_encoder(field.message_type.fields_by_name["value"])

        def enc_map(mapping: object) -> bytes:
            body = b"".join(enc_k(k) + enc_v(mapping[k]) for k in sorted(mapping))  # type: ignore[attr-defined]
            return head + b"\x04" + _U32.pack(len(body)) + body

        return enc_map
    one = _value_encoder(field)
    if _is_repeated(field):

        def enc_list(values: object) -> bytes:
            body = _U32.pack(len(values)) + b"".join(map(one, values))  # type: ignore[arg-type, call-overload]
            return head + b"\x03" + _U32.pack(len(body)) + body

        return enc_list
    if field.message_type is None and field.containing_oneof is None:

        def enc_implicit(value: object) -> bytes:
            # proto3 implicit presence: a default value is absent (ListFields may still list a
            # float -0.0, which the encoding has always treated as absent)
            return head + one(value) if value else b""

        return enc_implicit
    return lambda value: head + one(value)


_ENCODERS: dict[FieldDescriptor, Callable[[object], bytes]] = {}


def canonical_bytes(msg: Message, omit: str = "") -> bytes:
    """Deterministic encoding of a protobuf message, independent of wire serialization: its
    present fields (ListFields: field-number order, proto3 defaults left out, oneof members and
    sub-messages by presence), each as field number + (kind, length, value). `omit`: a top-level
    field left out (the signature of a signed message) without copying the message."""
    out = []
    for field, value in msg.ListFields():
        if field.name == omit:
            continue
        enc = _ENCODERS.get(field)
        if enc is None:
            enc = _ENCODERS[field] = _field_encoder(field)
        out.append(enc(value))
    return b"".join(out)


def unknown_fields(msg: Message, path: str = "") -> list[str]:
    """Paths of the (sub)messages that carry fields this schema does not know.

    Ids and signatures cover `canonical_bytes`, which skips unknown fields; a message stored with
    extra wire bytes would keep a valid id and signature while its stored bytes differ. Signed
    messages are therefore refused when this list is not empty (no wire malleability)."""
    found = [path or msg.DESCRIPTOR.name] if len(UnknownFieldSet(msg)) else []
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type.GetOptions().map_entry:
            val_f = field.message_type.fields_by_name["value"]
            if val_f.message_type is not None:
                for k in sorted(value):
                    found += unknown_fields(value[k], f"{name}[{k!r}]")
        elif _is_repeated(field):
            for i, item in enumerate(value):
                found += unknown_fields(item, f"{name}[{i}]")
        else:
            found += unknown_fields(value, name)
    return found


def digest(domain: str, msg: Message, omit: str = "") -> bytes:
    """Domain-separated SHA-256 of a message's canonical bytes (less the top-level field `omit`)."""
    return sha256(b"zkpot/v1/" + domain.encode() + b"\x00" + canonical_bytes(msg, omit))


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """Binary SHA-256 merkle root (leaf/node domain-separated; odd node promoted)."""
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    if not level:
        return sha256(b"")
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# CIDv1, raw codec (0x55), sha2-256 multihash (0x12, 32 bytes), multibase base32 lower ("b").
# The same bytes added to IPFS with raw leaves yield the same id.
_CID_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])


def content_id(data: bytes) -> str:
    raw = _CID_PREFIX + sha256(data)
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def cid_digest(cid: str) -> bytes:
    """The sha2-256 digest inside a content id (ValueError if it is not one of ours)."""
    if not cid.startswith("b"):
        raise ValueError(f"unsupported multibase in content id {cid!r}")
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except Exception as exc:  # binascii.Error
        raise ValueError(f"malformed content id {cid!r}") from exc
    if len(raw) != 36 or raw[:4] != _CID_PREFIX:
        raise ValueError(f"content id {cid!r} is not CIDv1 raw sha2-256")
    return raw[4:]


def u64_key(n: int) -> bytes:
    """Big-endian fixed width, so RocksDB iterates heights in order."""
    return _U64.pack(n)

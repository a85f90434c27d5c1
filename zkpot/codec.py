"""Canonical bytes, hashes and content ids: the one place that defines what gets hashed.

Protobuf's own serialization is not canonical across implementations, so everything that is
hashed or signed goes through `canonical_bytes`: fields in field-number order, each as
(number, kind, length, value), maps sorted by key, default scalars omitted (proto3 presence).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

_KIND_INT, _KIND_BYTES, _KIND_MSG, _KIND_LIST, _KIND_MAP, _KIND_FLOAT = range(6)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _scalar(field: FieldDescriptor, value: object) -> bytes:
    t = field.type
    if t in (FieldDescriptor.TYPE_STRING,):
        raw = str(value).encode("utf-8")
        return bytes([_KIND_BYTES]) + _U32.pack(len(raw)) + raw
    if t == FieldDescriptor.TYPE_BYTES:
        raw = bytes(value)  # type: ignore[arg-type]
        return bytes([_KIND_BYTES]) + _U32.pack(len(raw)) + raw
    if t == FieldDescriptor.TYPE_MESSAGE:
        raw = canonical_bytes(value)  # type: ignore[arg-type]
        return bytes([_KIND_MSG]) + _U32.pack(len(raw)) + raw
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return bytes([_KIND_FLOAT]) + struct.pack(">d", float(value))  # type: ignore[arg-type]
    if t == FieldDescriptor.TYPE_BOOL:
        value = 1 if value else 0
    # every integer kind (u64, i64, enums) fits 9 signed big-endian bytes
    return bytes([_KIND_INT]) + int(value).to_bytes(9, "big", signed=True)  # type: ignore[call-overload]


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 dropped FieldDescriptor.label; older releases lack is_repeated
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


def canonical_bytes(msg: Message) -> bytes:
    """Deterministic encoding of a protobuf message, independent of wire serialization."""
    out = bytearray()
    for field in sorted(msg.DESCRIPTOR.fields, key=lambda f: f.number):
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            mapping = getattr(msg, field.name)
            if not mapping:
                continue
            key_f = field.message_type.fields_by_name["key"]
            val_f = field.message_type.fields_by_name["value"]
            body = b"".join(_scalar(key_f, k) + _scalar(val_f, mapping[k]) for k in sorted(mapping))
            out += _U32.pack(field.number) + bytes([_KIND_MAP]) + _U32.pack(len(body)) + body
        elif _is_repeated(field):
            values = getattr(msg, field.name)
            if not values:
                continue
            body = _U32.pack(len(values)) + b"".join(_scalar(field, v) for v in values)
            out += _U32.pack(field.number) + bytes([_KIND_LIST]) + _U32.pack(len(body)) + body
        elif field.message_type is not None:
            if not msg.HasField(field.name):
                continue
            out += _U32.pack(field.number) + _scalar(field, getattr(msg, field.name))
        else:
            value = getattr(msg, field.name)
            if field.containing_oneof is None and not value:
                continue  # proto3 default: absent
            if field.containing_oneof is not None and msg.WhichOneof(field.containing_oneof.name) != field.name:
                continue
            out += _U32.pack(field.number) + _scalar(field, value)
    return bytes(out)


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


def digest(domain: str, msg: Message) -> bytes:
    """Domain-separated SHA-256 of a message's canonical bytes."""
    return sha256(b"zkpot/v1/" + domain.encode() + b"\x00" + canonical_bytes(msg))


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

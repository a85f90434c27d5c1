"""The state machine's records layer: state keys, typed reads of committed state, the overlay a
block's writes go through, and the state root over those writes. services.ledger.state applies
the rules; this module fixes what is stored and what the root covers, so it is consensus-critical.

state_root(h) = sha256("zkpot/v1/state-root" || state_root(h-1) || D), D = sha256 over this
block's state writes in key order (each: len(key) || key || sha256(value)); a record (task,
round summary, leader schedule) is hashed as its canonical encoding (zkpot/codec.py), never as
the protobuf wire bytes it is stored in: those are not stable across protobuf versions, backends
or languages, and a field added to a record changes no root while it is unset (issue 17.1;
golden roots in tests/test_state_roots.py). state_root(-1) = 32 zero bytes. Blobs are
content-addressed and referenced by content id from state, so they are covered by the ids and
not hashed again.

State keys (column family `state`):
  b"task"                  GetTaskResponse (task id + manifest)
  b"round/current"         u64: the open round (rounds + 1 once the task is finished)
  b"round/" + u64(r)       RoundSummary of round r (submissions in acceptance order)
  b"schedule"              LeaderScheduleResponse
  b"score/" + u64(r) + pk  u32: proven correct count of participant pk's accepted round-r proof
  secure-aggregation tasks (services.ledger.masking; the round summary carries phase, mask set, dropped):
  b"reveal/" + u64(r) + dealer + holder       key opening holder's share of a dropped dealer's mask secret
  b"reveal-self/" + u64(r) + dealer + holder  key opening holder's share of a counted dealer's self seed
  b"self-seed/" + u64(r) + member             a counted member's self seed, revealed by itself
  Masked vectors and share boxes are blobs, referenced by content id from the round summary.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import Message

from zkpot.codec import canonical_bytes, u64_key
from zkpot.v1 import ledger_pb2, types_pb2

KEY_TASK = b"task"
KEY_CURRENT_ROUND = b"round/current"
KEY_SCHEDULE = b"schedule"
ZERO_ROOT = b"\x00" * 32
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
SCORE_PREFIX = b"score/"


def round_key(round_: int) -> bytes:
    return b"round/" + u64_key(round_)


def score_prefix(round_: int) -> bytes:
    return SCORE_PREFIX + u64_key(round_)


def score_key(round_: int, participant: bytes) -> bytes:
    return score_prefix(round_) + participant


def decode_score(raw: bytes) -> int:
    return _U32.unpack(raw)[0]


class Reader(Protocol):
    """What execution reads from the committed store."""

    def state_get(self, key: bytes) -> bytes | None: ...
    def blob(self, cid: str) -> bytes | None: ...
    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None: ...


@dataclass
class Execution:
    results: list[types_pb2.TxResult]
    state: dict[bytes, bytes]
    blobs: dict[str, bytes]
    state_root: bytes
    duplicate_positions: set[int] = field(default_factory=set)


class _Overlay:
    """Writes of the block being executed, read through before the committed store."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.state: dict[bytes, bytes] = {}  # what is stored
        self.digests: dict[bytes, bytes] = {}  # what the state root covers
        self.blobs: dict[str, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.state[key] if key in self.state else self.reader.state_get(key)

    def put(self, key: bytes, value: bytes | Message) -> None:
        """A raw value (a count, a height), or a record: stored as protobuf, hashed canonically."""
        if isinstance(value, Message):
            self.state[key] = value.SerializeToString(deterministic=True)
            self.digests[key] = hashlib.sha256(canonical_bytes(value)).digest()
        else:
            self.state[key] = value
            self.digests[key] = hashlib.sha256(value).digest()

    def blob(self, cid: str) -> bytes | None:
        return self.blobs[cid] if cid in self.blobs else self.reader.blob(cid)


def state_root(previous: bytes, digests: dict[bytes, bytes]) -> bytes:
    """`digests`: this block's state writes, key -> sha256 of the value (_Overlay.put)."""
    d = hashlib.sha256()
    for key in sorted(digests):
        d.update(_U64.pack(len(key)) + key + digests[key])
    return hashlib.sha256(b"zkpot/v1/state-root\x00" + previous + d.digest()).digest()


# -- typed reads of committed state ---------------------------------------------------------------


def read_current_round(get: Callable[[bytes], bytes | None]) -> int:
    raw = get(KEY_CURRENT_ROUND)
    return 0 if raw is None else _U64.unpack(raw)[0]


def read_round(get: Callable[[bytes], bytes | None], round_: int) -> ledger_pb2.RoundSummary | None:
    raw = get(round_key(round_))
    return None if raw is None else ledger_pb2.RoundSummary.FromString(raw)


def read_task(get: Callable[[bytes], bytes | None]) -> ledger_pb2.GetTaskResponse | None:
    raw = get(KEY_TASK)
    return None if raw is None else ledger_pb2.GetTaskResponse.FromString(raw)


def read_schedule(get: Callable[[bytes], bytes | None]) -> ledger_pb2.LeaderScheduleResponse | None:
    raw = get(KEY_SCHEDULE)
    return None if raw is None else ledger_pb2.LeaderScheduleResponse.FromString(raw)

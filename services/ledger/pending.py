"""The ledger's blocks between check and synced write: a block's head, a prepared (checked,
executed, not yet written) block, and the store as it will be once the prepared blocks are written.
services.ledger.ledger queues and commits them; a view lets the next block execute on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.ledger.store import Commit, Store
from zkpot.v1 import ledger_pb2


@dataclass(frozen=True)
class Head:
    height: int
    block_hash: bytes
    view: int
    state_root: bytes
    timestamp_ms: int
    current_round: int  # read with the head so a Head response is one consistent snapshot


@dataclass
class Prepared:
    """A checked, executed block waiting for its synced write."""

    commit: Commit
    head: Head  # the head once it is written
    qc: bytes  # its verified QC, deterministic bytes
    response: ledger_pb2.AppendResponse
    tx_locations: dict[bytes, tuple[int, int]]
    epoch: int


class _PendingView:
    """The store as it will be once `pending` is written: what the next block executes against."""

    def __init__(self, store: Store, pending: tuple[Prepared, ...], writes: dict[bytes, bytes] | None = None) -> None:
        self.store = store
        self.pending = pending
        self.writes = writes or {}

    def with_writes(self, writes: dict[bytes, bytes]) -> _PendingView:
        return _PendingView(self.store, self.pending, writes)

    def __call__(self, key: bytes) -> bytes | None:
        return self.state_get(key)

    def state_get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        for p in reversed(self.pending):
            if key in p.commit.state:
                return p.commit.state[key]
        return self.store.state_get(key)

    def blob(self, cid: str) -> bytes | None:
        for p in reversed(self.pending):
            if cid in p.commit.blobs:
                return p.commit.blobs[cid]
        return self.store.blob(cid)

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        for p in reversed(self.pending):
            if tx_id in p.tx_locations:
                return p.tx_locations[tx_id]
        return self.store.tx_location(tx_id)

    def stored_block(self, height: int) -> ledger_pb2.StoredBlock | None:
        for p in self.pending:
            if p.commit.height == height:
                return ledger_pb2.StoredBlock.FromString(p.commit.stored_block)
        raw = self.store.block_bytes(height)
        return None if raw is None else ledger_pb2.StoredBlock.FromString(raw)

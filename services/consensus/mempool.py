"""Admitted transactions waiting for a block: dedupe by id, caps on count and bytes."""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Iterable

from zkpot.v1 import types_pb2

# Recently committed ids are remembered so a late gossip copy is not proposed again.
COMMITTED_MEMORY = 200_000

FULL = "resource_exhausted"


class Mempool:
    def __init__(self, max_txs: int, max_bytes: int, max_per_sender: int = 0) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        # quota per (signature-checked) sender key, so one submitter cannot fill the pool for
        # everyone (0: none; `zkpot consensus serve` defaults to a quarter of the pool)
        self.max_per_sender = max_per_sender or max_txs
        self._per_sender: Counter[bytes] = Counter()
        self._txs: OrderedDict[bytes, tuple[types_pb2.Transaction, int]] = OrderedDict()
        self._bytes = 0
        self._committed: OrderedDict[bytes, None] = OrderedDict()
        self.changed = asyncio.Event()  # set whenever a transaction is admitted

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._txs

    @property
    def bytes(self) -> int:
        return self._bytes

    def refusal(self, tx_id: bytes, size: int) -> str | None:
        """Why `tx_id` cannot be admitted now (None: it can)."""
        if tx_id in self._txs:
            return "duplicate: already in the mempool"
        if tx_id in self._committed:
            return "duplicate: already committed"
        if len(self._txs) >= self.max_txs or self._bytes + size > self.max_bytes:
            return f"{FULL}: mempool full ({len(self._txs)} txs, {self._bytes} bytes)"
        return None

    def add(self, tx_id: bytes, tx: types_pb2.Transaction) -> str | None:
        """Admit a checked transaction; returns the refusal reason or None."""
        size = tx.ByteSize()
        reason = self.refusal(tx_id, size)
        if reason is None and self._per_sender[tx.sender] >= self.max_per_sender:
            reason = f"{FULL}: sender quota ({self.max_per_sender} txs in the mempool)"
        if reason is None:
            self._txs[tx_id] = (tx, size)
            self._bytes += size
            self._per_sender[tx.sender] += 1
            self.changed.set()
        return reason

    def remove(self, tx_ids: Iterable[bytes]) -> None:
        for tx_id in tx_ids:
            entry = self._txs.pop(tx_id, None)
            if entry is not None:
                self._bytes -= entry[1]
                sender = entry[0].sender
                self._per_sender[sender] -= 1
                if self._per_sender[sender] <= 0:
                    del self._per_sender[sender]

    def mark_committed(self, tx_ids: Iterable[bytes]) -> None:
        ids = list(tx_ids)
        self.remove(ids)
        for tx_id in ids:
            self._committed[tx_id] = None
        while len(self._committed) > COMMITTED_MEMORY:
            self._committed.popitem(last=False)

    def items(self) -> Iterable[tuple[bytes, types_pb2.Transaction]]:
        """Admitted transactions, oldest first."""
        return ((tx_id, entry[0]) for tx_id, entry in self._txs.items())

    def has_new(self, exclude: set[bytes]) -> bool:
        return any(tx_id not in exclude for tx_id in self._txs)

    def batch(self, max_txs: int, max_bytes: int, exclude: set[bytes]) -> list[tuple[bytes, types_pb2.Transaction]]:
        """Oldest-first transactions not in `exclude`, within the block caps."""
        out: list[tuple[bytes, types_pb2.Transaction]] = []
        total = 0
        for tx_id, (tx, size) in self._txs.items():
            if len(out) >= max_txs:
                break
            if tx_id in exclude:
                continue
            if total + size > max_bytes:
                if not out:
                    continue  # a tx larger than a block can never be proposed; skip it
                break
            out.append((tx_id, tx))
            total += size
        return out

"""Admitted transactions waiting for a block: dedupe by id, caps on count and bytes, fair eviction.

Fairness (issue 18.3): each sender has a quota of count and bytes (a quarter of the pool by
default); when the pool is full, a newcomer evicts the newest transactions of the sender holding
the most bytes, as long as that sender still holds more than the newcomer would. So one key (or a
few) flooding large transactions can fill at most its share, and can never lock out a sender that
holds less; transactions larger than a block are refused before they get here (core.submit).
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

from zkpot import refusal
from zkpot.refusal import Refusal
from zkpot.v1 import types_pb2

# Recently committed ids are remembered so a late gossip copy is not proposed again.
COMMITTED_MEMORY = 200_000


class Mempool:
    def __init__(self, max_txs: int, max_bytes: int, max_per_sender: int = 0, max_bytes_per_sender: int = 0,
                 on_evict: Callable[[int], None] | None = None) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        # quotas per (signature-checked) sender key, so one submitter cannot fill the pool for
        # everyone (0: none; `zkpot consensus serve` defaults to a quarter of the pool)
        self.max_per_sender = max_per_sender or max_txs
        self.max_bytes_per_sender = max_bytes_per_sender or max_bytes
        self._on_evict = on_evict
        self._per_sender: Counter[bytes] = Counter()
        self._sender_bytes: Counter[bytes] = Counter()
        self._by_sender: dict[bytes, OrderedDict[bytes, None]] = {}
        self._txs: OrderedDict[bytes, tuple[types_pb2.Transaction, int]] = OrderedDict()
        # signature -> (tx, id) of every admitted tx: a block's copy of a tx admitted here gets its
        # id by one lookup and a message comparison instead of re-encoding and hashing (known_id)
        self._by_signature: dict[bytes, tuple[types_pb2.Transaction, bytes]] = {}
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

    def refusal(self, tx_id: bytes, size: int, sender: bytes) -> Refusal | None:
        """Why `tx_id` cannot be admitted now, even by evicting (None: it can). Cheap: called before
        any signature is checked."""
        if tx_id in self._txs:
            return Refusal(refusal.DUPLICATE, "already in the mempool")
        if tx_id in self._committed:
            return Refusal(refusal.DUPLICATE, "already committed")
        if self._per_sender[sender] >= self.max_per_sender or self._sender_bytes[sender] + size > \
                self.max_bytes_per_sender:
            return Refusal(refusal.BUSY,
                           f"sender quota ({self._per_sender[sender]} txs, {self._sender_bytes[sender]} bytes in the "
                           f"mempool; at most {self.max_per_sender} txs, {self.max_bytes_per_sender} bytes)")
        if self._full(size) and not self._evictable(sender, size):
            return self._full_refusal()
        return None

    def _full_refusal(self) -> Refusal:
        return Refusal(refusal.BUSY, f"mempool full ({len(self._txs)} txs, {self._bytes} bytes)")

    def add(self, tx_id: bytes, tx: types_pb2.Transaction, size: int | None = None) -> Refusal | None:
        """Admit a checked transaction, evicting a heavier sender's newest if full; the refusal or None.
        `size`: its ByteSize if the caller has it."""
        size = tx.ByteSize() if size is None else size
        reason = self.refusal(tx_id, size, tx.sender)
        if reason is not None:
            return reason
        evicted = 0
        while self._full(size):
            if not self._evictable(tx.sender, size):  # what was evicted came from heavier senders: fair
                reason = self._full_refusal()
                break
            heaviest = max(self._sender_bytes, key=self._sender_bytes.__getitem__)
            self.remove([next(reversed(self._by_sender[heaviest]))])
            evicted += 1
        if evicted and self._on_evict is not None:
            self._on_evict(evicted)
        if reason is not None:
            return reason
        self._txs[tx_id] = (tx, size)
        self._by_signature[tx.signature] = (tx, tx_id)
        self._bytes += size
        self._per_sender[tx.sender] += 1
        self._sender_bytes[tx.sender] += size
        self._by_sender.setdefault(tx.sender, OrderedDict())[tx_id] = None
        self.changed.set()
        return None

    def _full(self, size: int) -> bool:
        return len(self._txs) >= self.max_txs or self._bytes + size > self.max_bytes

    def _evictable(self, sender: bytes, size: int) -> bool:
        """Is there a sender to evict from: the heaviest, other than `sender`, holding more than
        `sender` would after admission? (The eviction loop in add re-checks at every step.)"""
        heaviest = max(self._sender_bytes, key=self._sender_bytes.__getitem__, default=None)
        mine = self._sender_bytes[sender] + size
        return heaviest is not None and heaviest != sender and self._sender_bytes[heaviest] > mine

    def remove(self, tx_ids: Iterable[bytes]) -> None:
        for tx_id in tx_ids:
            entry = self._txs.pop(tx_id, None)
            if entry is not None:
                self._by_signature.pop(entry[0].signature, None)
                self._bytes -= entry[1]
                sender = entry[0].sender
                self._per_sender[sender] -= 1
                self._sender_bytes[sender] -= entry[1]
                ids = self._by_sender[sender]
                del ids[tx_id]
                if not ids:
                    del self._per_sender[sender], self._sender_bytes[sender], self._by_sender[sender]

    def mark_committed(self, tx_ids: Iterable[bytes]) -> None:
        ids = list(tx_ids)
        self.remove(ids)
        for tx_id in ids:
            self._committed[tx_id] = None
        while len(self._committed) > COMMITTED_MEMORY:
            self._committed.popitem(last=False)

    def known_id(self, tx: types_pb2.Transaction) -> bytes | None:
        """The id of `tx` if an equal message was admitted here (None: compute it). Sound because
        equal messages have equal canonical bytes, hence equal ids; the signature only finds the
        candidate. Safe from worker threads: one dict lookup, and admitted txs are never mutated."""
        entry = self._by_signature.get(tx.signature)
        return entry[1] if entry is not None and entry[0] == tx else None

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
                    continue  # cannot happen since core.submit refuses txs over the block limit
                break
            out.append((tx_id, tx))
            total += size
        return out

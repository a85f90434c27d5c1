"""Blocks above the committed tip, the QC certifying each, and the 2-chain commit rule."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from zkpot import chain
from zkpot.v1 import types_pb2

# committed blocks kept in memory for peers' FetchBlocks (older ones are read from the ledger)
KEEP_COMMITTED = 256


@dataclass
class Entry:
    block: types_pb2.Block
    seen_at: float  # monotonic time this replica first saw it (commit latency)
    tx_ids: list[bytes]


class BlockStore:
    def __init__(
        self,
        root: types_pb2.Block,
        root_hash: bytes,
        root_qc: types_pb2.QuorumCert | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`root`: the committed tip (the ledger's head; genesis on a fresh chain)."""
        self._clock = clock
        self._entries: dict[bytes, Entry] = {root_hash: Entry(root, clock(), [])}
        # the entries split in two, so pruning touches only what it drops (it runs at every commit;
        # a scan of all entries and a walk of the kept committed chain cost ~5 % of a replica's CPU)
        self._committed_chain: deque[bytes] = deque([root_hash])  # committed entries, oldest first
        self._uncommitted: set[bytes] = set()  # every other entry: the chain above, and forks
        self.certs: dict[bytes, types_pb2.QuorumCert] = {}
        if root_qc is not None:
            self.certs[root_hash] = root_qc
        self.committed_hash = root_hash
        self.committed_height = root.header.height
        self.committed_view = root.header.view

    def get(self, block_hash: bytes) -> types_pb2.Block | None:
        entry = self._entries.get(block_hash)
        return entry.block if entry else None

    def seen_at(self, block_hash: bytes) -> float | None:
        entry = self._entries.get(block_hash)
        return entry.seen_at if entry else None

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._entries

    def add(
        self, block: types_pb2.Block, block_hash: bytes | None = None, tx_ids: list[bytes] | None = None
    ) -> bytes:
        """Insert a validated block; its parent_qc becomes the parent's certificate."""
        h = block_hash or chain.block_hash(block.header)
        if h not in self._entries:
            ids = tx_ids if tx_ids is not None else [chain.tx_id(tx) for tx in block.txs]
            self._entries[h] = Entry(block, self._clock(), ids)
            self._uncommitted.add(h)
        if block.header.HasField("parent_qc"):
            self.add_cert(block.header.parent_qc)
        return h

    def add_cert(self, qc: types_pb2.QuorumCert) -> None:
        """Remember a block's certificate (what the ledger gets with it); an endorsed fallback QC
        replaces the same block's unendorsed one."""
        if not qc.votes:
            return
        known = self.certs.get(qc.block_hash)
        if known is None or (known.fallback_owner and not known.coin and qc.coin):
            self.certs[qc.block_hash] = qc

    def commit_target(self, qc: types_pb2.QuorumCert) -> bytes | None:
        """2-chain rule: a QC for B1 whose parent B0 has B1.view == B0.view + 1 commits B0.

        Returns B0's hash when that commits something new, else None (also when blocks are unknown).
        """
        if qc.fallback_owner and not qc.coin:
            # an unendorsed fallback QC (a height-2 block's parent, before any coin) commits nothing:
            # the coin may elect another chain (simulator, Twins, seed 86: it committed the parent of
            # a height-1 block the coin did not elect, and the elected chain another block there)
            return None
        b1 = self.get(qc.block_hash)
        if b1 is None:
            return None
        b0 = self.get(b1.header.parent_hash)
        if b0 is None:
            return None
        if b1.header.view != b0.header.view + 1 or b0.header.height <= self.committed_height:
            return None
        return b1.header.parent_hash

    def tx_ids(self, block_hash: bytes) -> list[bytes]:
        entry = self._entries.get(block_hash)
        return entry.tx_ids if entry else []

    def chain_to_committed(self, tip: bytes) -> list[tuple[bytes, types_pb2.Block]] | None:
        """Blocks from just above the committed tip up to `tip`, oldest first (None: a gap or a fork)."""
        out: list[tuple[bytes, types_pb2.Block]] = []
        h = tip
        while h != self.committed_hash:
            block = self.get(h)
            if block is None or block.header.height <= self.committed_height:
                return None
            out.append((h, block))
            h = block.header.parent_hash
        out.reverse()
        return out

    def mark_committed(self, block_hash: bytes) -> None:
        block = self._entries[block_hash].block
        self.committed_hash = block_hash
        self.committed_height = block.header.height
        self.committed_view = block.header.view
        self._uncommitted.discard(block_hash)
        self._committed_chain.append(block_hash)

    def prune(self) -> None:
        """Drop blocks that can no longer matter: old committed ones and forks below the tip."""
        floor = self.committed_height - KEEP_COMMITTED
        chain_ = self._committed_chain
        while len(chain_) > 1 and self._entries[chain_[0]].block.header.height < floor:
            self._drop(chain_.popleft())
        forks = [h for h in self._uncommitted if self._entries[h].block.header.height <= self.committed_height]
        for h in forks:
            self._uncommitted.discard(h)
            self._drop(h)

    def _drop(self, block_hash: bytes) -> None:
        del self._entries[block_hash]
        self.certs.pop(block_hash, None)

    def uncommitted_tx_ids(self, tip: bytes) -> set[bytes]:
        ids: set[bytes] = set()
        for h, _ in self.chain_to_committed(tip) or []:
            ids.update(self._entries[h].tx_ids)
        return ids

    def __len__(self) -> int:
        return len(self._entries)

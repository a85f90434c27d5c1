"""Blocks from and for peers: serving their FetchBlocks (a walk back from a hash, or committed
blocks forward from a height) and handing the blocks our synchronizer and catch-up fetched to
the core.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from zkpot.v1 import types_pb2

from . import checks
from .catchup import Committed

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("zkpot.consensus.helper")

SYNC_GRACE_S = 0.5      # wait this long for a certified block's proposal before fetching it
CATCHUP_MIN_GAP_S = 0.5  # forward catch-up is started at most this often
CATCHUP_BACKLOG = 512    # committed blocks not yet in the ledger before catch-up waits for it


class Helper:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._syncing: set[bytes] = set()
        self._catchup_at = -1e9

    async def sync_later(self, block_hash: bytes, prefer: list[bytes]) -> None:
        c = self.core
        await asyncio.sleep(SYNC_GRACE_S)
        if block_hash not in c.store and block_hash not in self._syncing:
            self._syncing.add(block_hash)
            try:
                await c.sync.sync(block_hash, prefer=prefer)
            finally:
                self._syncing.discard(block_hash)

    def trigger_catchup(self) -> None:
        c = self.core
        now = c.rt.now()
        if c.catchup.running or now - self._catchup_at < CATCHUP_MIN_GAP_S:
            return
        self._catchup_at = now
        c.spawn(c.catchup.run())

    async def deliver_committed(self, items: list[Committed]) -> None:
        """Blocks proven committed by catch-up: commit them here (ledger appends follow in order)."""
        c = self.core
        while c.store.committed_height - c.appended_height > CATCHUP_BACKLOG:
            await asyncio.sleep(0.05)  # let the ledger keep up: the commit queue holds whole blocks
        async with c.lock:
            last: Committed | None = None
            for item in items:  # (named `c` until stop 28, shadowing the core: every delivery raised)
                hdr = item.block.header
                if hdr.height <= c.store.committed_height:
                    continue  # committed meanwhile by the live path
                if last is None and (hdr.height != c.store.committed_height + 1
                                     or hdr.parent_hash != c.store.committed_hash):
                    log.error("catch-up: block at height %d does not extend our committed tip", hdr.height)
                    return
                c.store.add(item.block, item.block_hash, item.tx_ids)
                c.store.add_cert(item.qc)
                last = item
            if last is None:
                return
            c.commit(last.block_hash)
            c.process_qc(last.qc)

    async def fetch_range(
        self, from_height: int, max_blocks: int, max_bytes: int
    ) -> tuple[list[types_pb2.Block], list[types_pb2.QuorumCert]]:
        """Serve a peer's forward catch-up: committed blocks from our ledger, oldest first."""
        c = self.core
        stored = await c.ledger.blocks(from_height, max_blocks)
        blocks: list[types_pb2.Block] = []
        qcs: list[types_pb2.QuorumCert] = []
        size = 0
        for sb in stored:
            if sb.block.header.height != from_height + len(blocks):
                break
            n = sb.block.ByteSize() + sb.qc.ByteSize()
            if blocks and size + n > max_bytes:
                break
            blocks.append(sb.block)
            qcs.append(sb.qc)
            size += n
        return blocks, qcs

    def validate_fetched(self, block: types_pb2.Block) -> tuple[bytes, list[bytes]]:
        """A block fetched by sync: the proposal checks that need no replica state, and (with the
        fallback) its parent certificate's election by the coin."""
        c = self.core
        out = checks.check_block(block, c.chain_id, c.validators, c.quorum, c.genesis_hash, c.coin_check)
        if c.fallback is not None:
            c.fallback.check_parent(block.header)
        return out

    async def deliver_synced(self, blocks: list[tuple[types_pb2.Block, bytes, list[bytes]]]) -> None:
        c = self.core
        async with c.lock:
            for block, h, ids in blocks:
                if block.header.height <= c.store.committed_height or block.header.parent_hash not in c.store:
                    continue
                c.store.add(block, h, ids)
                c.block_added.set()
                c.process_qc(block.header.parent_qc)
                c.recheck_commit(h)

    async def fetch_blocks(self, block_hash: bytes, max_blocks: int) -> list[types_pb2.Block]:
        """Serve a peer's walk back from `block_hash` (memory first, then the ledger)."""
        c = self.core
        out: list[types_pb2.Block] = []
        h = block_hash
        while len(out) < max_blocks and h != c.genesis_hash:
            block = c.store.get(h)
            if block is None:
                stored = await c.ledger.block_by_hash(h)
                if stored is None:
                    break
                block = stored.block
            out.append(block)
            h = block.header.parent_hash
        return out

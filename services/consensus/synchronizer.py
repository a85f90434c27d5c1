"""Fetches blocks this replica misses (an unknown parent or a certified block it never saw).

Walks back from the wanted block through FetchBlocks (a bounded number of blocks per request,
one request at a time, one peer at a time) until it reaches a block it knows, validates the
whole chain (signatures and parent QCs: every fetched block is certified by its child), then
hands it over oldest first. Only one walk runs at a time, so a burst of proposals that all miss
the same parent costs one walk, not a catch-up storm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc

from zkpot import chain
from zkpot.v1 import types_pb2

from . import metrics as m
from .checks import Rejected

log = logging.getLogger("zkpot.consensus.sync")

BATCH = 128               # blocks per FetchBlocks request
MAX_SYNC_BLOCKS = 20_000  # beyond this a replica must restore from a ledger snapshot instead
WALK_LIMIT = 64           # further behind than this: forward catch-up by height (catchup.py) instead

Fetch = Callable[[bytes, bytes, int], Awaitable[list[types_pb2.Block]]]
Validate = Callable[[types_pb2.Block], tuple[bytes, list[bytes]]]
Deliver = Callable[[list[tuple[types_pb2.Block, bytes, list[bytes]]]], Awaitable[None]]


class Synchronizer:
    def __init__(
        self,
        fetch: Fetch,
        peers: Sequence[bytes],
        known: Callable[[bytes], bool],
        committed_height: Callable[[], int],
        validate: Validate,
        deliver: Deliver,
        offload: Callable[..., Awaitable] | None = None,
        far_behind: Callable[[], None] | None = None,
    ) -> None:
        """`far_behind`: called instead of walking when the wanted block is more than WALK_LIMIT
        above the committed height (starts the forward catch-up)."""
        self._far_behind = far_behind
        self._offload = offload or asyncio.to_thread
        self._fetch = fetch
        self._peers = list(peers)
        self._known = known
        self._committed_height = committed_height
        self._validate = validate
        self._deliver = deliver
        self._lock = asyncio.Lock()

    async def sync(self, block_hash: bytes, prefer: Sequence[bytes] = ()) -> bool:
        """Make `block_hash` and its ancestors known; True on success."""
        async with self._lock:
            if self._known(block_hash):
                return True
            order = [p for p in prefer if p in self._peers] + [p for p in self._peers if p not in prefer]
            fetched: list[types_pb2.Block] = []  # newest first
            h = block_hash
            while not self._known(h):
                batch = await self._fetch_from_any(order, h)
                if not batch:
                    log.warning("sync of %s failed: no peer served it", h[:4].hex())
                    return False
                if self._far_behind is not None and batch[0].header.height > self._committed_height() + WALK_LIMIT:
                    log.info("sync: %d blocks behind; catching up forward by height",
                             batch[0].header.height - self._committed_height())
                    self._far_behind()
                    return False
                for block in batch:
                    if chain.block_hash(block.header) != h:
                        break  # the peer's walk diverged; ask again from here
                    if block.header.height <= self._committed_height():
                        # a fallback chain the coin did not elect ends this way (expected); a fast one: a fork
                        (log.info if block.header.fallback_height else log.error)(
                            "sync: block %s at committed height %d conflicts%s", h[:4].hex(), block.header.height,
                            " (a fallback chain not elected)" if block.header.fallback_height else "")
                        return False
                    fetched.append(block)
                    h = block.header.parent_hash
                    if self._known(h):
                        break
                if len(fetched) > MAX_SYNC_BLOCKS:
                    log.error("sync: more than %d blocks behind; restore the ledger from a snapshot", MAX_SYNC_BLOCKS)
                    return False
            fetched.reverse()
            try:
                checked = await self._offload(lambda: [self._validate(b) for b in fetched])
            except Rejected as exc:
                m.sync_blocks.labels(outcome="refused").inc(len(fetched))
                m.rejected.labels(reason=f"sync_{exc.reason}").inc()
                log.warning("sync: fetched chain rejected: %s", exc)
                return False
            m.sync_blocks.labels(outcome="delivered").inc(len(fetched))
            await self._deliver([(b, bh, ids) for b, (bh, ids) in zip(fetched, checked, strict=True)])
            log.info("synced %d blocks up to %s", len(fetched), block_hash[:4].hex())
            return True

    async def _fetch_from_any(self, order: list[bytes], h: bytes) -> list[types_pb2.Block]:
        for peer in order:
            try:
                blocks = await self._fetch(peer, h, BATCH)
            except grpc.aio.AioRpcError as exc:
                m.sync_requests.labels(result=exc.code().name.lower()).inc()
                continue
            if blocks and chain.block_hash(blocks[0].header) == h:
                m.sync_requests.labels(result="ok").inc()
                return blocks
            m.sync_requests.labels(result="not_found").inc()
        return []

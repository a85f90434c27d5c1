"""Appending committed blocks to this replica's ledger, in height order, and refreshing the
leader schedule the ledger derives from them. The core never waits on the ledger: it queues
blocks here as it commits them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc

from zkpot.v1 import types_pb2

from . import metrics as m

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("zkpot.consensus.committer")


class Committer:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.queue: asyncio.Queue[tuple[types_pb2.Block, types_pb2.QuorumCert]] = asyncio.Queue()

    async def run(self) -> None:
        """Appends committed blocks to the local ledger, in order, retrying until it takes them."""
        c = self.core
        while True:
            block, qc = await self.queue.get()
            backoff = 0.1
            while True:
                try:
                    await c.ledger.append(block, qc)
                    break
                except grpc.aio.AioRpcError as exc:
                    m.append_failures.inc()
                    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                        try:
                            head = await c.ledger.head()
                            if head.height >= block.header.height:
                                break  # already there (e.g. appended before a restart)
                        except grpc.aio.AioRpcError:
                            pass
                    log.error("ledger append of height %d failed: %s %s", block.header.height,
                              exc.code().name, exc.details())
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)  # a returning ledger is used within a second (19.6)
            c.appended_height = block.header.height
            m.appended_height.set(block.header.height)
            if self.queue.empty():
                await self.refresh_schedule()

    async def refresh_schedule(self) -> None:
        c = self.core
        try:
            resp = await c.ledger.leader_schedule()
            changed = c.leaders.update(resp)
        except (grpc.aio.AioRpcError, ValueError) as exc:
            log.debug("leader schedule not refreshed: %s", exc)
            return
        if changed:
            log.info("leader schedule: epoch %d from view %d", resp.epoch, resp.activation_view)
            c.proposer.maybe_lead()

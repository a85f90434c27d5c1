"""The commit path: extending the committed chain to a block the 2-chain rule commits, then
appending the committed blocks to this replica's ledger, in height order, and refreshing the
leader schedule the ledger derives from them. Commits never wait on the ledger: they queue blocks
for the appends.
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
        # the ledger's schedule may differ from ours: ask it (LeaderSchedule) once the queue is empty.
        # An append's response names the schedule's epoch after its block, so a replica asks only
        # when a round closed (one call per FL round instead of one per block: ~1 ms of CPU per
        # view here and in the ledger, issue 22), or when the response cannot tell.
        self.schedule_stale = False

    def recheck_commit(self, h: bytes) -> None:
        """A QC for `h` may have formed (from votes) before the block itself arrived."""
        c = self.core
        cert = c.store.certs.get(h)
        if cert is not None:
            target = c.store.commit_target(cert)
            if target is not None:
                self.commit(target)

    def commit(self, target: bytes) -> None:
        c = self.core
        blocks = c.store.chain_to_committed(target)
        if blocks is None:
            log.warning("cannot commit %s yet: ancestors missing", target[:4].hex())
            c.spawn(c.sync.sync(target))
            return
        now = c.rt.now()
        for h, block in blocks:
            qc = c.store.certs.get(h)
            if qc is None:  # cannot happen: a block's child (or the QC) certifies it
                log.error("no certificate for block %s; commit stops", h[:4].hex())
                return
            seen = c.store.seen_at(h)
            c.store.mark_committed(h)
            c.leaders.note_committed(block)
            c.mempool.mark_committed(c.store.tx_ids(h))
            if seen is not None:
                m.commit_latency.observe(now - seen)
            m.committed_blocks.inc()
            m.views_led.labels(validator=c.genesis.name_of(block.header.proposer)).inc()
            m.committed_txs.inc(len(block.txs))
            self.queue.put_nowait((block, qc))
        log.debug("committed up to height %d", c.store.committed_height)
        c.store.prune()
        m.height.set(c.store.committed_height)
        c.admission.mempool_metrics()

    async def run(self) -> None:
        """Appends committed blocks to the local ledger, in order, retrying until it takes them."""
        c = self.core
        while True:
            block, qc = await self.queue.get()
            backoff = 0.1
            while True:
                try:
                    resp = await c.ledger.append(block, qc)
                    if not resp.HasField("schedule_epoch") or resp.schedule_epoch != c.leaders.schedule.epoch:
                        self.schedule_stale = True  # a round closed, a replayed block, or an older ledger
                    break
                except grpc.aio.AioRpcError as exc:
                    m.append_failures.inc()
                    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                        try:
                            head = await c.ledger.head()
                            if head.height >= block.header.height:
                                self.schedule_stale = True
                                break  # already there (e.g. appended before a restart)
                        except grpc.aio.AioRpcError:
                            pass
                    log.error("ledger append of height %d failed: %s %s", block.header.height,
                              exc.code().name, exc.details())
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)  # a returning ledger is used within a second (19.6)
            c.appended_height = block.header.height
            m.appended_height.set(block.header.height)
            if self.queue.empty() and self.schedule_stale:
                await self.refresh_schedule()

    async def refresh_schedule(self) -> None:
        c = self.core
        try:
            resp = await c.ledger.leader_schedule()
            changed = c.leaders.update(resp)
        except (grpc.aio.AioRpcError, ValueError) as exc:
            log.debug("leader schedule not refreshed: %s", exc)
            self.schedule_stale = True  # asked again after the next append
            return
        self.schedule_stale = False
        if changed:
            log.info("leader schedule: epoch %d from view %d", resp.epoch, resp.activation_view)
            c.proposer.maybe_lead()

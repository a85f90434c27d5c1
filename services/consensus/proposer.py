"""Leading a view: wait for work (the batching interval) or the idle interval, then propose.

The proposer reads the core's state under its lock and proposes through it; the core calls
`maybe_lead` whenever the view or the leader schedule changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from zkpot import chain
from zkpot.codec import merkle_root
from zkpot.v1 import consensus_pb2, types_pb2

from . import metrics as m

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("zkpot.consensus.proposer")


class Proposer:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.proposed_view = 0  # the last view this replica proposed in (never twice in one view)

    def maybe_lead(self) -> None:
        c = self.core
        if c.fallback is not None and c.fallback.is_active():
            return  # every replica proposes its own chain there (fallback.py)
        if c.leaders.leader(c.view) == c.me and self.proposed_view < c.view:
            c.spawn(self._lead(c.view))

    def _ready(self, view: int) -> bool:
        """Holds a certificate for the previous view and the block it extends (whose txs it must skip)."""
        c = self.core
        entered = c.high_qc.view + 1 == view or (
            c.fallback is None and c.last_tc is not None and c.last_tc.view + 1 == view
        ) or (c.fallback is not None and c.fallback.coin_for(view - 3) is not None)
        return entered and c.high_qc.block_hash in c.store

    def has_work(self) -> bool:
        return self._work() is not None

    def _work(self) -> str | None:
        """"new": mempool txs no uncommitted block holds; "chain": none, but txs in the certified
        tip or its parent still need this block (and one more) to commit everywhere; None: idle."""
        c = self.core
        tip = c.high_qc.block_hash
        exclude = c.store.uncommitted_tx_ids(tip)
        if c.mempool.has_new(exclude):
            return "new"
        parent = c.store.get(tip)
        if c.store.tx_ids(tip) or (parent and c.store.tx_ids(parent.header.parent_hash)):
            return "chain"
        return None

    async def _lead(self, view: int) -> None:
        c = self.core
        started = c.rt.now()
        work_since: float | None = None
        while True:
            async with c.lock:
                if c.view != view or self.proposed_view >= view:
                    return
                c.mempool.changed.clear()  # before looking, so no admission can slip past the wait
                c.block_added.clear()
                ready = self._ready(view)
                work = self._work() if ready else None
            now = c.rt.now()
            if work == "chain":
                break  # nothing new to batch: waiting would only delay the commit of the tip's txs
            if work:
                work_since = work_since or now
                wait = c.config.min_block_interval_s - (now - work_since)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            elif ready:
                wait = c.config.idle_block_s - (now - started)
                if wait <= 0:
                    break
                try:
                    await asyncio.wait_for(c.mempool.changed.wait(), timeout=wait)
                except TimeoutError:
                    pass
            else:  # the QC outran its block (still being checked here): wait for it, not a poll period
                try:
                    await asyncio.wait_for(c.block_added.wait(), timeout=0.05)
                except TimeoutError:
                    pass
        async with c.lock:
            if c.view == view and self.proposed_view < view and self._ready(view):
                await self._propose(view)

    def make_block(
        self, view: int, parent_qc: types_pb2.QuorumCert, fallback_height: int = 0
    ) -> tuple[types_pb2.Block, list[bytes]]:
        """A signed block extending parent_qc's block (which must be in the store), filled from the
        mempool with what no uncommitted ancestor holds; returns it with its tx ids."""
        c = self.core
        exclude = c.store.uncommitted_tx_ids(parent_qc.block_hash)
        batch = c.mempool.batch(c.config.max_block_txs, c.config.max_block_bytes, exclude)
        ids = [i for i, _ in batch]
        parent = c.store.get(parent_qc.block_hash)
        assert parent is not None  # _ready() waited for it
        header = types_pb2.BlockHeader(
            chain_id=c.chain_id,
            height=parent_qc.height + 1,
            view=view,
            parent_hash=parent_qc.block_hash,
            proposer=c.me,
            txs_root=merkle_root(ids),
            timestamp_ms=max(c.rt.wall_ms(), parent.header.timestamp_ms),
            fallback_height=fallback_height,
        )
        if parent_qc.votes:
            header.parent_qc.CopyFrom(parent_qc)
        return chain.sign_block(c.key, types_pb2.Block(header=header, txs=[tx for _, tx in batch])), ids

    async def _propose(self, view: int) -> None:
        c = self.core
        parent_qc = c.high_qc
        block, ids = self.make_block(view, parent_qc)
        header = block.header
        proposal = consensus_pb2.Proposal(block=block)
        coin = c.fallback.coin_for(view - 3) if c.fallback is not None else None
        if parent_qc.view + 1 != view and coin is not None:
            proposal.coin.view = view - 3  # the first view after a fallback: its coin lets the others leave it
            proposal.coin.signature = coin
        elif parent_qc.view + 1 != view:
            assert c.last_tc is not None and c.last_tc.view + 1 == view
            proposal.tc.CopyFrom(c.last_tc)
        self.proposed_view = view
        log.debug("proposing view %d height %d with %d txs%s", view, header.height, len(block.txs),
                  " and a TC" if proposal.HasField("tc") else "")
        m.proposals.inc()
        c.network.broadcast_proposal(proposal)
        await c.on_proposal_locked(proposal, chain.block_hash(header), ids)

"""Votes on the fast path: casting ours (safety state persisted before it leaves) and counting
everyone's into quorum certificates, which go to the core.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from zkpot import chain
from zkpot.v1 import consensus_pb2

from . import checks
from . import metrics as m
from .checks import Rejected

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("zkpot.consensus.voting")


class Voting:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.first_vote_at: dict[tuple[int, bytes], float] = {}  # (view, block) -> first vote seen, for metrics

    async def vote(self, h: bytes, view: int, height: int) -> None:
        c = self.core
        c.safety.last_voted_view = view
        c.safety.high_qc = c.high_qc
        await c.persist()  # before the vote can leave
        vote = chain.make_vote(c.key, h, view, height)
        m.votes_sent.inc()
        # Every replica gets the vote, not only leader(view+1): then a crashed next leader costs
        # one timeout (its own view) instead of two (the QC of this view would die with it), and
        # every replica commits as soon as it sees the QC. n^2 small messages; fine for small n.
        c.network.broadcast_vote(vote)
        self.on_vote_locked(vote)

    async def on_vote(self, vote: consensus_pb2.Vote) -> None:
        c = self.core
        checks.check_vote(vote, c.validators)
        if vote.fallback_owner or vote.fallback_height:
            if c.fallback is None:
                raise Rejected("malformed", "fallback vote on a chain without the fallback")
            async with c.lock:
                await c.fallback.on_vote_locked(vote)  # resent fallback votes are expected: no duplicate error
            return
        async with c.lock:
            # honest replicas send each vote once: a second one in a live view is a replay or an
            # equivocation (refused and counted; a late vote for a certified view is just ignored)
            if vote.view > c.high_qc.view and c.votes.has_voted(vote.view, vote.signature.signer):
                raise Rejected("duplicate_vote", f"a vote by this validator in view {vote.view} was counted already")
            self.on_vote_locked(vote)

    def on_vote_locked(self, vote: consensus_pb2.Vote) -> None:
        c = self.core
        if vote.view <= c.high_qc.view:
            return  # a QC for that view or later exists already
        m.votes_received.inc()
        self.first_vote_at.setdefault((vote.view, vote.block_hash), c.rt.now())
        qc = c.votes.add(vote)
        if qc is not None:
            started = self.first_vote_at.pop((vote.view, vote.block_hash), None)
            if started is not None:
                m.qc_formation.observe(c.rt.now() - started)
            log.debug("QC formed for view %d height %d", qc.view, qc.height)
            c.process_qc(qc)

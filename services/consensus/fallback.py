"""The asynchronous fallback (Ditto, Gelashvili et al., FC 2022): live when the network is not.

The fast path (2-chain HotStuff) needs a timely leader. When a view v times out (its TC), every
replica enters the fallback of v instead of the next view: each one proposes a chain of its own,
a block of fallback height 1 in view v+1 (extending its highest QC, with the TC, by the usual
voting rule after a TC) and, once that block is certified, a block of height 2 in view v+2. Votes
go to every replica, so everyone forms every chain's QCs. Once 2f+1 chains reached height 2, a
replica releases its share of the common coin of v (threshold BLS, zkpot.coin); 2f+1 shares
(the dealt threshold) give the coin, which elects one chain after the fact
(LeaderElector.fallback_leader: weighted by committed proof scores, every validator above zero).
The elected chain's QCs are *endorsed* (they carry the coin); with both heights certified its
height-1 block commits (2-chain: views v+1, v+2). Then back to the fast path in view v+3, whose
first block carries the coin.

Why the adversary cannot stall it: it learns the coin only after 2f+1 chains were complete at
some honest replica (the threshold exceeds f, so an honest share is needed), so it cannot pick
which chains to slow; each fallback commits with probability at least the coin weight of the
complete chains (>= (2f+1)/n when weights are equal).

Safety (docs/consensus.md, "Fallback"): a replica f-votes once per (owner, height) and never
after it learned the coin; a height-2 vote is recorded with the height-1 QC it extends (persisted
before the vote leaves), so a replica that voted for the elected chain's height-2 block holds that
chain's endorsed height-1 QC from the moment it exits; the first fast view after the fallback
(v+3) is voted only on a block whose parent QC ranks at least as high as the voter's. So once a
replica commits the elected height-1 block, 2f+1 replicas (f+1 honest) will only certify its
descendants. Unendorsed fallback QCs never become a replica's high QC or commit anything
(BlockStore.commit_target).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

from zkpot import chain, coin
from zkpot.v1 import consensus_pb2, types_pb2

from . import metrics as m
from .checks import Rejected

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("zkpot.consensus.fallback")


def endorsed(qc: types_pb2.QuorumCert, signature: bytes) -> types_pb2.QuorumCert:
    out = types_pb2.QuorumCert()
    out.CopyFrom(qc)
    out.coin = signature
    return out


class Fallback:
    def __init__(self, core: Core, public: coin.CoinPublic, share: bytes) -> None:
        self.core = core
        self.public = public
        self.share = share
        order = [v.public_key for v in core.genesis.validators]
        self.index = {k: i for i, k in enumerate(order)}
        self.view: int | None = None  # TC view of the fallback we are in (None: fast path)
        self.entered_at = 0.0
        self.coins: dict[int, bytes] = {}  # fallback view -> combined coin (the last few)
        self.helped: dict[int, float] = {}  # fallback view -> when we last sent its coin to stragglers
        self.outcomes: collections.Counter[str] = collections.Counter()  # exits by outcome (as the metric)
        self._reset()

    def _reset(self) -> None:
        # (height, owner) -> block hash -> signer -> signature; a signer counts once per (height, owner)
        self.votes: dict[tuple[int, bytes], dict[bytes, dict[bytes, types_pb2.Signature]]] = {}
        self.qcs: dict[tuple[int, bytes], types_pb2.QuorumCert] = {}  # unendorsed fallback QCs
        self.shares: dict[int, bytes] = {}
        self.share_sent = False
        self.proposed: set[int] = set()  # heights of our own chain proposed
        self.sent: list[tuple[str, object]] = []  # what we sent in this fallback (resent until it ends)

    # ------------------------------------------------------------------ entering

    def is_active(self) -> bool:
        return self.view is not None

    async def enter(self, tc: consensus_pb2.TimeoutCert) -> None:
        """The TC of view v ends the fast path at v: start the fallback of v (under the core lock)."""
        c = self.core
        v = tc.view
        if self.view is not None and self.view >= v:
            return
        if c.safety.last_voted_view >= v + 1 or v + 1 <= c.sign_floor:
            return  # we voted past it (or cannot sign there): that fallback is over for us
        for t in tc.timeouts:  # the TC's QCs: our height-1 block must extend the highest of them
            if t.HasField("high_qc"):
                c.process_qc(t.high_qc, advance=False)
        self.view = v
        self._reset()
        self.entered_at = c.rt.now()
        if c.safety.fallback_view != v:
            c.safety.fallback_view = v
            c.safety.fallback_votes = []
            c.safety.fallback_locks = {}
        c.view = max(c.view, v + 1)
        m.view.set(c.view)
        m.fallback_entries.inc()
        m.fallback_active.set(1)
        c.pacemaker.suspend()
        log.info("view %d timed out: fallback %d (views %d and %d)", v, v, v + 1, v + 2)
        c.spawn(self._propose_first(v, tc))
        c.spawn(self._resend(v))

    async def _propose_first(self, v: int, tc: consensus_pb2.TimeoutCert) -> None:
        """Our height-1 block, once we hold the block our high QC certifies (sync may fetch it)."""
        c = self.core
        for _ in range(400):
            async with c.lock:
                if self.view != v or 1 in self.proposed:
                    return
                if c.high_qc.block_hash in c.store:
                    await self._propose(v, 1, c.high_qc, tc)
                    return
            c.block_added.clear()
            try:
                await asyncio.wait_for(c.block_added.wait(), timeout=0.05)
            except TimeoutError:
                pass

    async def _propose(
        self, v: int, height: int, parent_qc: types_pb2.QuorumCert, tc: consensus_pb2.TimeoutCert | None
    ) -> None:
        c = self.core
        self.proposed.add(height)
        block, ids = c.proposer.make_block(v + height, parent_qc, fallback_height=height)
        proposal = consensus_pb2.Proposal(block=block)
        if tc is not None:
            proposal.tc.CopyFrom(tc)
        log.debug("fallback %d: proposing height %d (chain height %d, %d txs)", v, height,
                  block.header.height, len(block.txs))
        m.proposals.inc()
        self.sent.append(("proposal", proposal))
        c.network.broadcast_proposal(proposal)
        await c.on_proposal_locked(proposal, chain.block_hash(block.header), ids)

    # ------------------------------------------------------------------ blocks and votes

    async def on_block(self, proposal: consensus_pb2.Proposal, h: bytes) -> None:
        """A fallback block in our store (checked, parent known): vote if the rules allow (under the lock)."""
        c = self.core
        hdr = proposal.block.header
        height = hdr.fallback_height
        v = hdr.view - height
        if self.view != v:
            self.help_stragglers(v)  # a replica still in a fallback we left: give it the coin
            return  # not (or no longer) in that fallback: no vote (a carried TC entered it already)
        owner = hdr.proposer
        if [height, owner] in c.safety.fallback_votes:
            return  # voted for this chain at this height already (once per owner and height)
        if height == 1:
            tc = proposal.tc if proposal.HasField("tc") else None
            if tc is None or tc.view != v:
                return
            hqc = max((t.high_qc.view for t in tc.timeouts if t.HasField("high_qc")), default=0)
            if hdr.parent_qc.view < hqc:
                log.info("no fallback vote for %s: parent QC view %d below the TC's %d",
                         c.genesis.name_of(owner), hdr.parent_qc.view, hqc)
                return
        else:
            pq = hdr.parent_qc
            if pq.fallback_owner != owner or pq.fallback_height != 1 or pq.view != v + 1:
                return
            c.safety.fallback_locks[owner] = pq.SerializeToString()  # see the module docstring
            self.qcs.setdefault((1, owner), pq)
        c.safety.fallback_votes.append([height, owner])
        await c.persist()  # before the vote can leave
        vote = chain.make_vote(c.key, h, hdr.view, hdr.height, fallback_owner=owner, fallback_height=height)
        m.fallback_votes_sent.inc()
        self.sent.append(("vote", vote))
        c.network.broadcast_vote(vote)
        await self.on_vote_locked(vote)

    async def on_vote_locked(self, vote: consensus_pb2.Vote) -> None:
        """A checked fallback vote (under the lock)."""
        c = self.core
        height = vote.fallback_height
        v = vote.view - height
        if self.view != v or height not in (1, 2):
            self.help_stragglers(v)
            return
        key = (height, vote.fallback_owner)
        per_block = self.votes.setdefault(key, {})
        signer = vote.signature.signer
        if key in self.qcs or any(signer in sigs for sigs in per_block.values()):
            return
        signers = per_block.setdefault(vote.block_hash, {})
        signers[signer] = vote.signature
        if len(signers) < c.quorum:
            return
        same = list(signers.values())
        qc = types_pb2.QuorumCert(block_hash=vote.block_hash, view=vote.view, height=vote.height, votes=same,
                                  fallback_owner=vote.fallback_owner, fallback_height=height)
        self.qcs[key] = qc
        if height == 1 and vote.fallback_owner == c.me and 2 not in self.proposed:
            if vote.block_hash in c.store:
                await self._propose(v, 2, qc, None)
        elif height == 2:
            done = sum(1 for (hh, _o) in self.qcs if hh == 2)
            if done >= c.quorum and not self.share_sent:
                self._release_share(v)

    def _release_share(self, v: int) -> None:
        c = self.core
        self.share_sent = True
        msg = coin.coin_message(c.chain_id, v)
        share = consensus_pb2.CoinShare(view=v, signer=c.me, share=coin.sign_share(self.share, msg))
        log.debug("fallback %d: 2f+1 chains complete, coin share out", v)
        self.sent.append(("share", share))
        c.network.broadcast_coin_share(share)
        self._add_share(self.index[c.me], share.share)

    # ------------------------------------------------------------------ the coin

    async def on_coin_share(self, share: consensus_pb2.CoinShare) -> None:
        c = self.core
        i = self.index.get(share.signer)
        if i is None:
            raise Rejected("unknown_signer", "coin share by a key that is not a validator")
        if share.view in self.coins:
            async with c.lock:
                self.help_stragglers(share.view)  # it is still in that fallback
            return
        if share.coin and share.view + 3 <= c.view:
            return  # we are past that fallback already (a late answer to a resend): nothing to learn
        if share.coin:  # the sender left that fallback: its coin lets us leave too
            if c.coin_check is None or not await c.rt.offload(c.coin_check.ok, share.view, share.coin):
                raise Rejected("bad_coin", "the coin in a coin share does not verify")
            async with c.lock:
                if share.view not in self.coins and (self.view is None or self.view <= share.view):
                    await self.exit(share.view, share.coin)
            return
        if self.view is not None and share.view < self.view:
            return  # its fallback is over for us
        msg = coin.coin_message(c.chain_id, share.view)
        ok = await c.rt.offload(coin.verify_share, self.public, i, msg, share.share)
        if not ok:
            raise Rejected("bad_coin_share", "coin share does not verify against the sender's share key")
        async with c.lock:
            if self.view == share.view:
                self._add_share(i, share.share)

    def _add_share(self, i: int, share: bytes) -> None:
        v = self.view
        assert v is not None
        self.shares[i] = share
        if len(self.shares) >= self.public.threshold and v not in self.coins:
            signature = coin.combine(self.public, self.shares)
            m.fallback_coin_latency.observe(self.core.rt.now() - self.entered_at)
            self.core.spawn(self._exit_task(v, signature))

    async def _exit_task(self, v: int, signature: bytes) -> None:
        async with self.core.lock:
            if v in self.coins:
                return  # shares that arrived after the threshold spawned this too: exited once already
            await self.exit(v, signature)

    async def exit(self, v: int, signature: bytes) -> None:
        """The coin of v is known: adopt the elected chain's endorsed QCs, back to the fast path at
        v+3 (under the lock). Also run for a coin learned from a fast proposal."""
        c = self.core
        self.coins[v] = signature
        for old in [k for k in self.coins if k < v - 8]:
            del self.coins[old]
        if self.view is not None and self.view > v:
            return
        elected = c.leaders.fallback_leader(v, coin.coin_value(signature))
        qcs = dict(self.qcs) if self.view == v else {}
        lock = c.safety.fallback_locks.get(elected) if c.safety.fallback_view == v else None
        if lock is not None:
            qcs.setdefault((1, elected), types_pb2.QuorumCert.FromString(lock))
        was_in = self.view == v
        if was_in:
            m.fallback_seconds.observe(c.rt.now() - self.entered_at)
            m.fallback_views.observe(3)
        self.view = None
        m.fallback_active.set(0)
        if c.safety.last_voted_view < v + 2:
            c.safety.last_voted_view = v + 2  # no fallback vote of v, and no fast vote in its views
            await c.persist()
        adopted = []
        for height in (1, 2):
            qc = qcs.get((height, elected))
            if qc is not None:
                e = endorsed(qc, signature)
                c.store.certs[e.block_hash] = e
                adopted.append(e)
        if was_in:
            outcome = "commit" if len(adopted) == 2 else "certified" if adopted else "nothing"
            if outcome == "commit":
                # a fallback that committed shows the network delivers; the view timer that ran out
                # before it lost to an adversary (or a slow leader), not to a slow network, so it
                # steps down one doubling: under a leader-targeting adversary the next fallback starts
                # sooner (simulator: +58 % blocks), while a genuinely slow network still backs off
                # (its fast views keep timing out; measured unchanged at 150 and 300 ms delays)
                c.pacemaker.step_down()
            self.outcomes[outcome] += 1
            m.fallback_exits.labels(outcome=outcome).inc()
        log.info("fallback %d: coin elects %s (%s)", v, c.genesis.name_of(elected),
                 "height 2 certified: its height-1 block commits" if len(adopted) == 2
                 else "height 1 certified" if adopted else "its chain certified nothing here")
        c.advance(v + 3, "fallback")
        for e in adopted:
            c.process_qc(e)
        self._reset()

    def help_stragglers(self, v: int) -> None:
        """Someone still sends messages of fallback v, which we left: send our share and the coin
        (once per base timeout: the straggler resends that often). Without this a replica whose
        coin shares were lost stays in the fallback for ever once the others have left it (the
        simulator found it: two replicas stuck, no quorum for any view, seed 288)."""
        c = self.core
        signature = self.coins.get(v)
        now = c.rt.now()
        if signature is None or now - self.helped.get(v, -1e9) < c.config.base_timeout_s:
            return
        self.helped[v] = now
        for old in [k for k in self.helped if k < v - 8]:
            del self.helped[old]
        share = coin.sign_share(self.share, coin.coin_message(c.chain_id, v))
        m.fallback_helped.inc()
        c.network.broadcast_coin_share(consensus_pb2.CoinShare(view=v, signer=c.me, share=share, coin=signature))

    def leave_for(self, view: int) -> None:
        """A certificate of a view past this fallback arrived: the network left it without us."""
        if self.view is not None and view > self.view + 2:
            log.info("fallback %d: left for view %d (a later certificate)", self.view, view)
            m.fallback_exits.labels(outcome="overtaken").inc()
            m.fallback_seconds.observe(self.core.rt.now() - self.entered_at)
            m.fallback_views.observe(view - self.view)
            self.outcomes["overtaken"] += 1
            self.view = None
            m.fallback_active.set(0)
            self._reset()

    def coin_for(self, v: int) -> bytes | None:
        return self.coins.get(v)

    # ------------------------------------------------------------------ checks and upkeep

    def check_parent(self, header: types_pb2.BlockHeader) -> None:
        """A block's parent QC: endorsed, unless it is a height-2 block's own height-1 QC."""
        self.check_endorsed(header.parent_qc, own_parent_of=header.proposer if header.fallback_height == 2 else None)

    def check_tc(self, tc: consensus_pb2.TimeoutCert) -> None:
        """The high QCs a TC's timeouts carry."""
        for t in tc.timeouts:
            self.check_endorsed(t.high_qc)

    def check_endorsed(self, qc: types_pb2.QuorumCert, own_parent_of: bytes | None = None) -> None:
        """A fallback QC counts only with a coin electing its owner (the coin's signature itself is
        checked statelessly, checks.check_qc). `own_parent_of`: the proposer of a height-2 block,
        whose parent may be its own chain's unendorsed height-1 QC."""
        if not qc.fallback_owner:
            return
        if not qc.coin:
            if own_parent_of is not None and qc.fallback_owner == own_parent_of and qc.fallback_height == 1:
                return
            raise Rejected("bad_qc", "fallback QC without its coin")
        v = qc.view - qc.fallback_height
        if self.core.leaders.fallback_leader(v, coin.coin_value(qc.coin)) != qc.fallback_owner:
            raise Rejected("bad_qc", f"fallback QC of a chain the coin of fallback {v} did not elect")

    async def _resend(self, v: int) -> None:
        """Messages lost before the network stabilised would stall a fallback (it has no timeouts
        of its own): resend everything we sent in it every base timeout until it ends."""
        c = self.core
        period = c.config.base_timeout_s
        while self.view == v:
            await asyncio.sleep(period)
            if self.view != v:
                return
            for kind, msg in list(self.sent):
                if kind == "proposal":
                    c.network.broadcast_proposal(msg)  # type: ignore[arg-type]
                elif kind == "vote":
                    c.network.broadcast_vote(msg)  # type: ignore[arg-type]
                else:
                    c.network.broadcast_coin_share(msg)  # type: ignore[arg-type]
            m.fallback_resends.inc()

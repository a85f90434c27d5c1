"""The replica's protocol: proposals, votes, certificates, timeouts and commits (2-chain HotStuff).

Every handler first runs the stateless checks (signatures, certificates) outside the lock, then
mutates the replica's state under one asyncio lock. Sends are fire-and-forget. This module holds
the replica's state, checks proposals and moves views on certificates; the rest of the protocol
has modules of their own, each holding this core: voting (our votes, others' votes into QCs),
viewchange (timeouts, TCs), committer (the commit path: committed chain, ledger appends, leader
schedule), proposer (leading a view), admission (transactions, mempool, gossip), helper (blocks
to and from peers), recovery (start after a crash).
"""

from __future__ import annotations

import asyncio
import logging

from zkpot import chain
from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis
from zkpot.v1 import consensus_pb2, types_pb2

from . import checks
from . import metrics as m
from .admission import Admission
from .aggregator import TimeoutAggregator, VoteAggregator, tc_high_qc_view
from .blockstore import BlockStore
from .catchup import CatchUp
from .checks import CoinCheck, Rejected
from .clients import LedgerClient, TxChecker
from .committer import Committer
from .config import Config
from .fallback import Fallback
from .helper import Helper
from .leader import LeaderElector
from .mempool import Mempool
from .network import Network
from .pacemaker import Pacemaker
from .proposer import Proposer
from .recovery import Recovery
from .runtime import REAL, Runtime
from .safety import SafetyState, SafetyStore, vote_refusal
from .synchronizer import WALK_LIMIT, Synchronizer
from .viewchange import ViewChange
from .voting import Voting

__all__ = ["Config", "Core"]
log = logging.getLogger("zkpot.consensus.core")

MAX_FUTURE_MS = 10_000  # a proposer's clock may run ahead of ours by at most this much
UNKNOWN_FLOOR = 2**63    # amnesic, no peer heard yet: sign nothing at all


class Core:
    def __init__(
        self,
        config: Config,
        genesis: Genesis,
        key: KeyPair,
        ledger: LedgerClient,
        network: Network,
        checker: TxChecker,
        runtime: Runtime = REAL,
        coin_share: bytes | None = None,
    ) -> None:
        if key.public not in genesis.validator_keys:
            raise ValueError("this replica's key is not a genesis validator")
        if genesis.coin is not None and coin_share is None:
            raise ValueError("genesis deals a common coin (the asynchronous fallback): this replica needs its share")
        self.config = config
        self.genesis = genesis
        self.key = key
        self.me = key.public
        self.ledger = ledger
        self.network = network
        self.checker = checker
        self.rt = runtime
        self.validators = genesis.validator_keys
        self.participants = genesis.participant_keys
        self.members = genesis.member_keys
        self.quorum = genesis.quorum
        self.f = chain.max_faulty(len(genesis.validators))
        self.chain_id = genesis.chain_id
        self.genesis_block = genesis.block()
        self.genesis_hash = chain.block_hash(self.genesis_block.header)
        self.genesis_qc = types_pb2.QuorumCert(block_hash=self.genesis_hash)
        self.coin_check = CoinCheck(genesis.coin, self.chain_id) if genesis.coin is not None else None

        self.lock = asyncio.Lock()
        self.safety_store = SafetyStore(config.data_dir)
        self.safety = SafetyState()
        self.leaders = LeaderElector([v.public_key for v in genesis.validators], int(genesis.manifest.min_correct))
        self.votes = VoteAggregator(self.validators, self.quorum)
        self.timeouts = TimeoutAggregator(self.validators, self.quorum)
        self.mempool = Mempool(config.mempool_max_txs, config.mempool_max_bytes, config.mempool_max_per_sender,
                               config.mempool_max_bytes_per_sender, on_evict=m.evicted_txs.inc)
        self.store = BlockStore(self.genesis_block, self.genesis_hash, None, runtime.now)
        self.proposer = Proposer(self)
        self.admission = Admission(self)
        self.committer = Committer(self)
        self.helper = Helper(self)
        self.recovery = Recovery(self)
        self.voting = Voting(self)
        self.view_change = ViewChange(self)
        self.fallback = Fallback(self, genesis.coin, coin_share) if genesis.coin is not None and coin_share else None
        self.sync = Synchronizer(
            fetch=network.fetch_blocks,
            peers=list(network.peers),
            known=lambda h: h in self.store,
            committed_height=lambda: self.store.committed_height,
            validate=self.helper.validate_fetched,
            deliver=self.helper.deliver_synced,
            offload=runtime.offload,
            far_behind=self.helper.trigger_catchup,
        )
        self.catchup = CatchUp(
            fetch=network.fetch_range,
            peers=list(network.peers),
            tip=lambda: (self.store.committed_hash, self.store.committed_height),
            validate_block=self.helper.validate_fetched,
            check_qc=self._check_synced_qc,
            deliver=self.helper.deliver_committed,
            offload=runtime.offload,
        )
        self.sign_floor = 0  # after a start without safety state: sign nothing in views <= this
        self.pacemaker = Pacemaker(
            config.base_timeout_s, config.idle_block_s, config.max_timeout_s, self.view_change.on_expiry, runtime.now
        )

        self.view = 1
        self.high_qc = self.genesis_qc
        self.last_tc: consensus_pb2.TimeoutCert | None = None
        self._tasks: set[asyncio.Task] = set()
        self.appended_height = 0
        self.block_added = asyncio.Event()  # a leader waiting for the block its QC certifies

    # ------------------------------------------------------------------ lifecycle

    async def start(self, ledger_wait_s: float = 60.0) -> None:
        """Recover from the ledger (committed tip) and the safety file, then start the timers."""
        head = await self.recovery.ledger_head(ledger_wait_s)
        if head.chain_id and head.chain_id != self.chain_id:
            raise RuntimeError(f"ledger holds chain {head.chain_id!r}, genesis says {self.chain_id!r}")
        if head.height > 0:
            stored = await self.ledger.block_at(head.height)
            if stored is None:
                raise RuntimeError(f"ledger head {head.height} has no block")
            root_hash = chain.block_hash(stored.block.header)
            self.store = BlockStore(stored.block, root_hash, stored.qc if stored.qc.votes else None, self.rt.now)
        self.appended_height = head.height
        await self.recovery.replay_leader_evidence(head.height)
        amnesic = not self.safety_store.exists()
        self.safety = self.safety_store.load()
        if self.safety.high_qc.fallback_owner and not self.safety.high_qc.coin:
            self.safety.high_qc = types_pb2.QuorumCert()  # an unendorsed fallback QC is never a high QC
        if amnesic and self.network.peers:
            self.sign_floor = UNKNOWN_FLOOR  # until a peer tells how far the chain has gone
        self.high_qc = self.genesis_qc
        for qc in (self.safety.high_qc, self.store.certs.get(self.store.committed_hash)):
            if qc is not None and qc.votes and qc.view > self.high_qc.view:
                self.high_qc = qc
        self.view = max(1, self.high_qc.view + 1, self.safety.last_voted_view, self.safety.highest_timeout_view)
        await self.committer.refresh_schedule()
        m.height.set(self.store.committed_height)
        m.appended_height.set(head.height)
        m.view.set(self.view)
        log.info(
            "recovered: committed height %d, view %d, last voted view %d, high QC view %d",
            self.store.committed_height, self.view, self.safety.last_voted_view, self.high_qc.view,
        )
        # never propose in the view we recovered into: we may have proposed there before the crash
        self.proposer.proposed_view = self.view
        self.spawn(self.pacemaker.run())
        self.spawn(self.committer.run())
        self.spawn(self.admission.regossip())
        self.pacemaker.restart(progress=True)
        self.proposer.maybe_lead()
        self.helper.trigger_catchup()  # a replica that was down (or lost its ledger) fetches what it missed
        if amnesic:
            self.spawn(self.recovery.recover_lost_safety_state())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def spawn(self, coro) -> asyncio.Task:  # noqa: ANN001 - any coroutine
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ proposals

    def process_proposal(self, proposal: consensus_pb2.Proposal) -> asyncio.Task:
        """Run on_proposal as the core's own task, so a sender's expired deadline cannot cut it
        short (tx checks may wait for the verifier); the task's result is the rejection, if any."""

        async def run() -> Rejected | None:
            try:
                await self.on_proposal(proposal)
            except Rejected as exc:
                m.rejected.labels(reason=exc.reason).inc()
                log.info("proposal rejected: %s", exc)
                return exc
            return None

        return self.spawn(run())

    async def on_proposal(self, proposal: consensus_pb2.Proposal) -> None:
        """Raises Rejected for a message that must be dropped."""
        block = proposal.block
        h, ids = await self.rt.offload(
            checks.check_proposal, proposal, self.chain_id, self.validators, self.quorum, self.genesis_hash,
            self.coin_check, self.mempool.known_id,
        )
        hdr = block.header
        if hdr.fallback_height == 0 and hdr.proposer != self.leaders.leader(hdr.view):
            raise Rejected("wrong_leader", f"proposer is not the leader of view {hdr.view}")
        if self.fallback is not None:
            self.fallback.check_parent(hdr)
            self.fallback.check_tc(proposal.tc)
        if hdr.view == self.view and not hdr.fallback_height:
            self.pacemaker.proposal_arrived()  # checking its transactions may take a while: not a dead leader
        if block.header.height <= self.store.committed_height and h not in self.store:
            raise Rejected("stale", f"height {block.header.height} is committed here already")
        if block.header.parent_hash not in self.store:
            await self.sync.sync(block.header.parent_hash, prefer=[block.header.proposer])
            if block.header.parent_hash not in self.store:
                raise Rejected("unknown_parent", "parent block is unknown and could not be fetched")
        refusals = await self.checker.refusals(list(block.txs), ids)
        bad = [r for r in refusals if r is not None]
        if bad:
            raise Rejected("invalid_tx", f"{len(bad)} invalid transactions, first: {bad[0]}")
        async with self.lock:
            await self.on_proposal_locked(proposal, h, ids)

    async def on_proposal_locked(self, proposal: consensus_pb2.Proposal, h: bytes, ids: list[bytes]) -> None:
        block = proposal.block
        hdr = block.header
        parent = self.store.get(hdr.parent_hash)
        if parent is None:
            raise Rejected("unknown_parent", "parent block was pruned")
        if hdr.height != parent.header.height + 1:
            raise Rejected("malformed", "height is not parent height + 1")
        if hdr.timestamp_ms < parent.header.timestamp_ms or hdr.timestamp_ms > self.rt.wall_ms() + MAX_FUTURE_MS:
            raise Rejected("bad_timestamp", "timestamp before its parent's or too far in the future")
        if hdr.height <= self.store.committed_height:
            return  # an old block (e.g. a late duplicate): nothing to do
        self.store.add(block, h, ids)
        self.block_added.set()
        log.debug("proposal view %d height %d by %s, %d txs (my view %d)", hdr.view, hdr.height,
                  self.genesis.name_of(hdr.proposer), len(block.txs), self.view)
        self.process_qc(hdr.parent_qc)
        self.committer.recheck_commit(h)
        if proposal.HasField("tc"):
            await self.view_change.process_tc(proposal.tc)
        if ids and not set(ids).isdisjoint(self.store.uncommitted_tx_ids(hdr.parent_hash)):
            log.warning("no vote for view %d: it repeats a transaction of an uncommitted ancestor", hdr.view)
            return
        if hdr.fallback_height:
            if self.fallback is not None:
                await self.fallback.on_block(proposal, h)
            return
        coin_view = None
        if proposal.HasField("coin") and self.fallback is not None:
            coin_view = proposal.coin.view
            if self.fallback.coin_for(coin_view) is None:
                await self.fallback.exit(coin_view, proposal.coin.signature)  # a fallback we have not seen end
        if hdr.view != self.view:
            return
        if self.fallback is not None and self.fallback.is_active():
            log.info("no vote for view %d: in the fallback", hdr.view)
            return
        tc = proposal.tc if proposal.HasField("tc") else None
        if tc is not None and self.fallback is not None:
            log.info("no vote for view %d: on a chain with the fallback a TC starts it instead", hdr.view)
            return
        refusal = vote_refusal(
            self.safety, hdr.view, hdr.parent_qc.view, tc.view if tc else None, tc_high_qc_view(tc) if tc else 0,
            coin_view, self.high_qc.view,
        )
        if refusal is None and hdr.view <= self.sign_floor:
            refusal = "no safety state: not signing before the network is past the views it may have signed in"
        if refusal is not None:
            log.info("no vote for view %d: %s", hdr.view, refusal)
            return
        await self.voting.vote(h, hdr.view, hdr.height)

    async def persist(self) -> None:
        await self.rt.offload(self.safety_store.save, self.safety)

    # ------------------------------------------------------------------ votes, timeouts (callers reach them here)

    async def on_vote(self, vote: consensus_pb2.Vote) -> None:
        await self.voting.on_vote(vote)

    async def on_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        await self.view_change.on_timeout(timeout)

    async def _on_timeout_locked(self, timeout: consensus_pb2.Timeout) -> None:
        await self.view_change.on_timeout_locked(timeout)

    # ------------------------------------------------------------------ certificates, views, commits

    def process_qc(self, qc: types_pb2.QuorumCert, advance: bool = True) -> None:
        """A checked QC (signatures; a fallback QC's coin and election). `advance`: move to its next view."""
        if not qc.votes or (qc.fallback_owner and not qc.coin):
            return  # an unendorsed fallback QC certifies nothing outside its fallback
        self.store.add_cert(qc)
        if qc.view > self.high_qc.view:
            self.high_qc = qc
        target = self.store.commit_target(qc)
        if target is not None:
            self.committer.commit(target)
        elif qc.height > self.store.committed_height + WALK_LIMIT:
            self.helper.trigger_catchup()  # far behind: fetch by height, not by walking back
        elif qc.block_hash not in self.store and qc.height > self.store.committed_height:
            # votes often outrun their proposal (which waits for tx checks): give it a moment first
            signers = [v.signer for v in qc.votes if v.signer != self.me]
            self.spawn(self.helper.sync_later(qc.block_hash, signers))
        if advance:
            self._advance(qc.view + 1, "qc")

    def recheck_commit(self, h: bytes) -> None:  # the commit path is the committer's; the helper calls these here
        self.committer.recheck_commit(h)

    def commit(self, target: bytes) -> None:
        self.committer.commit(target)

    def advance(self, view: int, cause: str) -> None:
        self._advance(view, cause)

    def _advance(self, view: int, cause: str) -> None:
        if view <= self.view:
            return
        if self.fallback is not None and self.fallback.is_active() and cause != "fallback":
            self.fallback.leave_for(view)  # the network moved past it: a later certificate ends it here
        self.view = view
        m.view.set(view)
        m.view_changes.labels(cause=cause).inc()
        busy = len(self.mempool) > 0 or self.proposer.has_work()
        self.pacemaker.restart(progress=cause != "tc", wait_s=self.config.min_block_interval_s if busy else None)
        self.votes.prune(view - 2)
        self.timeouts.prune(view - 1)
        self.voting.first_vote_at = {k: t for k, t in self.voting.first_vote_at.items() if k[0] >= view - 2}
        self.proposer.maybe_lead()

    async def on_coin_share(self, share: consensus_pb2.CoinShare) -> None:
        if self.fallback is None:
            raise Rejected("malformed", "coin share on a chain without the fallback")
        await self.fallback.on_coin_share(share)

    def _check_synced_qc(self, qc: types_pb2.QuorumCert) -> None:
        """Catch-up's check of a committed block's QC: signatures, and a fallback QC's coin and election."""
        try:
            checks.check_qc(qc, self.validators, self.quorum, self.genesis_hash, self.coin_check)
        except Rejected as exc:
            raise Rejected("sync_bad_qc", exc.detail) from exc
        if self.fallback is not None:
            self.fallback.check_endorsed(qc)

    # ------------------------------------------------------------------ proposing

    def status(self) -> consensus_pb2.StatusResponse:
        return consensus_pb2.StatusResponse(
            node=self.me,
            view=self.view,
            committed_height=self.store.committed_height,
            leader=self.leaders.leader(self.view),
            mempool_size=len(self.mempool),
            high_qc_view=self.high_qc.view,
            last_voted_view=self.safety.last_voted_view,
        )

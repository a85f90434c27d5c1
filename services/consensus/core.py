"""The replica's event handlers: proposals, votes, timeouts, the local timer, proposing, committing.

Every handler first runs the stateless checks (signatures, certificates) outside the lock, then
mutates the replica's state under one asyncio lock. Sends are fire-and-forget; ledger appends
run in their own task, in height order, so the core never waits on the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from zkpot import chain, codec
from zkpot.codec import merkle_root
from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis
from zkpot.v1 import consensus_pb2, types_pb2

from . import checks
from . import metrics as m
from .aggregator import TimeoutAggregator, VoteAggregator, tc_high_qc_view
from .blockstore import BlockStore
from .catchup import CatchUp, Committed, check_qc_for
from .checks import Rejected
from .clients import LedgerClient, TxChecker
from .leader import LeaderElector
from .mempool import Mempool
from .network import Network
from .pacemaker import Pacemaker
from .runtime import REAL, Runtime
from .safety import SafetyState, SafetyStore, vote_refusal
from .synchronizer import WALK_LIMIT, Synchronizer

# transaction bodies only genesis participants may send (the ledger re-checks; this is a cheap filter)
PARTICIPANT_BODIES = ("submit_proof", "masked_update", "mask_reveal")
log = logging.getLogger("zkpot.consensus.core")

MAX_FUTURE_MS = 10_000  # a proposer's clock may run ahead of ours by at most this much
LEADER_EVIDENCE_BLOCKS = 4096  # committed blocks re-read at start for the leader skip rule
REGOSSIP_BATCH = 2000  # txs per re-gossip request
SYNC_GRACE_S = 0.5      # wait this long for a certified block's proposal before fetching it
CATCHUP_MIN_GAP_S = 0.5  # forward catch-up is started at most this often
CATCHUP_BACKLOG = 512    # committed blocks not yet in the ledger before catch-up waits for it
STATUS_DEADLINE_S = 2.0  # peers' Status at an amnesic start
STATUS_RETRY_S = 0.5     # an amnesic replica asks again until a peer answers
UNKNOWN_FLOOR = 2**63    # amnesic, no peer heard yet: sign nothing at all


@dataclass(frozen=True)
class Config:
    data_dir: Path
    min_block_interval_s: float = 0.02
    idle_block_s: float = 1.0
    base_timeout_s: float = 1.0
    max_timeout_s: float = 30.0
    max_block_txs: int = 2000
    # transactions in admission (signature checks queued or running) past which SubmitTx and
    # GossipTxs are refused as busy; one request is always taken when none is running
    admission_backlog_txs: int = 4000
    max_block_bytes: int = 8 * 1024 * 1024
    mempool_max_txs: int = 50_000
    mempool_max_bytes: int = 256 * 1024 * 1024
    mempool_max_per_sender: int = 0  # 0: no per-sender quota (the CLI defaults to a quarter of the pool)
    mempool_max_bytes_per_sender: int = 0  # likewise, in bytes


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
    ) -> None:
        if key.public not in genesis.validator_keys:
            raise ValueError("this replica's key is not a genesis validator")
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

        self.lock = asyncio.Lock()
        self._admitting = 0  # transactions inside submit() now
        self.safety_store = SafetyStore(config.data_dir)
        self.safety = SafetyState()
        self.leaders = LeaderElector([v.public_key for v in genesis.validators], int(genesis.manifest.min_correct))
        self.votes = VoteAggregator(self.validators, self.quorum)
        self.timeouts = TimeoutAggregator(self.validators, self.quorum)
        self.mempool = Mempool(config.mempool_max_txs, config.mempool_max_bytes, config.mempool_max_per_sender,
                               config.mempool_max_bytes_per_sender, on_evict=m.evicted_txs.inc)
        self.store = BlockStore(self.genesis_block, self.genesis_hash, None, runtime.now)
        self.sync = Synchronizer(
            fetch=network.fetch_blocks,
            peers=list(network.peers),
            known=lambda h: h in self.store,
            committed_height=lambda: self.store.committed_height,
            validate=self._validate_fetched,
            deliver=self._deliver_synced,
            offload=runtime.offload,
            far_behind=self._trigger_catchup,
        )
        self.catchup = CatchUp(
            fetch=network.fetch_range,
            peers=list(network.peers),
            tip=lambda: (self.store.committed_hash, self.store.committed_height),
            validate_block=self._validate_fetched,
            check_qc=check_qc_for(self.validators, self.quorum),
            deliver=self._deliver_committed,
            offload=runtime.offload,
        )
        self._catchup_at = -1e9
        self._sign_floor = 0  # after a start without safety state: sign nothing in views <= this
        self.pacemaker = Pacemaker(
            config.base_timeout_s, config.idle_block_s, config.max_timeout_s, self._on_expiry, runtime.now
        )

        self.view = 1
        self.high_qc = self.genesis_qc
        self.last_tc: consensus_pb2.TimeoutCert | None = None
        self._proposed_view = 0
        self._first_vote_at: dict[tuple[int, bytes], float] = {}
        self._commit_queue: asyncio.Queue[tuple[types_pb2.Block, types_pb2.QuorumCert]] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self.appended_height = 0
        self._syncing: set[bytes] = set()
        self._block_added = asyncio.Event()  # a leader waiting for the block its QC certifies
        self._my_timeout: tuple[consensus_pb2.Timeout, float] | None = None  # last one signed, when
        self._echoed: dict[bytes, float] = {}  # peer -> when we last echoed our timeout to it

    # ------------------------------------------------------------------ lifecycle

    async def start(self, ledger_wait_s: float = 60.0) -> None:
        """Recover from the ledger (committed tip) and the safety file, then start the timers."""
        head = await self._ledger_head(ledger_wait_s)
        if head.chain_id and head.chain_id != self.chain_id:
            raise RuntimeError(f"ledger holds chain {head.chain_id!r}, genesis says {self.chain_id!r}")
        if head.height > 0:
            stored = await self.ledger.block_at(head.height)
            if stored is None:
                raise RuntimeError(f"ledger head {head.height} has no block")
            root_hash = chain.block_hash(stored.block.header)
            self.store = BlockStore(stored.block, root_hash, stored.qc if stored.qc.votes else None, self.rt.now)
        self.appended_height = head.height
        await self._replay_leader_evidence(head.height)
        amnesic = not self.safety_store.exists()
        self.safety = self.safety_store.load()
        if amnesic and self.network.peers:
            self._sign_floor = UNKNOWN_FLOOR  # until a peer tells how far the chain has gone
        self.high_qc = self.genesis_qc
        for qc in (self.safety.high_qc, self.store.certs.get(self.store.committed_hash)):
            if qc is not None and qc.votes and qc.view > self.high_qc.view:
                self.high_qc = qc
        self.view = max(1, self.high_qc.view + 1, self.safety.last_voted_view, self.safety.highest_timeout_view)
        await self._refresh_schedule()
        m.height.set(self.store.committed_height)
        m.appended_height.set(head.height)
        m.view.set(self.view)
        log.info(
            "recovered: committed height %d, view %d, last voted view %d, high QC view %d",
            self.store.committed_height, self.view, self.safety.last_voted_view, self.high_qc.view,
        )
        # never propose in the view we recovered into: we may have proposed there before the crash
        self._proposed_view = self.view
        self._spawn(self.pacemaker.run())
        self._spawn(self._committer())
        self._spawn(self._regossip())
        self.pacemaker.restart(progress=True)
        self._maybe_lead()
        self._trigger_catchup()  # a replica that was down (or lost its ledger) fetches what it missed
        if amnesic:
            self._spawn(self._recover_lost_safety_state())

    async def _recover_lost_safety_state(self) -> None:
        """No safety file: a fresh replica, or one whose data dir was lost or wiped. A wiped one
        may have voted or timed out in views it no longer remembers; signing again there could
        equivocate. When peers show the chain has moved on, this replica signs nothing in views up
        to a floor above every view it can have signed in: it signed in view w only after a QC or
        TC for w-1, whose 2f+1 signers include at least f honest peers, now in a view >= w-1. So
        floor = (highest view any peer reports) + 1 (safe when one of those answers; a peer that
        reports too high a view only keeps this replica silent longer). Votes and timeouts in
        views <= floor are refused; it follows the others' QCs and TCs until it is past it. Until
        a peer answers it signs nothing at all (runs in the background: at a genesis start every
        replica is in this state and they must be serving to answer each other)."""
        answers: list[consensus_pb2.StatusResponse] = []
        while self.network.peers and not answers:
            answers = await self._peer_statuses()
            if not answers:
                await asyncio.sleep(STATUS_RETRY_S)
        async with self.lock:
            floor = 0
            # only once something is committed: at a genesis start views may already have moved on
            # by timeouts while replicas come up, and a floor there would only cost liveness
            if any(st.committed_height > 0 for st in answers):
                top = max(st.view for st in answers)
                floor = top + 1
                log.warning("no safety state but the network is at view %d: signing nothing up to view %d",
                            top, floor)
            self.safety.last_voted_view = max(self.safety.last_voted_view, floor)
            self.safety.highest_timeout_view = max(self.safety.highest_timeout_view, floor)
            await self._persist()  # from now on a restart is an ordinary one
            self._sign_floor = floor

    async def _peer_statuses(self) -> list[consensus_pb2.StatusResponse]:
        async def one(key: bytes) -> consensus_pb2.StatusResponse | None:
            try:
                return await asyncio.wait_for(self.network.status(key), STATUS_DEADLINE_S)
            except (grpc.aio.AioRpcError, TimeoutError):
                return None

        got = await asyncio.gather(*(one(k) for k in self.network.peers))
        return [st for st in got if st is not None]

    async def _replay_leader_evidence(self, height: int) -> None:
        """The leader skip rule reads committed blocks of the current epoch: re-read the recent
        ones from the ledger after a restart (an epoch is far shorter than this window)."""
        h = max(1, height - LEADER_EVIDENCE_BLOCKS + 1)
        while h <= height:
            stored = await self.ledger.blocks(h, 256)
            if not stored:
                break
            for sb in stored:
                self.leaders.note_committed(sb.block)
            h = stored[-1].block.header.height + 1

    async def _ledger_head(self, wait_s: float):  # noqa: ANN202 - ledger_pb2.HeadResponse
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return await self.ledger.head()
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ledger {self.ledger.target} unavailable: {exc.code().name}") from exc
                await asyncio.sleep(0.3)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro) -> asyncio.Task:  # noqa: ANN001 - any coroutine
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

        return self._spawn(run())

    async def on_proposal(self, proposal: consensus_pb2.Proposal) -> None:
        """Raises Rejected for a message that must be dropped."""
        block = proposal.block
        h, ids = await self.rt.offload(
            checks.check_proposal, proposal, self.chain_id, self.validators, self.quorum, self.genesis_hash
        )
        if block.header.proposer != self.leaders.leader(block.header.view):
            raise Rejected("wrong_leader", f"proposer is not the leader of view {block.header.view}")
        if block.header.view == self.view:
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
            await self._on_proposal_locked(proposal, h, ids)

    async def _on_proposal_locked(self, proposal: consensus_pb2.Proposal, h: bytes, ids: list[bytes]) -> None:
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
        self._block_added.set()
        log.debug("proposal view %d height %d by %s, %d txs (my view %d)", hdr.view, hdr.height,
                  self.genesis.name_of(hdr.proposer), len(block.txs), self.view)
        self._process_qc(hdr.parent_qc)
        self._recheck_commit(h)
        if proposal.HasField("tc"):
            self._process_tc(proposal.tc)
        if hdr.view != self.view:
            return
        if ids and not set(ids).isdisjoint(self.store.uncommitted_tx_ids(hdr.parent_hash)):
            log.warning("no vote for view %d: it repeats a transaction of an uncommitted ancestor", hdr.view)
            return
        tc = proposal.tc if proposal.HasField("tc") else None
        refusal = vote_refusal(
            self.safety, hdr.view, hdr.parent_qc.view, tc.view if tc else None, tc_high_qc_view(tc) if tc else 0
        )
        if refusal is None and hdr.view <= self._sign_floor:
            refusal = "no safety state: not signing before the network is past the views it may have signed in"
        if refusal is not None:
            log.info("no vote for view %d: %s", hdr.view, refusal)
            return
        await self._vote(h, hdr.view, hdr.height)

    async def _vote(self, h: bytes, view: int, height: int) -> None:
        self.safety.last_voted_view = view
        self.safety.high_qc = self.high_qc
        await self._persist()  # before the vote can leave
        vote = chain.make_vote(self.key, h, view, height)
        m.votes_sent.inc()
        # Every replica gets the vote, not only leader(view+1): then a crashed next leader costs
        # one timeout (its own view) instead of two (the QC of this view would die with it), and
        # every replica commits as soon as it sees the QC. n^2 small messages; fine for small n.
        self.network.broadcast_vote(vote)
        self._on_vote_locked(vote)

    async def _persist(self) -> None:
        await self.rt.offload(self.safety_store.save, self.safety)

    # ------------------------------------------------------------------ votes

    async def on_vote(self, vote: consensus_pb2.Vote) -> None:
        checks.check_vote(vote, self.validators)
        async with self.lock:
            # honest replicas send each vote once: a second one in a live view is a replay or an
            # equivocation (refused and counted; a late vote for a certified view is just ignored)
            if vote.view > self.high_qc.view and self.votes.has_voted(vote.view, vote.signature.signer):
                raise Rejected("duplicate_vote", f"a vote by this validator in view {vote.view} was counted already")
            self._on_vote_locked(vote)

    def _on_vote_locked(self, vote: consensus_pb2.Vote) -> None:
        if vote.view <= self.high_qc.view:
            return  # a QC for that view or later exists already
        m.votes_received.inc()
        self._first_vote_at.setdefault((vote.view, vote.block_hash), self.rt.now())
        qc = self.votes.add(vote)
        if qc is not None:
            started = self._first_vote_at.pop((vote.view, vote.block_hash), None)
            if started is not None:
                m.qc_formation.observe(self.rt.now() - started)
            log.debug("QC formed for view %d height %d", qc.view, qc.height)
            self._process_qc(qc)

    # ------------------------------------------------------------------ certificates, views, commits

    def _process_qc(self, qc: types_pb2.QuorumCert) -> None:
        if not qc.votes:
            return
        self.store.add_cert(qc)
        if qc.view > self.high_qc.view:
            self.high_qc = qc
        target = self.store.commit_target(qc)
        if target is not None:
            self._commit(target)
        elif qc.height > self.store.committed_height + WALK_LIMIT:
            self._trigger_catchup()  # far behind: fetch by height, not by walking back
        elif qc.block_hash not in self.store and qc.height > self.store.committed_height:
            # votes often outrun their proposal (which waits for tx checks): give it a moment first
            signers = [v.signer for v in qc.votes if v.signer != self.me]
            self._spawn(self._sync_later(qc.block_hash, signers))
        self._advance(qc.view + 1, "qc")

    def _recheck_commit(self, h: bytes) -> None:
        """A QC for `h` may have formed (from votes) before the block itself arrived."""
        cert = self.store.certs.get(h)
        if cert is not None:
            target = self.store.commit_target(cert)
            if target is not None:
                self._commit(target)

    def _process_tc(self, tc: consensus_pb2.TimeoutCert) -> None:
        if self.last_tc is None or tc.view > self.last_tc.view:
            self.last_tc = tc
        self._advance(tc.view + 1, "tc")

    def _advance(self, view: int, cause: str) -> None:
        if view <= self.view:
            return
        self.view = view
        m.view.set(view)
        m.view_changes.labels(cause=cause).inc()
        busy = len(self.mempool) > 0 or self._has_work()
        self.pacemaker.restart(progress=cause != "tc", wait_s=self.config.min_block_interval_s if busy else None)
        self.votes.prune(view - 2)
        self.timeouts.prune(view - 1)
        self._first_vote_at = {k: t for k, t in self._first_vote_at.items() if k[0] >= view - 2}
        self._maybe_lead()

    def _commit(self, target: bytes) -> None:
        blocks = self.store.chain_to_committed(target)
        if blocks is None:
            log.warning("cannot commit %s yet: ancestors missing", target[:4].hex())
            self._spawn(self.sync.sync(target))
            return
        now = self.rt.now()
        for h, block in blocks:
            qc = self.store.certs.get(h)
            if qc is None:  # cannot happen: a block's child (or the QC) certifies it
                log.error("no certificate for block %s; commit stops", h[:4].hex())
                return
            seen = self.store.seen_at(h)
            self.store.mark_committed(h)
            self.leaders.note_committed(block)
            self.mempool.mark_committed(self.store.tx_ids(h))
            if seen is not None:
                m.commit_latency.observe(now - seen)
            m.committed_blocks.inc()
            m.views_led.labels(validator=self.genesis.name_of(block.header.proposer)).inc()
            m.committed_txs.inc(len(block.txs))
            self._commit_queue.put_nowait((block, qc))
        log.debug("committed up to height %d", self.store.committed_height)
        self.store.prune()
        m.height.set(self.store.committed_height)
        self._mempool_metrics()

    async def _committer(self) -> None:
        """Appends committed blocks to the local ledger, in order, retrying until it takes them."""
        while True:
            block, qc = await self._commit_queue.get()
            backoff = 0.1
            while True:
                try:
                    await self.ledger.append(block, qc)
                    break
                except grpc.aio.AioRpcError as exc:
                    m.append_failures.inc()
                    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                        try:
                            head = await self.ledger.head()
                            if head.height >= block.header.height:
                                break  # already there (e.g. appended before a restart)
                        except grpc.aio.AioRpcError:
                            pass
                    log.error("ledger append of height %d failed: %s %s", block.header.height,
                              exc.code().name, exc.details())
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)  # a returning ledger is used within a second (19.6)
            self.appended_height = block.header.height
            m.appended_height.set(block.header.height)
            if self._commit_queue.empty():
                await self._refresh_schedule()

    async def _refresh_schedule(self) -> None:
        try:
            resp = await self.ledger.leader_schedule()
            changed = self.leaders.update(resp)
        except (grpc.aio.AioRpcError, ValueError) as exc:
            log.debug("leader schedule not refreshed: %s", exc)
            return
        if changed:
            log.info("leader schedule: epoch %d from view %d", resp.epoch, resp.activation_view)
            self._maybe_lead()

    # ------------------------------------------------------------------ timeouts

    async def _on_expiry(self, generation: int) -> None:
        async with self.lock:
            if not self.pacemaker.is_current(generation):
                # the view moved on (a QC or TC) while this handler waited for the lock: the timer
                # that ran out belonged to a view that is over, not to the one now current
                m.stale_timers.inc()
                return
            log.info("view %d timed out (leader %s)", self.view, self.genesis.name_of(self.leaders.leader(self.view)))
            await self._time_out(self.view)

    async def _time_out(self, view: int) -> None:
        if view <= self._sign_floor:
            return  # amnesic start: we may have signed in this view before; the others' TC moves us on
        if view > self.safety.highest_timeout_view:
            self.safety.highest_timeout_view = view
            self.safety.high_qc = self.high_qc
            await self._persist()  # never vote in a view after signing its timeout
        timeout = chain.make_timeout(self.key, view, self.high_qc if self.high_qc.votes else None)
        if self.last_tc is not None and self.last_tc.view >= self.high_qc.view and self.last_tc.view < view:
            # the TC that brought us here: a replica that missed it (lost timeouts) follows us
            # instead of waiting forever in the old view for timeouts nobody sends any more
            timeout.last_tc.CopyFrom(self.last_tc)
        if self._my_timeout is None or self._my_timeout[0].view != view:
            self._my_timeout = (timeout, self.rt.now())
        m.timeouts_sent.inc()
        self.network.broadcast_timeout(timeout)
        await self._on_timeout_locked(timeout)

    async def on_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        await self.rt.offload(checks.check_timeout, timeout, self.validators, self.quorum, self.genesis_hash)
        async with self.lock:
            await self._on_timeout_locked(timeout)

    async def _on_timeout_locked(self, timeout: consensus_pb2.Timeout) -> None:
        if timeout.HasField("high_qc"):
            self._process_qc(timeout.high_qc)
        if timeout.HasField("last_tc"):
            self._process_tc(timeout.last_tc)
        self._echo_timeout(timeout)
        if timeout.view < self.view:
            return
        count, tc = self.timeouts.add(timeout)
        if tc is not None:
            self._process_tc(tc)
        elif count >= self.f + 1 and timeout.view > self.safety.highest_timeout_view:
            # f+1 timeouts: at least one honest replica gave up on that view; join it
            if timeout.view > self.view:
                self.view = timeout.view
                m.view.set(self.view)
                m.view_changes.labels(cause="join").inc()
            await self._time_out(timeout.view)

    def _echo_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        """A peer still timing out in a view we gave up on long ago missed our timeout or the TC
        that followed (lost messages): send it ours again, which carries our high QC and last TC.
        Only then (not when everyone times out together) and at most once per base timeout per
        peer, so this costs nothing on a healthy network and heals a lossy one within one RTT."""
        mine = self._my_timeout
        sender = timeout.signature.signer
        if mine is None or sender == self.me or mine[0].view < timeout.view:
            return
        now = self.rt.now()
        if now - mine[1] < self.config.base_timeout_s / 2:
            return
        if now - self._echoed.get(sender, -1e9) < self.config.base_timeout_s:
            return
        self._echoed[sender] = now
        m.timeouts_sent.inc()
        self.network.send_timeout(sender, mine[0])

    # ------------------------------------------------------------------ proposing

    def _maybe_lead(self) -> None:
        if self.leaders.leader(self.view) == self.me and self._proposed_view < self.view:
            self._spawn(self._lead(self.view))

    def _ready(self, view: int) -> bool:
        """Holds a certificate for the previous view and the block it extends (whose txs it must skip)."""
        entered = self.high_qc.view + 1 == view or (self.last_tc is not None and self.last_tc.view + 1 == view)
        return entered and self.high_qc.block_hash in self.store

    def _has_work(self) -> bool:
        return self._work() is not None

    def _work(self) -> str | None:
        """"new": mempool txs no uncommitted block holds; "chain": none, but txs in the certified
        tip or its parent still need this block (and one more) to commit everywhere; None: idle."""
        tip = self.high_qc.block_hash
        exclude = self.store.uncommitted_tx_ids(tip)
        if self.mempool.has_new(exclude):
            return "new"
        parent = self.store.get(tip)
        if self.store.tx_ids(tip) or (parent and self.store.tx_ids(parent.header.parent_hash)):
            return "chain"
        return None

    async def _lead(self, view: int) -> None:
        started = self.rt.now()
        work_since: float | None = None
        while True:
            async with self.lock:
                if self.view != view or self._proposed_view >= view:
                    return
                self.mempool.changed.clear()  # before looking, so no admission can slip past the wait
                self._block_added.clear()
                ready = self._ready(view)
                work = self._work() if ready else None
            now = self.rt.now()
            if work == "chain":
                break  # nothing new to batch: waiting would only delay the commit of the tip's txs
            if work:
                work_since = work_since or now
                wait = self.config.min_block_interval_s - (now - work_since)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            elif ready:
                wait = self.config.idle_block_s - (now - started)
                if wait <= 0:
                    break
                try:
                    await asyncio.wait_for(self.mempool.changed.wait(), timeout=wait)
                except TimeoutError:
                    pass
            else:  # the QC outran its block (still being checked here): wait for it, not a poll period
                try:
                    await asyncio.wait_for(self._block_added.wait(), timeout=0.05)
                except TimeoutError:
                    pass
        async with self.lock:
            if self.view == view and self._proposed_view < view and self._ready(view):
                await self._propose(view)

    async def _propose(self, view: int) -> None:
        parent_qc = self.high_qc
        exclude = self.store.uncommitted_tx_ids(parent_qc.block_hash)
        batch = self.mempool.batch(self.config.max_block_txs, self.config.max_block_bytes, exclude)
        ids = [i for i, _ in batch]
        parent = self.store.get(parent_qc.block_hash)
        assert parent is not None  # _ready() waited for it
        now_ms = self.rt.wall_ms()
        header = types_pb2.BlockHeader(
            chain_id=self.chain_id,
            height=parent_qc.height + 1,
            view=view,
            parent_hash=parent_qc.block_hash,
            proposer=self.me,
            txs_root=merkle_root(ids),
            timestamp_ms=max(now_ms, parent.header.timestamp_ms),
        )
        if parent_qc.votes:
            header.parent_qc.CopyFrom(parent_qc)
        block = chain.sign_block(self.key, types_pb2.Block(header=header, txs=[tx for _, tx in batch]))
        proposal = consensus_pb2.Proposal(block=block)
        if parent_qc.view + 1 != view:
            assert self.last_tc is not None and self.last_tc.view + 1 == view
            proposal.tc.CopyFrom(self.last_tc)
        self._proposed_view = view
        log.debug("proposing view %d height %d with %d txs%s", view, header.height, len(batch),
                  " and a TC" if proposal.HasField("tc") else "")
        m.proposals.inc()
        self.network.broadcast_proposal(proposal)
        await self._on_proposal_locked(proposal, chain.block_hash(header), ids)

    # ------------------------------------------------------------------ sync

    async def _sync_later(self, block_hash: bytes, prefer: list[bytes]) -> None:
        await asyncio.sleep(SYNC_GRACE_S)
        if block_hash not in self.store and block_hash not in self._syncing:
            self._syncing.add(block_hash)
            try:
                await self.sync.sync(block_hash, prefer=prefer)
            finally:
                self._syncing.discard(block_hash)

    def _trigger_catchup(self) -> None:
        now = self.rt.now()
        if self.catchup.running or now - self._catchup_at < CATCHUP_MIN_GAP_S:
            return
        self._catchup_at = now
        self._spawn(self.catchup.run())

    async def _deliver_committed(self, items: list[Committed]) -> None:
        """Blocks proven committed by catch-up: commit them here (ledger appends follow in order)."""
        while self.store.committed_height - self.appended_height > CATCHUP_BACKLOG:
            await asyncio.sleep(0.05)  # let the ledger keep up: the commit queue holds whole blocks
        async with self.lock:
            last: Committed | None = None
            for c in items:
                hdr = c.block.header
                if hdr.height <= self.store.committed_height:
                    continue  # committed meanwhile by the live path
                if last is None and (hdr.height != self.store.committed_height + 1
                                     or hdr.parent_hash != self.store.committed_hash):
                    log.error("catch-up: block at height %d does not extend our committed tip", hdr.height)
                    return
                self.store.add(c.block, c.block_hash, c.tx_ids)
                self.store.add_cert(c.qc)
                last = c
            if last is None:
                return
            self._commit(last.block_hash)
            self._process_qc(last.qc)

    async def fetch_range(
        self, from_height: int, max_blocks: int, max_bytes: int
    ) -> tuple[list[types_pb2.Block], list[types_pb2.QuorumCert]]:
        """Serve a peer's forward catch-up: committed blocks from our ledger, oldest first."""
        stored = await self.ledger.blocks(from_height, max_blocks)
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

    def _validate_fetched(self, block: types_pb2.Block) -> tuple[bytes, list[bytes]]:
        return checks.check_block(block, self.chain_id, self.validators, self.quorum, self.genesis_hash)

    async def _deliver_synced(self, blocks: list[tuple[types_pb2.Block, bytes, list[bytes]]]) -> None:
        async with self.lock:
            for block, h, ids in blocks:
                if block.header.height <= self.store.committed_height or block.header.parent_hash not in self.store:
                    continue
                self.store.add(block, h, ids)
                self._block_added.set()
                self._process_qc(block.header.parent_qc)
                self._recheck_commit(h)

    async def fetch_blocks(self, block_hash: bytes, max_blocks: int) -> list[types_pb2.Block]:
        """Serve a peer's walk back from `block_hash` (memory first, then the ledger)."""
        out: list[types_pb2.Block] = []
        h = block_hash
        while len(out) < max_blocks and h != self.genesis_hash:
            block = self.store.get(h)
            if block is None:
                stored = await self.ledger.block_by_hash(h)
                if stored is None:
                    break
                block = stored.block
            out.append(block)
            h = block.header.parent_hash
        return out

    # ------------------------------------------------------------------ transactions

    async def submit(self, txs: list[types_pb2.Transaction], gossip: bool) -> list[consensus_pb2.TxAdmission]:
        if self._admitting and self._admitting + len(txs) > self.config.admission_backlog_txs:
            # shed load rather than queue it: a backlog of signature checks delays nothing but
            # itself (proposals have their own pool), yet it grows latency for every tx behind it
            m.rejected_txs.labels(reason="busy").inc(len(txs))
            reason = (f"resource_exhausted: busy ({self._admitting} transactions being admitted, at most "
                      f"{self.config.admission_backlog_txs}); retry shortly")
            return [consensus_pb2.TxAdmission(reason=reason) for _ in txs]
        self._admitting += len(txs)
        try:
            return await self._admit(txs, gossip)
        finally:
            self._admitting -= len(txs)

    async def _admit(self, txs: list[types_pb2.Transaction], gossip: bool) -> list[consensus_pb2.TxAdmission]:
        ids = await self.rt.offload_bulk(checks.tx_ids, txs)
        results = [consensus_pb2.TxAdmission(tx_id=i) for i in ids]
        todo: list[int] = []
        seen: set[bytes] = set()
        for k, (tx_id, tx) in enumerate(zip(ids, txs, strict=True)):
            size = tx.ByteSize()
            reason = self.mempool.refusal(tx_id, size, tx.sender)
            if reason is None and tx_id in seen:
                reason = "duplicate: twice in this request"
            if reason is None and size > self.config.max_block_bytes:
                # it could never be proposed: refuse it now rather than hold and gossip it for ever
                reason = f"too_large: {size} bytes, over the block limit of {self.config.max_block_bytes} bytes"
            if reason is None and (extra := codec.unknown_fields(tx)):
                reason = f"malformed: unknown protobuf fields in {', '.join(extra[:3])} (not covered by the signature)"
            body = tx.WhichOneof("body")
            if reason is None and body is None:
                reason = "malformed: a transaction without a known body (no rule admits it)"
            if reason is None and body in PARTICIPANT_BODIES and tx.sender not in self.participants:
                # before the costly proof check: only genesis participants may submit proofs (and masks)
                reason = f"unknown_signer: {body} by a key that is not a genesis participant"
            if reason is None and body == "payload" and tx.sender not in self.members:
                # a payload changes no state: only genesis members may spend block space on one
                reason = "unknown_signer: payload by a key that is not a genesis member"
            seen.add(tx_id)
            if reason is None:
                todo.append(k)
            else:
                results[k].reason = reason
        refusals = await self.checker.refusals([txs[k] for k in todo], [ids[k] for k in todo], bulk=True)
        admitted: list[types_pb2.Transaction] = []
        for k, refusal in zip(todo, refusals, strict=True):
            reason = refusal or self.mempool.add(ids[k], txs[k])
            if reason is None:
                results[k].admitted = True
                admitted.append(txs[k])
            else:
                results[k].reason = reason
        for r in results:
            if not r.admitted:
                m.rejected_txs.labels(reason=r.reason.split(":", 1)[0]).inc()
        m.admitted_txs.inc(len(admitted))
        self._mempool_metrics()
        if gossip and admitted:
            self.network.gossip(consensus_pb2.SubmitTxRequest(txs=admitted))
        return results

    async def _regossip(self) -> None:
        """Gossip again the transactions that have waited a whole period: their first gossip may
        have been lost (partition) and this replica may not lead soon (or at all, if the leader
        skip rule passes it over), so without this they could sit here for ever. At most one
        block's worth of bytes per period, the least re-gossiped first: a pool of stale
        transactions costs the network a bounded rate, not its whole size every few seconds."""
        period = max(2 * self.config.base_timeout_s, 4 * self.config.idle_block_s)
        waiting: set[bytes] = set()
        times: dict[bytes, int] = {}  # how often each waiting transaction was gossiped again
        while True:
            await asyncio.sleep(period)
            async with self.lock:
                pending = self.store.uncommitted_tx_ids(self.high_qc.block_hash)
                candidates = [(tx_id, tx) for tx_id, tx in self.mempool.items()
                              if tx_id in waiting and tx_id not in pending]
                waiting = {tx_id for tx_id, _ in self.mempool.items()}
            times = {tx_id: n for tx_id, n in times.items() if tx_id in waiting}
            candidates.sort(key=lambda item: times.get(item[0], 0))  # stable: oldest first among equals
            stale, budget = [], self.config.max_block_bytes
            for tx_id, tx in candidates:
                budget -= tx.ByteSize()
                if budget < 0:
                    break
                stale.append(tx)
                times[tx_id] = times.get(tx_id, 0) + 1
            for i in range(0, len(stale), REGOSSIP_BATCH):
                m.regossiped_txs.inc(len(stale[i : i + REGOSSIP_BATCH]))
                self.network.gossip(consensus_pb2.SubmitTxRequest(txs=stale[i : i + REGOSSIP_BATCH]))

    def _mempool_metrics(self) -> None:
        m.mempool_txs.set(len(self.mempool))
        m.mempool_bytes.set(self.mempool.bytes)

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

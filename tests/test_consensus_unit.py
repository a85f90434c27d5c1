"""Unit tests of the consensus replica's parts: safety rules, aggregation, commit rule, mempool, leaders.

The Core tests run the real Core with an in-test ledger double (records appends) and a network
double (records sends); everything else (signatures, certificates, the safety file) is real.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from chain_factory import Fixture, make_genesis, make_qc
from ledger_process import free_port

from services.consensus import blockstore, checks
from services.consensus.aggregator import TimeoutAggregator, VoteAggregator, tc_high_qc_view
from services.consensus.blockstore import BlockStore
from services.consensus.clients import TxChecker
from services.consensus.core import Config, Core
from services.consensus.leader import LeaderElector
from services.consensus.mempool import Mempool
from services.consensus.safety import SafetyState, SafetyStore, vote_refusal
from zkpot import chain, refusal, schedule
from zkpot.codec import merkle_root
from zkpot.refusal import Refusal
from zkpot.v1 import consensus_pb2, ledger_pb2, types_pb2

# ------------------------------------------------------------------ helpers


def genesis_hash(fx: Fixture) -> bytes:
    return chain.block_hash(fx.genesis.block().header)


def make_block(
    fx: Fixture, view: int, height: int, parent_hash: bytes, parent_qc: types_pb2.QuorumCert | None = None,
    txs: list[types_pb2.Transaction] | None = None, ts: int | None = None,
) -> types_pb2.Block:
    txs = txs or []
    header = types_pb2.BlockHeader(
        chain_id=fx.genesis.chain_id, height=height, view=view, parent_hash=parent_hash,
        txs_root=merkle_root(chain.tx_id(t) for t in txs), timestamp_ms=ts or int(time.time() * 1000),
    )
    if parent_qc is not None:
        header.parent_qc.CopyFrom(parent_qc)
    leader = fx.validator_keys[view % len(fx.validator_keys)]  # genesis order, round robin
    return chain.sign_block(leader, types_pb2.Block(header=header, txs=txs))


def qc_for(fx: Fixture, block: types_pb2.Block, signers: int = 3) -> types_pb2.QuorumCert:
    h = chain.block_hash(block.header)
    return make_qc(fx.validator_keys[:signers], h, block.header.view, block.header.height)


class LedgerDouble:
    target = "ledger-double"

    def __init__(self, fx: Fixture) -> None:
        self.fx = fx
        self.appended: list[tuple[types_pb2.Block, types_pb2.QuorumCert]] = []

    async def head(self) -> ledger_pb2.HeadResponse:
        return ledger_pb2.HeadResponse(height=0, chain_id=self.fx.genesis.chain_id)

    async def leader_schedule(self) -> ledger_pb2.LeaderScheduleResponse:
        return ledger_pb2.LeaderScheduleResponse(leaders=[v.public_key for v in self.fx.genesis.validators])

    async def append(self, block: types_pb2.Block, qc: types_pb2.QuorumCert) -> ledger_pb2.AppendResponse:
        self.appended.append((block, qc))
        return ledger_pb2.AppendResponse(height=block.header.height)


class NetworkDouble:
    peers: dict = {}

    def __init__(self) -> None:
        self.votes: list[consensus_pb2.Vote] = []
        self.proposals: list[consensus_pb2.Proposal] = []
        self.timeouts: list[consensus_pb2.Timeout] = []

    def broadcast_vote(self, vote: consensus_pb2.Vote) -> None:
        self.votes.append(vote)

    def broadcast_proposal(self, proposal: consensus_pb2.Proposal) -> None:
        self.proposals.append(proposal)

    def broadcast_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        self.timeouts.append(timeout)

    def gossip(self, req: consensus_pb2.SubmitTxRequest) -> None:
        pass

    async def fetch_blocks(self, key: bytes, block_hash: bytes, max_blocks: int) -> list:
        return []

    async def fetch_range(self, key: bytes, from_height: int, max_blocks: int, max_bytes: int) -> tuple[list, list]:
        return [], []

    async def status(self, key: bytes) -> consensus_pb2.StatusResponse:
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())


def make_core(fx: Fixture, data_dir: Path, me: int = 0) -> tuple[Core, LedgerDouble, NetworkDouble]:
    ledger, net = LedgerDouble(fx), NetworkDouble()
    # long timers: no timeout fires during a unit test
    config = Config(data_dir=data_dir, idle_block_s=30, base_timeout_s=30)
    core = Core(config, fx.genesis, fx.validator_keys[me], ledger, net, TxChecker(None))  # type: ignore[arg-type]
    return core, ledger, net


@pytest.fixture(scope="module")
def fx() -> Fixture:
    return make_genesis(n_validators=4, n_participants=4)


# ------------------------------------------------------------------ safety rules


def test_vote_rule() -> None:
    s = SafetyState(last_voted_view=5, highest_timeout_view=0)
    assert vote_refusal(s, 6, 5, None, 0) is None               # happy path: view follows the parent QC
    assert vote_refusal(s, 5, 4, None, 0) is not None           # already voted in view 5
    assert vote_refusal(s, 4, 3, None, 0) is not None           # older view
    assert vote_refusal(s, 8, 5, None, 0) is not None           # gap without a TC
    assert vote_refusal(s, 8, 5, 7, 5) is None                  # TC for view 7, parent QC as high as the TC's
    assert vote_refusal(s, 8, 5, 7, 6) is not None              # parent QC below the TC's highest QC
    assert vote_refusal(s, 8, 5, 6, 5) is not None              # TC for the wrong view
    timed_out = SafetyState(last_voted_view=5, highest_timeout_view=6)
    assert vote_refusal(timed_out, 6, 5, None, 0) is not None   # signed a timeout for view 6: no vote there
    assert vote_refusal(timed_out, 7, 5, 6, 5) is None


def test_safety_store_round_trip(tmp_path: Path, fx: Fixture) -> None:
    store = SafetyStore(tmp_path)
    assert store.load() == SafetyState()
    b1 = make_block(fx, 1, 1, genesis_hash(fx))
    state = SafetyState(last_voted_view=7, highest_timeout_view=9, high_qc=qc_for(fx, b1))
    store.save(state)
    assert SafetyStore(tmp_path).load() == state
    assert not list(tmp_path.glob("*.tmp"))


def test_no_double_vote_across_restart(tmp_path: Path, fx: Fixture) -> None:
    a = make_block(fx, 1, 1, genesis_hash(fx), ts=1_700_000_000_001)
    b = make_block(fx, 1, 1, genesis_hash(fx), ts=1_700_000_000_002)  # the leader equivocates in view 1
    assert chain.block_hash(a.header) != chain.block_hash(b.header)

    async def first_life() -> list[consensus_pb2.Vote]:
        core, _, net = make_core(fx, tmp_path)
        await core.start()
        await core.on_proposal(consensus_pb2.Proposal(block=a))
        await core.on_proposal(consensus_pb2.Proposal(block=b))  # same view: no second vote
        await core.stop()
        return net.votes

    votes = asyncio.run(first_life())
    assert [(v.view, v.block_hash) for v in votes] == [(1, chain.block_hash(a.header))]
    assert chain.vote_signature_ok(votes[0])

    async def second_life() -> tuple[list[consensus_pb2.Vote], int]:
        core, _, net = make_core(fx, tmp_path)  # restarted from the persisted safety state
        await core.start()
        await core.on_proposal(consensus_pb2.Proposal(block=b))
        await core.on_proposal(consensus_pb2.Proposal(block=a))
        await core.stop()
        return net.votes, core.safety.last_voted_view

    votes2, last = asyncio.run(second_life())
    assert votes2 == []
    assert last == 1


# ------------------------------------------------------------------ certificates and aggregation


def test_qc_checks_reject_duplicate_and_short(fx: Fixture) -> None:
    b1 = make_block(fx, 1, 1, genesis_hash(fx))
    good = qc_for(fx, b1)
    checks.check_qc(good, fx.genesis.validator_keys, 3, genesis_hash(fx))
    dup = types_pb2.QuorumCert()
    dup.CopyFrom(good)
    dup.votes[2].CopyFrom(dup.votes[0])  # 3 votes, two from one signer
    with pytest.raises(checks.Rejected, match="duplicate"):
        checks.check_qc(dup, fx.genesis.validator_keys, 3, genesis_hash(fx))
    short = qc_for(fx, b1, signers=2)
    with pytest.raises(checks.Rejected, match="quorum"):
        checks.check_qc(short, fx.genesis.validator_keys, 3, genesis_hash(fx))
    forged = types_pb2.QuorumCert()
    forged.CopyFrom(good)
    forged.view = 2  # the votes were for view 1
    with pytest.raises(checks.Rejected, match="signature"):
        checks.check_qc(forged, fx.genesis.validator_keys, 3, genesis_hash(fx))
    empty_not_genesis = types_pb2.QuorumCert(block_hash=chain.block_hash(b1.header), view=1, height=1)
    with pytest.raises(checks.Rejected):
        checks.check_qc(empty_not_genesis, fx.genesis.validator_keys, 3, genesis_hash(fx))


def test_vote_aggregator_counts_each_signer_once(fx: Fixture) -> None:
    agg = VoteAggregator(fx.genesis.validator_keys, 3)
    h = b"\x11" * 32
    v0, v1, v2 = (chain.make_vote(k, h, 4, 2) for k in fx.validator_keys[:3])
    assert agg.add(v0) is None
    assert agg.add(v0) is None  # a repeat never counts
    other = chain.make_vote(fx.validator_keys[1], b"\x22" * 32, 4, 2)
    assert agg.add(other) is None  # signer 1 equivocates: its first vote in view 4 ...
    assert agg.add(v1) is None    # ... so this one does not count either
    assert agg.votes_for(4, h, 2) == 1
    assert agg.add(v2) is None
    qc = agg.add(chain.make_vote(fx.validator_keys[3], h, 4, 2))
    assert qc is not None and len(qc.votes) == 3
    chain.check_qc(qc, fx.genesis.validator_keys, 3)
    assert agg.add(chain.make_vote(fx.validator_keys[1], h, 4, 2)) is None  # QC reported once
    with pytest.raises(ValueError):
        from zkpot.crypto import KeyPair

        agg.add(chain.make_vote(KeyPair.generate(), h, 4, 2))


def test_timeout_aggregator_and_tc_check(fx: Fixture) -> None:
    b1 = make_block(fx, 1, 1, genesis_hash(fx))
    qc1 = qc_for(fx, b1)
    agg = TimeoutAggregator(fx.genesis.validator_keys, 3)
    t0 = chain.make_timeout(fx.validator_keys[0], 3, qc1)
    t1 = chain.make_timeout(fx.validator_keys[1], 3, None)
    assert agg.add(t0) == (1, None)
    assert agg.add(t0) == (1, None)
    assert agg.add(t1) == (2, None)
    count, tc = agg.add(chain.make_timeout(fx.validator_keys[2], 3, None))
    assert count == 3 and tc is not None
    checks.check_tc(tc, fx.genesis.validator_keys, 3)
    assert tc_high_qc_view(tc) == 1
    short = consensus_pb2.TimeoutCert(view=3, timeouts=list(tc.timeouts)[:2])
    with pytest.raises(checks.Rejected):
        checks.check_tc(short, fx.genesis.validator_keys, 3)
    dup = consensus_pb2.TimeoutCert(view=3, timeouts=[tc.timeouts[0], tc.timeouts[0], tc.timeouts[1]])
    with pytest.raises(checks.Rejected, match="duplicate"):
        checks.check_tc(dup, fx.genesis.validator_keys, 3)


# ------------------------------------------------------------------ commit rule


def test_commit_rule_needs_consecutive_views(fx: Fixture) -> None:
    g = fx.genesis.block()
    gh = genesis_hash(fx)
    store = BlockStore(g, gh, None)
    b1 = make_block(fx, 1, 1, gh)
    h1 = store.add(b1)
    q1 = qc_for(fx, b1)
    b2 = make_block(fx, 3, 2, h1, q1)  # view 3: view 2 timed out
    h2 = store.add(b2)
    q2 = qc_for(fx, b2)
    assert store.commit_target(q2) is None  # b2.view != b1.view + 1: b1 not committed yet
    b3 = make_block(fx, 4, 3, h2, q2)
    store.add(b3)
    q3 = qc_for(fx, b3)
    assert store.commit_target(q3) == h2  # consecutive views 3, 4: commits b2 (and b1 below it)
    assert [h for h, _ in store.chain_to_committed(h2)] == [h1, h2]
    assert store.certs[h1] == q1 and store.certs[h2] == q2


def test_prune_keeps_the_committed_window_and_drops_forks_at_or_below_the_committed_height(fx: Fixture) -> None:
    """Pruning (every commit) drops committed blocks older than KEEP_COMMITTED and every fork block
    at or below the committed height, and nothing else: the blocks above, forks among them, and
    the committed window that peers fetch from."""
    keep = blockstore.KEEP_COMMITTED
    store = BlockStore(fx.genesis.block(), genesis_hash(fx), None)
    main: list[bytes] = [genesis_hash(fx)]
    forks: dict[int, bytes] = {}
    parent_qc = None
    for height in range(1, keep + 12):
        block = make_block(fx, height, height, main[-1], parent_qc)
        main.append(store.add(block))
        parent_qc = qc_for(fx, block)
        if height % 50 == 0 or height > keep + 5:  # a competing block at this height (another view)
            forks[height] = store.add(make_block(fx, height + 10_000, height, main[-2], None))
    committed = keep + 8
    for h in main[1 : committed + 1]:
        store.mark_committed(h)
    store.prune()
    kept = set(main[committed - keep :])  # the committed window (heights >= committed - keep) and above
    assert all(h in store for h in kept)
    assert not any(h in store for h in main[: committed - keep])
    assert all((h in store) == (height > committed) for height, h in forks.items())
    assert len(store) == len(kept) + sum(1 for height in forks if height > committed)
    # the next commit prunes one more committed block, and the fork at its height
    store.mark_committed(main[committed + 1])
    store.prune()
    assert main[committed - keep] not in store and main[committed + 1 - keep] in store
    assert forks[committed + 1] not in store and forks[committed + 2] in store


def test_core_commits_in_height_order_with_certifying_qcs(tmp_path: Path, fx: Fixture) -> None:
    gh = genesis_hash(fx)
    b1 = make_block(fx, 1, 1, gh)
    q1 = qc_for(fx, b1)
    timeouts = [chain.make_timeout(k, 2, q1) for k in fx.validator_keys[1:4]]
    tc2 = consensus_pb2.TimeoutCert(view=2, timeouts=timeouts)
    b2 = make_block(fx, 3, 2, chain.block_hash(b1.header), q1)
    q2 = qc_for(fx, b2)
    b3 = make_block(fx, 4, 3, chain.block_hash(b2.header), q2)
    q3 = qc_for(fx, b3)
    b4 = make_block(fx, 5, 4, chain.block_hash(b3.header), q3)

    async def run() -> tuple[list, list, Core, list]:
        core, ledger, net = make_core(fx, tmp_path, me=3)
        await core.start()
        await core.on_proposal(consensus_pb2.Proposal(block=b1))
        await core.on_proposal(consensus_pb2.Proposal(block=b2, tc=tc2))  # entered by TC: votes (rule 2)
        after_b3 = None
        await core.on_proposal(consensus_pb2.Proposal(block=b3))
        after_b3 = list(ledger.appended)
        await core.on_proposal(consensus_pb2.Proposal(block=b4))
        await asyncio.sleep(0.1)  # the committer task appends
        await core.stop()
        return after_b3, ledger.appended, core, net.votes

    after_b3, appended, core, votes = asyncio.run(run())
    assert [v.view for v in votes] == [1, 3, 4, 5]
    assert after_b3 == []  # b2 (view 3) certified on top of b1 (view 1): not a 2-chain of consecutive views
    assert [(b.header.height, qc.view) for b, qc in appended] == [(1, 1), (2, 3)]
    assert appended[0][1] == q1 and appended[1][1] == q2
    assert core.store.committed_height == 2


def test_schedule_is_asked_for_only_when_an_append_names_another_epoch(tmp_path: Path, fx: Fixture) -> None:
    """Each append's response names the schedule's epoch after its block: the replica calls
    LeaderSchedule when that differs from its own (a round closed) or the response cannot tell (an
    older ledger, a replayed block), not after every block (issue 22: ~1 ms of CPU per view)."""
    gh = genesis_hash(fx)
    blocks, parent, qc = [], gh, None
    for v in range(1, 7):  # consecutive views: block k commits when block k+2 arrives
        b = make_block(fx, v, v, parent, qc)
        blocks.append(b)
        parent, qc = chain.block_hash(b.header), qc_for(fx, b)
    validators = [v.public_key for v in fx.genesis.validators]

    class ScriptedLedger(LedgerDouble):
        def __init__(self, fx: Fixture) -> None:
            super().__init__(fx)
            self.asked = 0
            self.epoch = 0
            # per appended height: the response's schedule_epoch (None: a ledger without the field)
            self.script: dict[int, int | None] = {1: 0, 2: 1, 3: 1, 4: None}

        async def leader_schedule(self) -> ledger_pb2.LeaderScheduleResponse:
            self.asked += 1
            return ledger_pb2.LeaderScheduleResponse(epoch=self.epoch, activation_view=1000, leaders=validators,
                                                     previous_leaders=validators)

        async def append(self, block: types_pb2.Block, qc: types_pb2.QuorumCert) -> ledger_pb2.AppendResponse:
            resp = await super().append(block, qc)
            epoch = self.script[block.header.height]
            if epoch is not None:
                self.epoch = epoch
                resp.schedule_epoch = epoch
            return resp

    async def run() -> list[int]:
        ledger, net = ScriptedLedger(fx), NetworkDouble()
        config = Config(data_dir=tmp_path, idle_block_s=30, base_timeout_s=30)
        core = Core(config, fx.genesis, fx.validator_keys[3], ledger, net, TxChecker(None))  # type: ignore[arg-type]
        await core.start()
        asked = [ledger.asked]  # once at start
        for b in blocks:
            await core.on_proposal(consensus_pb2.Proposal(block=b))
            await asyncio.sleep(0.05)  # the committer appends
            asked.append(ledger.asked)
        assert core.leaders.schedule.epoch == 1
        await core.stop()
        return asked

    asked = asyncio.run(run())
    # appends: height 1 after block 3 (epoch 0: ours), 2 after 4 (epoch 1: ask), 3 after 5 (epoch 1:
    # ours now), 4 after 6 (no epoch in the reply: ask)
    assert asked == [1, 1, 1, 1, 2, 2, 3]


def test_proposal_from_wrong_leader_is_rejected(tmp_path: Path, fx: Fixture) -> None:
    b1 = make_block(fx, 1, 1, genesis_hash(fx))
    b1.header.view = 2  # now leader(2) should have signed it; re-sign with the view-1 leader
    chain.sign_block(fx.validator_keys[1], b1)

    async def run() -> None:
        core, _, net = make_core(fx, tmp_path)
        await core.start()
        try:
            with pytest.raises(checks.Rejected, match="leader"):
                await core.on_proposal(consensus_pb2.Proposal(block=b1))
            assert net.votes == []
        finally:
            await core.stop()

    asyncio.run(run())


# ------------------------------------------------------------------ mempool and leaders


def test_mempool_dedupe_caps_and_batches(fx: Fixture) -> None:
    pool = Mempool(max_txs=3, max_bytes=10_000)
    txs = [fx.payload(bytes([i]) * 100) for i in range(5)]
    ids = [chain.tx_id(t) for t in txs]
    assert pool.add(ids[0], txs[0]) is None
    assert pool.add(ids[0], txs[0]).reason == refusal.DUPLICATE
    assert pool.add(ids[1], txs[1]) is None
    assert pool.add(ids[2], txs[2]) is None
    assert pool.add(ids[3], txs[3]).reason == refusal.BUSY  # count cap
    assert len(pool) == 3
    assert [i for i, _ in pool.batch(10, 10_000, exclude={ids[1]})] == [ids[0], ids[2]]
    assert [i for i, _ in pool.batch(1, 10_000, exclude=set())] == [ids[0]]
    size = txs[0].ByteSize()
    assert len(pool.batch(10, 2 * size, exclude=set())) == 2  # byte cap of a block
    pool.mark_committed([ids[0]])
    assert len(pool) == 2 and ids[0] not in pool
    assert pool.add(ids[0], txs[0]) == Refusal(refusal.DUPLICATE, "already committed")
    small = Mempool(max_txs=100, max_bytes=size + 10)
    assert small.add(ids[0], txs[0]) is None
    assert small.add(ids[1], txs[1]).reason == refusal.BUSY  # byte cap
    assert small.bytes == size


def test_leader_elector_follows_ledger_schedule(fx: Fixture) -> None:
    keys = [v.public_key for v in fx.genesis.validators]
    el = LeaderElector(keys)
    assert [el.leader(v) for v in range(4)] == keys
    ranked = [keys[2], keys[0], keys[3], keys[1]]
    el.update(ledger_pb2.LeaderScheduleResponse(
        epoch=1, activation_view=20, leaders=ranked, scores=[30, 20, 0, 0],
        previous_leaders=keys, previous_activation_view=0,
    ))
    expect = schedule.Schedule(1, 20, tuple(ranked), (30, 20, 0, 0), tuple(keys), 0)
    for v in (5, 19, 20, 21, 25):
        assert el.leader(v) == schedule.leader_for_view(expect, v)
    assert el.leader(19) == keys[19 % 4] and el.leader(20) == keys[2]
    with pytest.raises(ValueError):
        el.update(ledger_pb2.LeaderScheduleResponse(leaders=[b"\x01" * 32]))


def _header_block(view: int, parent_qc_view: int, height: int) -> types_pb2.Block:
    return types_pb2.Block(header=types_pb2.BlockHeader(
        view=view, height=height, parent_qc=types_pb2.QuorumCert(view=parent_qc_view)))


def test_leader_elector_skips_a_leader_that_failed_in_this_epoch(fx: Fixture) -> None:
    from services.consensus.leader import SKIP_LAG

    keys = [v.public_key for v in fx.genesis.validators]
    el = LeaderElector(keys)
    el.note_committed(_header_block(5, 4, 5))   # no gap: nobody failed
    assert [el.leader(v) for v in range(40, 44)] == keys
    el.note_committed(_header_block(7, 5, 6))   # view 6 ended by a TC: keys[6 % 4] failed
    failed = keys[2]
    assert all(el.leader(v) == keys[v % 4] for v in range(7, 7 + SKIP_LAG))  # evidence not yet in force
    later = [v for v in range(7 + SKIP_LAG, 7 + SKIP_LAG + 12) if v % 4 == 2]
    assert later and all(el.leader(v) == keys[3] for v in later)  # the next in order stands in
    assert all(el.leader(v) == keys[v % 4] for v in range(7 + SKIP_LAG, 60) if v % 4 != 2)
    el.note_committed(_header_block(7, 5, 6))   # the same height again: no double count
    el.note_committed(_header_block(30, 28, 7))  # a second failure (view 29, keys[1]): more than f
    assert el.leader(29) == keys[1]
    assert all(el.leader(v) == keys[v % 4] for v in range(30 + SKIP_LAG, 60))  # two > f: plain rotation
    assert any(el.leader(v) == failed for v in range(30 + SKIP_LAG, 60))
    # a new epoch forgives: evidence from the old one does not count there
    el.update(ledger_pb2.LeaderScheduleResponse(
        epoch=1, activation_view=100, leaders=keys, scores=[0, 0, 0, 0],
        previous_leaders=keys, previous_activation_view=0,
    ))
    assert [el.leader(v) for v in range(100, 108)] == [keys[(v - 100) % 4] for v in range(100, 108)]


# ------------------------------------------------------------------ transaction checks (verifier double)


def test_tx_checker_batches_caches_and_refuses(fx: Fixture) -> None:
    import grpc

    from zkpot.v1 import verifier_pb2, verifier_pb2_grpc

    calls: list[int] = []

    class VerifierDouble(verifier_pb2_grpc.VerifierServicer):
        async def Verify(self, request, context):
            calls.append(len(request.txs))
            await asyncio.sleep(0.2)
            out = verifier_pb2.VerifyResponse()
            for tx in request.txs:
                ok = tx.submit_proof.claimed_correct >= 10
                out.results.add(tx_id=chain.tx_id(tx), valid=ok,
                                reason=refusal.ACCEPTED if ok else refusal.CLAIM_MISMATCH, detail="double")
            return out

    good, bad = fx.submit(0, round_=1, claimed=20), fx.submit(1, round_=1, claimed=3)
    forged = fx.submit(2, round_=1, claimed=20)
    forged.submit_proof.claimed_correct = 25  # changed after signing
    payload = fx.payload(b"p")
    txs = [good, bad, forged, payload]
    ids = [chain.tx_id(t) for t in txs]

    async def run() -> tuple[list, list, list]:
        server = grpc.aio.server()
        verifier_pb2_grpc.add_VerifierServicer_to_server(VerifierDouble(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        checker = TxChecker(f"127.0.0.1:{port}")
        try:
            # two concurrent checks of the same txs (gossip and proposal): one Verify call
            first, second = await asyncio.gather(checker.refusals(txs, ids), checker.refusals(txs, ids))
            third = await checker.refusals(txs, ids)  # cached: no call
            return first, second, third
        finally:
            await checker.close()
            await server.stop(0)

    first, second, third = asyncio.run(run())
    assert calls == [2]  # the forged tx never reaches the verifier (bad signature), the payload needs none
    for result in (first, second, third):
        assert result[0] is None
        assert result[1] == Refusal(refusal.CLAIM_MISMATCH, "double")  # the verifier's reason, passed on
        assert result[2].reason == refusal.BAD_SIGNATURE
        assert result[3] is None

    async def unavailable() -> list:
        checker = TxChecker(f"127.0.0.1:{free_port()}")
        try:
            return await checker.refusals([good], [ids[0]])
        finally:
            await checker.close()

    assert asyncio.run(unavailable())[0].reason == refusal.VERIFIER_UNAVAILABLE


def test_core_rejects_unknown_signers_and_bad_signatures(tmp_path: Path, fx: Fixture) -> None:
    from zkpot.crypto import KeyPair

    stranger = KeyPair.generate()
    b1 = make_block(fx, 1, 1, genesis_hash(fx))
    h1 = chain.block_hash(b1.header)

    async def run() -> None:
        core, _, _ = make_core(fx, tmp_path)
        await core.start()
        try:
            with pytest.raises(checks.Rejected, match="unknown_signer"):
                await core.on_vote(chain.make_vote(stranger, h1, 1, 1))
            forged = chain.make_vote(fx.validator_keys[1], h1, 1, 1)
            forged.view = 2
            with pytest.raises(checks.Rejected, match="bad_signature"):
                await core.on_vote(forged)
            with pytest.raises(checks.Rejected, match="unknown_signer"):
                await core.on_timeout(chain.make_timeout(stranger, 1, None))
            not_validator = make_block(fx, 1, 1, genesis_hash(fx))
            chain.sign_block(stranger, not_validator)
            with pytest.raises(checks.Rejected, match="unknown_signer"):
                await core.on_proposal(consensus_pb2.Proposal(block=not_validator))
            tampered = types_pb2.Block()
            tampered.CopyFrom(b1)
            tampered.header.timestamp_ms += 1
            with pytest.raises(checks.Rejected, match="bad_signature"):
                await core.on_proposal(consensus_pb2.Proposal(block=tampered))
            assert core.safety.last_voted_view == 0
        finally:
            await core.stop()

    asyncio.run(run())


def test_a_signature_is_verified_once_even_when_two_copies_arrive_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gossip copy and the proposal copy of a tx often arrive while the other is being
    checked: the second waits for the first check instead of verifying again; a bad signature is
    refused for both."""
    fx = make_genesis(n_validators=4, n_participants=1)
    good = [fx.payload(bytes([i]) * 4) for i in range(20)]
    bad = fx.payload(b"bad")
    bad.nonce += 1_000  # the signature no longer covers it
    txs = [*good, bad]
    ids = checks.tx_ids(txs)
    calls: list[bytes] = []
    real = chain.tx_signature_ok

    def counting(tx: types_pb2.Transaction, tx_id: bytes | None = None) -> bool:
        calls.append(tx_id or b"")
        time.sleep(0.001)  # long enough for the second copy to arrive mid-check
        return real(tx, tx_id)

    monkeypatch.setattr(chain, "tx_signature_ok", counting)
    checker = TxChecker(None)

    async def both() -> list[list[str | None]]:
        return await asyncio.gather(checker.refusals(txs, ids), checker.refusals(list(reversed(txs)), ids[::-1]))

    first, second = asyncio.run(both())
    assert sorted(calls) == sorted(ids), "a signature was verified twice on one replica"
    assert first[:-1] == [None] * 20 and first[-1].reason == refusal.BAD_SIGNATURE
    assert second[0].reason == refusal.BAD_SIGNATURE and second[1:] == [None] * 20
    # and later copies hit the cache
    assert asyncio.run(checker.refusals(good, ids[:-1])) == [None] * 20
    assert len(calls) == len(ids)


def test_payloads_over_the_cap_are_refused_in_admission_and_in_blocks(fx: Fixture) -> None:
    """Issue 17.4: a payload changes no state; a member may send at most chain.MAX_PAYLOAD_BYTES.
    The cap is a shape check (TxChecker.refusals), so it holds for the transactions of a Byzantine
    leader's proposal exactly as for admission."""
    ok = fx.payload(b"x" * chain.MAX_PAYLOAD_BYTES)
    big = fx.payload(b"x" * (chain.MAX_PAYLOAD_BYTES + 1))
    checker = TxChecker(None)
    got = asyncio.run(checker.refusals([ok, big], [chain.tx_id(ok), chain.tx_id(big)]))
    assert got[0] is None
    assert got[1] is not None and got[1].reason == refusal.TOO_LARGE and "4097 bytes" in got[1].detail, got

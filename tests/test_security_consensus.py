"""Authentication of consensus messages and per-peer throttling, against a real replica process over gRPC.

One replica (validator-0 of four, with its own ledger, long timers so it only moves when told)
receives forged, unsigned, unknown-signer and replayed Propose / SendVote / StreamVotes /
SendTimeout messages: each forgery is refused with INVALID_ARGUMENT (on a stream: skipped) and
counted in zkpot_consensus_rejected_messages_total{reason}; replays are never counted twice. Then a flood of
submissions from one peer is throttled (RESOURCE_EXHAUSTED) and one sender's mempool quota fills,
while another peer and another sender still get in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import pytest
from chain_factory import Fixture, make_genesis
from security_procs import Service, consensus_service, ledger_service, metric, stop_all, sync_channel

from zkpot import chain, refusal
from zkpot.crypto import KeyPair
from zkpot.grpcutil import CHANNEL_OPTIONS
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc, ledger_pb2, ledger_pb2_grpc, types_pb2

STRANGER = KeyPair.from_seed(b"\x77" * 32)
RATE, BURST, QUOTA = 20, 40, 25
FORGED_PER_S = 20  # the replica-wide budget of failed signature checks


@dataclass
class Net:
    fx: Fixture
    replica: Service
    genesis_hash: bytes

    def stub(self, fresh: bool = False) -> consensus_pb2_grpc.ConsensusStub:
        # a local subchannel pool: a new TCP connection, so a new peer address for the rate limiter
        opts = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)] if fresh else CHANNEL_OPTIONS
        return consensus_pb2_grpc.ConsensusStub(grpc.insecure_channel(self.replica.target, options=opts))

    def rejected(self, reason: str) -> float:
        return metric(self.replica.metrics_port, "zkpot_consensus_rejected_messages_total", reason=reason)

    def status(self) -> consensus_pb2.StatusResponse:
        return self.stub().Status(consensus_pb2.StatusRequest(), timeout=10)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sec-consensus")
    fx = make_genesis(n_validators=4, n_participants=2)
    genesis = tmp / "genesis.json"
    fx.genesis.save(genesis)
    key = tmp / "key.json"
    fx.validator_keys[0].save(key)
    ledger = ledger_service(tmp, genesis)
    replica = consensus_service(tmp, genesis, key, "validator-0", ledger.target, [
        "--idle-block-ms", "60000", "--base-timeout-ms", "60000", "--max-timeout-ms", "60000",
        "--peer-tx-rate", str(RATE), "--peer-tx-burst", str(BURST), "--mempool-max-per-sender", str(QUOTA),
        "--forged-signatures-per-s", str(FORGED_PER_S)])
    try:
        ledger.start().wait_healthy()
        replica.start().wait_healthy()
        yield Net(fx, replica, chain.block_hash(fx.genesis.block().header))
    finally:
        stop_all([replica, ledger])


def refused(call, msg, reason: str, net: Net) -> None:
    before = net.rejected(reason)
    with pytest.raises(grpc.RpcError) as err:
        call(msg, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert reason in err.value.details()
    assert net.rejected(reason) == before + 1, f"{reason} not counted"


def _proposal(net: Net, view: int = 1, signer: KeyPair | None = None,
              txs: list[types_pb2.Transaction] | None = None) -> consensus_pb2.Proposal:
    fx = net.fx
    txs = txs or []
    header = types_pb2.BlockHeader(chain_id=fx.genesis.chain_id, height=1, view=view, parent_hash=net.genesis_hash,
                                   txs_root=chain.txs_root(txs), timestamp_ms=int(time.time() * 1000))
    leader = fx.validator_keys[view % 4]  # genesis order, round robin
    return consensus_pb2.Proposal(block=chain.sign_block(signer or leader, types_pb2.Block(header=header, txs=txs)))


def test_forged_proposals_are_refused_and_a_replay_gets_no_second_vote(net: Net) -> None:
    stub = net.stub()
    refused(stub.Propose, _proposal(net, signer=STRANGER), "unknown_signer", net)
    unsigned = _proposal(net)
    unsigned.block.signature = b""
    refused(stub.Propose, unsigned, "bad_signature", net)
    tampered = _proposal(net)
    tampered.block.header.timestamp_ms += 1  # the leader's signature no longer covers the header
    refused(stub.Propose, tampered, "bad_signature", net)
    wrong_leader = _proposal(net, signer=net.fx.validator_keys[2])  # a validator, but not view 1's leader
    refused(stub.Propose, wrong_leader, "wrong_leader", net)
    # the right leader, a well-formed block, but one transaction's signature does not cover it: no
    # vote. The ledgers rely on this (they do not re-verify signatures of a certified block).
    # The signed original sits in this replica's mempool first: a block's tx whose signature matches
    # an admitted one reuses that one's id only if the whole message is equal (Mempool.known_id).
    original = chain.sign_tx(net.fx.participant_keys[0], types_pb2.Transaction(payload=b"signed", nonce=1))
    assert stub.SubmitTx(consensus_pb2.SubmitTxRequest(txs=[original]), timeout=10).results[0].admitted
    altered = types_pb2.Transaction()
    altered.CopyFrom(original)
    altered.payload = b"altered after signing"
    refused(stub.Propose, _proposal(net, txs=[altered]), "invalid_tx", net)
    assert net.status().last_voted_view == 0

    good = _proposal(net)
    stub.Propose(good, timeout=10)
    votes = metric(net.replica.metrics_port, "zkpot_consensus_votes_sent_total")
    assert net.status().last_voted_view == 1 and votes == 1
    stub.Propose(good, timeout=10)  # replayed: idempotent, never a second vote
    assert metric(net.replica.metrics_port, "zkpot_consensus_votes_sent_total") == votes


def test_forged_and_replayed_votes_are_refused(net: Net) -> None:
    stub = net.stub()
    bh = chain.block_hash(_proposal(net).block.header)
    refused(stub.SendVote, chain.make_vote(STRANGER, bh, 1, 1), "unknown_signer", net)
    no_signature = consensus_pb2.Vote(block_hash=bh, view=1, height=1)
    refused(stub.SendVote, no_signature, "unknown_signer", net)
    unsigned = chain.make_vote(net.fx.validator_keys[1], bh, 1, 1)
    unsigned.signature.signature = b""
    refused(stub.SendVote, unsigned, "bad_signature", net)
    wrong = chain.make_vote(net.fx.validator_keys[1], bh, 1, 1)
    wrong.view = 2  # signed for view 1
    refused(stub.SendVote, wrong, "bad_signature", net)
    other_key = chain.make_vote(net.fx.validator_keys[2], bh, 1, 1)
    other_key.signature.signer = net.fx.validator_keys[1].public  # someone else's signature
    refused(stub.SendVote, other_key, "bad_signature", net)

    vote = chain.make_vote(net.fx.validator_keys[1], bh, 1, 1)
    stub.SendVote(vote, timeout=10)  # counted once (with the replica's own: 2 of 3, no QC)
    refused(stub.SendVote, vote, "duplicate_vote", net)  # replayed
    equivocation = chain.make_vote(net.fx.validator_keys[1], b"\x01" * 32, 1, 1)
    refused(stub.SendVote, equivocation, "duplicate_vote", net)  # a second vote in the view
    assert net.status().high_qc_view == 0


def test_votes_on_a_stream_are_checked_one_by_one_and_the_stream_goes_on(net: Net) -> None:
    """StreamVotes (how replicas send votes): every message is checked as SendVote checks it; a
    forged, unsigned, replayed or equivocating vote is counted and skipped, the valid ones around
    it still count (once each); an oversized message ends the stream; nothing certifies."""
    stub = net.stub()
    k = net.fx.validator_keys
    bh = b"\x07" * 32  # view 7: no other test's votes are there
    forged = chain.make_vote(STRANGER, bh, 7, 7)
    unsigned = chain.make_vote(k[2], bh, 7, 7)
    unsigned.signature.signature = b""
    good2, good3 = chain.make_vote(k[2], bh, 7, 7), chain.make_vote(k[3], bh, 7, 7)
    equivocation = chain.make_vote(k[2], b"\x08" * 32, 7, 7)
    reasons = ("unknown_signer", "bad_signature", "duplicate_vote")
    before = {r: net.rejected(r) for r in reasons}
    received = metric(net.replica.metrics_port, "zkpot_consensus_votes_received_total")
    stub.StreamVotes(iter([forged, unsigned, good2, good2, equivocation, good3]), timeout=10)
    assert {r: net.rejected(r) - before[r] for r in reasons} == {
        "unknown_signer": 1, "bad_signature": 1, "duplicate_vote": 2}
    assert metric(net.replica.metrics_port, "zkpot_consensus_votes_received_total") == received + 2
    assert net.status().high_qc_view == 0  # two validators' votes (the replica did not vote in view 7)

    oversized = chain.make_vote(k[1], bh, 7, 7)
    oversized.block_hash = b"\x07" * 5000  # over the 4 KiB a vote may take
    with pytest.raises(grpc.RpcError) as err:
        stub.StreamVotes(iter([oversized, chain.make_vote(k[1], bh, 7, 7)]), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert metric(net.replica.metrics_port, "zkpot_consensus_votes_received_total") == received + 2
    assert net.status().high_qc_view == 0


def test_forged_timeouts_are_refused_and_replays_count_once(net: Net) -> None:
    stub = net.stub()
    keys = net.fx.validator_keys
    refused(stub.SendTimeout, chain.make_timeout(STRANGER, 5, None), "unknown_signer", net)
    unsigned = chain.make_timeout(keys[1], 5, None)
    unsigned.signature.signature = b""
    refused(stub.SendTimeout, unsigned, "bad_signature", net)
    wrong = chain.make_timeout(keys[1], 5, None)
    wrong.view = 6
    refused(stub.SendTimeout, wrong, "bad_signature", net)

    view = net.status().view
    assert view < 5
    t1 = chain.make_timeout(keys[1], 5, None)
    for _ in range(5):  # one validator's timeout, replayed: still one of the f+1 = 2 needed to join view 5
        stub.SendTimeout(t1, timeout=10)
    assert net.status().view == view
    stub.SendTimeout(chain.make_timeout(keys[2], 5, None), timeout=10)  # a second validator: join
    assert net.status().view >= 5


def _payloads(key: KeyPair, n: int, tag: bytes) -> list[types_pb2.Transaction]:
    base = time.time_ns()
    return [chain.sign_tx(key, types_pb2.Transaction(payload=tag + bytes([i % 256]), nonce=base + i)) for i in range(n)]


def test_flood_from_one_peer_is_throttled_without_hurting_others(net: Net) -> None:
    flooder, other = net.stub(fresh=True), net.stub(fresh=True)
    alice, bob = net.fx.validator_keys[1], net.fx.validator_keys[2]  # payloads need genesis members
    before = net.rejected("rate_limited")
    pooled = net.status().mempool_size  # what earlier tests of this network left there

    # alice floods from one connection: her quota fills first, then the peer's token bucket runs dry
    admitted, quota_refusals, throttled = 0, 0, 0
    txs = _payloads(alice, 100, b"flood")
    for i in range(0, len(txs), 10):
        try:
            resp = flooder.SubmitTx(consensus_pb2.SubmitTxRequest(txs=txs[i : i + 10]), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            assert "rate limited" in exc.details()
            throttled += 1
            continue
        admitted += sum(r.admitted for r in resp.results)
        quota_refusals += sum(r.reason == refusal.BUSY and "sender quota" in r.detail for r in resp.results)
    assert admitted == QUOTA
    assert quota_refusals >= BURST - QUOTA
    assert throttled >= 3  # 100 txs against a burst of 40 at 20/s
    assert net.rejected("rate_limited") == before + throttled

    # another peer, another sender: served at once
    resp = other.SubmitTx(consensus_pb2.SubmitTxRequest(txs=_payloads(bob, 10, b"bob")), timeout=10)
    assert all(r.admitted for r in resp.results), [refusal.text(r.reason, r.detail) for r in resp.results]
    # another peer cannot launder alice's transactions past her quota
    resp = other.SubmitTx(consensus_pb2.SubmitTxRequest(txs=_payloads(alice, 5, b"more")), timeout=10)
    assert not any(r.admitted for r in resp.results)
    assert net.status().mempool_size == pooled + QUOTA + 10

    # the flooder's bucket refills at RATE/s
    time.sleep(10 / RATE + 0.2)
    resp = flooder.SubmitTx(consensus_pb2.SubmitTxRequest(txs=_payloads(bob, 10, b"later")), timeout=10)
    assert all(r.admitted for r in resp.results), [refusal.text(r.reason, r.detail) for r in resp.results]


def test_submit_proof_from_a_stranger_is_refused_before_any_proof_check(net: Net) -> None:
    fx = net.fx
    member = fx.submit(0, round_=1, claimed=20)
    stranger = fx.submit(1, round_=1, claimed=20, signer=STRANGER)
    stranger.submit_proof.participant = STRANGER.public
    chain.sign_tx(STRANGER, stranger)
    before = metric(net.replica.metrics_port, "zkpot_consensus_rejected_txs_total", reason="unknown_signer")
    resp = net.stub(fresh=True).SubmitTx(consensus_pb2.SubmitTxRequest(txs=[member, stranger]), timeout=10)
    assert [r.admitted for r in resp.results] == [False, False]
    # a participant's proof goes on to the verifier (this replica has none)
    assert resp.results[0].reason == refusal.VERIFIER_UNAVAILABLE, resp.results[0]
    assert resp.results[1].reason == refusal.UNKNOWN_SIGNER, resp.results[1]
    assert metric(net.replica.metrics_port, "zkpot_consensus_rejected_txs_total", reason="unknown_signer") == before + 1


def test_a_proposal_larger_than_any_valid_block_is_refused_before_parsing(net: Net) -> None:
    """Propose is capped at --max-block-bytes (default 8 MiB) plus header/QC/TC overhead."""
    from services.consensus.server import PROPOSAL_OVERHEAD_BYTES

    proposal = _proposal(net)
    proposal.block.txs.append(types_pb2.Transaction(payload=bytes(8 * 1024 * 1024 + PROPOSAL_OVERHEAD_BYTES)))
    before = net.status().last_voted_view
    with pytest.raises(grpc.RpcError) as err:
        net.stub().Propose(proposal, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert net.status().last_voted_view == before  # nothing was voted on


def test_only_transactions_the_chain_has_a_rule_for_are_admitted(net: Net) -> None:
    """Issue 18.3: a payload changes no state, so only genesis members may spend block space on one,
    at most chain.MAX_PAYLOAD_BYTES each (issue 17.4); a transaction with no known body has no rule."""
    stub = net.stub(fresh=True)
    member = net.fx.validator_keys[3]  # a member whose sender quota the other tests leave alone
    oversized = chain.sign_tx(member, types_pb2.Transaction(payload=bytes(chain.MAX_PAYLOAD_BYTES + 1),
                                                            nonce=time.time_ns()))
    txs = [*_payloads(STRANGER, 1, b"stranger"), *_payloads(member, 1, b"member"),
           chain.sign_tx(member, types_pb2.Transaction(nonce=time.time_ns())), oversized]
    stranger, ok, bodiless, big = stub.SubmitTx(consensus_pb2.SubmitTxRequest(txs=txs), timeout=10).results
    assert not big.admitted and big.reason == refusal.TOO_LARGE, big  # issue 17.4: a member's payload is capped
    assert not stranger.admitted and stranger.reason == refusal.UNKNOWN_SIGNER, stranger
    assert stranger.detail.startswith("payload"), stranger.detail
    assert ok.admitted and ok.reason == refusal.ACCEPTED, ok
    assert not bodiless.admitted and bodiless.reason == refusal.MALFORMED, bodiless


def test_a_peer_forging_signatures_pays_for_each_one(net: Net) -> None:
    """Issue 18.3: a transaction claiming a member's key with a bad signature passes every cheap
    check and costs an ed25519 verification. The peer that sent it is charged BAD_SIGNATURE_COST
    tokens per forgery, so it is throttled long before it can burn the replica's CPU; other peers
    are not affected."""
    import os

    from services.consensus.server import BAD_SIGNATURE_COST

    member = net.fx.participant_keys[1]
    forged = []
    for i in range(5):
        tx = types_pb2.Transaction(payload=os.urandom(32), nonce=time.time_ns() + i, sender=member.public)
        tx.signature = os.urandom(64)
        forged.append(tx)
    assert 5 * BAD_SIGNATURE_COST > BURST  # five forgeries exhaust what a whole burst of honest txs may use
    forger = net.stub(fresh=True)
    results = forger.SubmitTx(consensus_pb2.SubmitTxRequest(txs=forged), timeout=10).results
    assert all(r.reason == refusal.BAD_SIGNATURE for r in results), results
    with pytest.raises(grpc.RpcError) as err:
        forger.SubmitTx(consensus_pb2.SubmitTxRequest(txs=_payloads(net.fx.validator_keys[3], 1, b"f")), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = net.stub(fresh=True).SubmitTx(consensus_pb2.SubmitTxRequest(txs=_payloads(net.fx.validator_keys[3], 1,
                                                                                   b"o")), timeout=10)
    assert ok.results[0].admitted, ok.results[0].detail


def test_a_throttled_peers_bodies_are_refused_before_they_are_parsed(net: Net) -> None:
    """Issue 18.3: the rate limit runs before SubmitTx's body is parsed, and a body pays one token
    per started 64 KiB up front: a peer that sends a multi-megabyte junk body, or any body once its
    bucket is empty, costs the replica only the read (RESOURCE_EXHAUSTED, not a parse error)."""
    from services.consensus.server import BYTES_PER_TOKEN

    def raw_submit(channel: grpc.Channel, body: bytes) -> grpc.RpcError:
        call = channel.unary_unary("/zkpot.v1.Consensus/SubmitTx")  # bytes in, bytes out: no parsing here
        with pytest.raises(grpc.RpcError) as err:
            call(body, timeout=30)
        return err.value

    opts = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    big = grpc.insecure_channel(net.replica.target, options=opts)
    junk = b"\xff" * ((BURST + 1) * BYTES_PER_TOKEN)  # unparsable, and dearer than a whole burst
    err = raw_submit(big, junk)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limited" in err.details(), err.details()
    small = grpc.insecure_channel(net.replica.target, options=opts)
    err = raw_submit(small, b"\xff\xff")  # a fresh peer's junk is parsed, and refused as junk
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in err.details(), err.details()
    for _ in range(BURST + 1):  # empty this peer's bucket
        try:
            consensus_pb2_grpc.ConsensusStub(small).SubmitTx(consensus_pb2.SubmitTxRequest(), timeout=10)
        except grpc.RpcError:
            pass
    err = raw_submit(small, b"\xff\xff")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()  # not parsed any more


def test_junk_traffic_does_not_hurry_a_live_rounds_deadline(tmp_path) -> None:
    """Issue 19.5 on real processes: a member sends 20 payloads a second to a live chain (one
    validator, so every block commits at once) whose task closes a round after 5 blocks *and* 12 s
    of chain time. Blocks come many times faster than idle, yet round 1 stays open until the chain
    time has passed; then it closes."""
    fx = make_genesis(n_validators=1, n_participants=2, deadline_blocks=5, deadline_ms=12_000)
    genesis = tmp_path / "genesis.json"
    fx.genesis.save(genesis)
    key = tmp_path / "key.json"
    fx.validator_keys[0].save(key)
    ledger = ledger_service(tmp_path, genesis)
    replica = consensus_service(tmp_path, genesis, key, "validator-0", ledger.target, ["--idle-block-ms", "5000"])
    try:
        ledger.start().wait_healthy()
        replica.start().wait_healthy()
        stub = consensus_pb2_grpc.ConsensusStub(sync_channel(replica.target))
        with sync_channel(ledger.target) as ch:
            lstub = ledger_pb2_grpc.LedgerStub(ch)
            t0 = time.monotonic()
            sent = 0
            while time.monotonic() - t0 < 8.0:  # 20 tx/s of junk from a genesis member
                stub.SubmitTx(consensus_pb2.SubmitTxRequest(txs=_payloads(fx.participant_keys[0], 1, b"j")), timeout=5)
                sent += 1
                time.sleep(0.05)
            head = lstub.Head(ledger_pb2.HeadRequest(), timeout=5)
            assert head.height > 5 * 3, head  # blocks far faster than the 5 s idle interval
            assert head.current_round == 1, "junk traffic closed the round before its chain time"
            deadline = time.monotonic() + 30
            while lstub.Head(ledger_pb2.HeadRequest(), timeout=5).current_round == 1:
                assert time.monotonic() < deadline, "the round never closed"
                time.sleep(0.5)
            closed = lstub.GetRound(ledger_pb2.GetRoundRequest(round=1), timeout=5)
            assert closed.closed and time.monotonic() - t0 >= 11.0
    finally:
        stop_all([replica, ledger])


def test_a_forger_reconnecting_for_fresh_buckets_is_bounded_replica_wide(net: Net) -> None:
    """Without TLS a peer is its address, so a forger that opens a new connection per request
    gets a fresh token bucket each time. Past the replica-wide budget of failed signature checks,
    a peer that never had a transaction admitted gets one transaction per request checked: the
    forger buys one failed check per request instead of a request's worth, an established honest
    client is served as before, and an honest newcomer gets its first transaction in."""
    import os

    time.sleep(1.2)  # whatever earlier tests forged has been forgiven
    member = net.fx.participant_keys[1]
    honest = net.stub(fresh=True)
    first = honest.SubmitTx(consensus_pb2.SubmitTxRequest(txs=_payloads(net.fx.participant_keys[0], 1, b"h0")),
                            timeout=10).results[0]
    assert first.admitted, first.detail  # this connection is now trusted
    checked_before = metric(net.replica.metrics_port, "zkpot_consensus_rejected_txs_total", reason="bad_signature")
    requests, per_request = 40, 5
    started, probed = time.monotonic(), 0
    for k in range(requests):
        forged = []
        for i in range(per_request):
            tx = types_pb2.Transaction(payload=os.urandom(32), nonce=time.time_ns() + i, sender=member.public)
            tx.signature = os.urandom(64)
            forged.append(tx)
        # a new TCP connection every time: a new peer, a full bucket
        results = net.stub(fresh=True).SubmitTx(consensus_pb2.SubmitTxRequest(txs=forged), timeout=10).results
        assert not any(r.admitted for r in results)
        probed += sum(r.reason == refusal.BUSY and "gets one checked per request" in r.detail for r in results) > 0
        if k == 20:  # mid-flood: the established client is served in full
            ok = honest.SubmitTx(consensus_pb2.SubmitTxRequest(
                txs=_payloads(net.fx.participant_keys[0], 2, b"h1")), timeout=10).results
            assert all(r.admitted for r in ok), [refusal.text(r.reason, r.detail) for r in ok]
    elapsed = time.monotonic() - started
    checked = metric(net.replica.metrics_port, "zkpot_consensus_rejected_txs_total",
                     reason="bad_signature") - checked_before
    budget = FORGED_PER_S * (1 + elapsed) + per_request  # a burst, the refill, one request over the edge
    assert checked <= budget + probed, (checked, budget, probed)  # a probed request: one check
    assert checked < requests * per_request / 2 and probed >= requests // 2, (checked, probed)
    # a newcomer with a valid transaction: its first one is checked and admitted, then it is trusted
    newcomer = net.stub(fresh=True)
    txs = _payloads(net.fx.validator_keys[3], 3, b"new")
    results = newcomer.SubmitTx(consensus_pb2.SubmitTxRequest(txs=txs), timeout=10).results
    assert results[0].admitted, results[0].detail
    assert newcomer.SubmitTx(consensus_pb2.SubmitTxRequest(txs=txs[1:]), timeout=10).results[0].admitted

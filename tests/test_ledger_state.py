"""The ledger's state machine and append checks, in process (real RocksDB, real signatures)."""

from __future__ import annotations

import grpc
import pytest
from chain_factory import ChainBuilder, make_genesis, make_qc, random_model, resign

from services.ledger.ledger import AppendRejected, GenesisMismatch, Ledger
from services.ledger.state import aggregation_rule
from zkpot import chain, model_codec, refusal, schedule
from zkpot.codec import content_id


@pytest.fixture
def fx():
    return make_genesis(n_participants=3, rounds=2, min_correct=10, deadline_blocks=5)


@pytest.fixture
def ledger(fx, tmp_path):
    led = Ledger(tmp_path / "db", fx.genesis)
    yield led
    led.close()


def _append(led: Ledger, b: ChainBuilder, txs=None):
    req = b.next_block(txs)
    resp = led.append(req)
    b.accept(req)
    return resp


def test_genesis_opens_round_one(fx, ledger):
    assert ledger.head.height == 0
    assert ledger.current_round() == 1
    r1 = ledger.round_summary(1)
    cid = fx.genesis.manifest.artefacts["initial_model"]
    assert r1.global_model_cid == cid and r1.open_height == 0 and not r1.closed
    assert ledger.store.blob(cid) == fx.initial_model
    sched = ledger.schedule()
    assert list(sched.leaders) == [m.public_key for m in fx.genesis.validators]
    assert sched.epoch == 0 and sched.activation_view == 0
    assert ledger.task().task_id == fx.task_id


def test_round_closes_when_all_submitted_with_threshold(fx, ledger):
    b = ChainBuilder(fx)
    models = [random_model(fx.rng) for _ in range(3)]
    claimed = [20, 5, 12]  # participant 1 is below min_correct=10
    resp = _append(ledger, b, [fx.submit(0, 1, claimed[0], models[0]), fx.submit(1, 1, claimed[1], models[1])])
    assert all(r.accepted for r in resp.results)
    assert ledger.current_round() == 1 and not ledger.round_summary(1).closed
    _append(ledger, b, [fx.submit(2, 1, claimed[2], models[2])])
    r1 = ledger.round_summary(1)
    assert r1.closed and r1.close_height == 2
    assert r1.aggregation_rule == aggregation_rule(10) == "fedavg-threshold(min_correct=10)"
    keys = [k.public for k in fx.participant_keys]
    passing = sorted([(keys[0], models[0]), (keys[2], models[2])])
    expected = model_codec.fedavg_fixed([m for _, m in passing])
    assert r1.next_global_model_cid == content_id(expected)
    assert ledger.store.blob(r1.next_global_model_cid) == expected
    assert {s.participant: s.aggregated for s in r1.submissions} == {keys[0]: True, keys[1]: False, keys[2]: True}
    # round 2 opens at the same height from the aggregate
    assert ledger.current_round() == 2
    r2 = ledger.round_summary(2)
    assert r2.open_height == 2 and r2.global_model_cid == r1.next_global_model_cid and not r2.closed


def test_schedule_ranks_and_activates_after_lag(fx, ledger):
    b = ChainBuilder(fx)
    before = _append(ledger, b, [])
    # an append names the schedule's epoch after its block: consensus asks for the schedule only
    # when it moved (set even for epoch 0, so a replica can tell it from an older ledger's reply)
    assert before.HasField("schedule_epoch") and before.schedule_epoch == 0
    closing = _append(ledger, b, [fx.submit(0, 1, 11), fx.submit(1, 1, 30), fx.submit(2, 1, 3)])
    assert closing.schedule_epoch == 1
    closing_view = b.view
    sched = ledger.schedule()
    v = [k.public for k in fx.validator_keys]
    # validator 3 operates no participant; participant 2's 3 < min_correct keeps it out of the
    # aggregate, and a score counts only for a model in the aggregate
    scores = {v[0]: 11, v[1]: 30}
    assert sched.scores[list(sched.leaders).index(v[2])] == 0
    leaders, ranked = schedule.rank_leaders(1, v, scores, 10)
    assert tuple(sched.leaders) == leaders and tuple(sched.scores) == ranked
    assert sched.leaders[0] == v[1] and sched.leaders[1] == v[0]  # proven best first
    assert sched.epoch == 1
    assert sched.activation_view == closing_view + schedule.ACTIVATION_LAG
    assert list(sched.previous_leaders) == v and sched.previous_activation_view == 0


def test_round_closes_at_deadline_and_carries_model_over(fx, ledger):
    b = ChainBuilder(fx)
    _append(ledger, b, [fx.submit(0, 1, 2)])  # below threshold
    for _ in range(3):
        _append(ledger, b)
    assert not ledger.round_summary(1).closed  # height 4 < 0 + 5
    _append(ledger, b)  # height 5: deadline
    r1 = ledger.round_summary(1)
    assert r1.closed and r1.close_height == 5
    assert r1.next_global_model_cid == r1.global_model_cid  # nothing qualified
    assert not r1.submissions[0].aggregated
    assert ledger.current_round() == 2 and ledger.round_summary(2).open_height == 5


def test_bad_submissions_rejected_with_reasons(fx, ledger):
    b = ChainBuilder(fx)
    stranger = make_genesis(seed=99).participant_keys[0]
    bad_layout = random_model(fx.rng, (("fc1.weight", (3, 3)),))
    good = fx.submit(0, 1, 20)
    txs = [
        good,
        fx.submit(0, 1, 25),                                   # duplicate participant in round
        fx.submit(1, 2, 20),                                   # wrong (future) round
        fx.submit(1, 1, 20, task_id=b"\x09" * 32),             # wrong task
        fx.submit(1, 1, 20, signer=fx.participant_keys[2]),   # sender != participant
        fx.submit(1, 1, 20, model_cid=content_id(b"other")),  # cid mismatch
        fx.submit(1, 1, 20, bad_layout),                       # layout differs from global
        fx.submit(1, 1, 20, b"garbage"),                       # does not decode
        good,                                                  # same tx again in the block
        fx.payload(),
    ]
    # a participant unknown to genesis
    from zkpot.v1 import types_pb2

    unknown = types_pb2.Transaction()
    unknown.CopyFrom(fx.submit(1, 1, 20))
    unknown.submit_proof.participant = stranger.public
    chain.sign_tx(stranger, unknown)
    txs.append(unknown)
    # what a Byzantine leader could put in a block: payloads from strangers or unsigned, no body at all
    txs.append(chain.sign_tx(stranger, types_pb2.Transaction(payload=b"stranger", nonce=1)))
    unsigned = fx.payload(b"unsigned")
    unsigned.signature = bytes(64)
    txs += [unsigned, chain.sign_tx(fx.publisher, types_pb2.Transaction(nonce=2)),
            fx.payload(bytes(chain.MAX_PAYLOAD_BYTES + 1))]  # a member's payload over the cap (issue 17.4)
    resp = _append(ledger, b, txs)
    got = [(refusal.label(r.reason), r.detail) for r in resp.results]
    assert got[0] == ("accepted", "") and resp.results[0].accepted
    assert got[1] == ("duplicate", "duplicate submission for round 1")
    assert got[2] == ("wrong_round", "round 2 is not open (open round is 1)")
    assert got[3] == ("wrong_task", "unknown task id")
    assert got[4] == ("unknown_signer", "sender is not the participant")
    assert got[5] == ("model_mismatch", "model_cid does not match model_params")
    assert got[6] == ("model_mismatch", "model layout differs from the round's global model")
    assert got[7][0] == "model_mismatch" and got[7][1].startswith("model does not decode")
    assert got[8][0] == "duplicate", got
    assert got[9] == ("accepted", "") and resp.results[9].accepted
    assert got[10] == ("unknown_signer", "unknown participant")
    assert got[11] == ("unknown_signer", "payload from a key that is not a genesis member")
    # signatures are consensus validity: honest replicas verified them before certifying this
    # block (tests/test_security_consensus.py), so the ledger does not verify them again
    assert got[12] == ("accepted", "") and resp.results[12].accepted
    assert got[13] == ("malformed", "no rule for a transaction without a known body")
    assert got[14] == ("too_large", f"payload of {chain.MAX_PAYLOAD_BYTES + 1} bytes, over {chain.MAX_PAYLOAD_BYTES}")
    assert all(not r.accepted for r in resp.results[1:9]) and not any(r.accepted for r in resp.results[10:12])
    assert not resp.results[13].accepted
    r1 = ledger.round_summary(1)
    assert [s.participant for s in r1.submissions] == [fx.participant_keys[0].public]
    assert r1.submissions[0].claimed_correct == 20
    # the tx index keeps the first occurrence
    assert ledger.store.tx_location(chain.tx_id(good)) == (1, 0)
    # the same tx in a later block is a duplicate too
    resp2 = _append(ledger, b, [good])
    assert resp2.results[0].reason == refusal.DUPLICATE


def test_late_submission_and_task_finished(fx, ledger):
    b = ChainBuilder(fx)
    _append(ledger, b, [fx.submit(i, 1, 20) for i in range(3)])  # closes round 1
    resp = _append(ledger, b, [fx.submit(0, 1, 20)])
    assert resp.results[0].reason == refusal.WRONG_ROUND
    assert resp.results[0].detail == "round 1 is not open (open round is 2)"
    _append(ledger, b, [fx.submit(i, 2, 20) for i in range(3)])  # closes round 2 = last
    assert ledger.current_round() == 3
    assert ledger.round_summary(2).closed and ledger.round_summary(3) is None
    resp = _append(ledger, b, [fx.submit(0, 3, 20)])
    assert (resp.results[0].reason, resp.results[0].detail) == (refusal.WRONG_ROUND, "task finished")


def _feed(led: Ledger, reqs):
    return [led.append(r) for r in reqs]


def test_determinism_two_stores_same_roots(fx, tmp_path):
    b = ChainBuilder(fx)
    reqs = [
        b.extend([fx.submit(0, 1, 20), fx.payload()]),
        b.extend([fx.submit(1, 1, 15)]),
        b.extend([fx.submit(2, 1, 8)]),
        b.extend([fx.submit(0, 2, 30)]),
        b.extend(),
    ]
    a = Ledger(tmp_path / "a", fx.genesis)
    c = Ledger(tmp_path / "c", fx.genesis)
    try:
        ra, rc = _feed(a, reqs), _feed(c, reqs)
        assert [x.state_root for x in ra] == [y.state_root for y in rc]
        assert len({x.state_root for x in ra}) == len(ra)  # the chain moves on every block
        for r in (1, 2):
            assert a.round_summary(r).SerializeToString(deterministic=True) == c.round_summary(r).SerializeToString(
                deterministic=True
            )
        assert a.schedule() == c.schedule()
        assert a.head == c.head
    finally:
        a.close()
        c.close()
    # reopening yields the same head; a different genesis is refused
    a = Ledger(tmp_path / "a", fx.genesis)
    assert a.head.state_root == ra[-1].state_root and a.head.height == 5
    a.close()
    with pytest.raises(GenesisMismatch):
        Ledger(tmp_path / "a", make_genesis(seed=8).genesis)


def test_append_checks_write_nothing(fx, ledger):
    b = ChainBuilder(fx)
    _append(ledger, b, [fx.payload()])
    head = ledger.head

    def refused(req, code, reason):
        with pytest.raises(AppendRejected) as exc:
            ledger.append(req)
        assert exc.value.code == code and exc.value.reason == reason, exc.value.message
        assert ledger.head == head and ledger.stored_block(head.height + 1) is None

    inv = grpc.StatusCode.INVALID_ARGUMENT
    req = b.next_block([fx.payload()])
    req.qc.votes.pop()  # 2 of quorum 3
    refused(req, inv, "qc")
    req = b.next_block()
    req.qc.votes[1].CopyFrom(req.qc.votes[0])
    refused(req, inv, "qc")
    req = b.next_block()
    outsider = make_genesis(seed=5).validator_keys[0]
    hdr = req.block.header
    req.qc.CopyFrom(make_qc([*b.quorum_keys()[:2], outsider], chain.block_hash(hdr), hdr.view, hdr.height))
    refused(req, inv, "qc")
    req = b.next_block()
    req.block.header.timestamp_ms += 1  # signature and qc no longer match
    refused(req, inv, "signature")
    req = resign(fx, b.next_block([fx.payload()]))
    req.block.txs.append(fx.payload())
    refused(req, inv, "txs_root")
    req = b.next_block()
    req.block.header.parent_hash = b"\x07" * 32
    refused(resign(fx, req), grpc.StatusCode.FAILED_PRECONDITION, "parent")
    req = b.next_block()
    req.block.header.ClearField("parent_qc")
    refused(resign(fx, req), inv, "parent_qc")
    req = b.next_block()
    req.block.header.height += 1
    refused(resign(fx, req), grpc.StatusCode.FAILED_PRECONDITION, "gap")
    req = b.next_block()
    req.block.header.chain_id = "other"
    refused(resign(fx, req), inv, "chain_id")
    req = b.next_block()
    req.block.header.view = head.view
    refused(resign(fx, req), inv, "view")
    req = b.next_block()
    req.ClearField("qc")
    refused(req, inv, "malformed")
    # the good block still goes in afterwards
    assert ledger.append(b.next_block()).height == head.height + 1


def test_genesis_with_wrong_initial_model_cid_is_refused(tmp_path):
    from services.ledger.state import GenesisError
    from zkpot.genesis import Genesis
    from zkpot.v1 import types_pb2

    fx = make_genesis()
    tx = types_pb2.Transaction()
    tx.CopyFrom(fx.genesis.publish_task)
    tx.publish_task.manifest.artefacts["initial_model"] = content_id(b"something else")
    tx.publish_task.task_id = chain.task_id(tx.publish_task.manifest)
    tx.publish_task.manifest.publisher = fx.publisher.public
    chain.sign_tx(fx.publisher, tx)
    g = fx.genesis
    bad = Genesis(g.chain_id, g.genesis_time_ms, g.validators, g.participants, tx)
    bad.check()
    with pytest.raises(GenesisError, match="content id"):
        Ledger(tmp_path / "db", bad)
    # nothing was written: the right genesis still initializes the same directory
    Ledger(tmp_path / "db", fx.genesis).close()


def test_traffic_cannot_hurry_a_round_deadline(tmp_path):
    """Issue 19.5: junk that makes leaders propose fast used to close rounds in seconds (the deadline
    counted blocks only). With round_deadline_ms the round also lasts that much chain time."""
    fx = make_genesis(n_participants=3, rounds=2, min_correct=10, deadline_blocks=5, deadline_ms=60_000)
    led = Ledger(tmp_path / "db", fx.genesis)
    try:
        b = ChainBuilder(fx)
        t0 = fx.genesis.genesis_time_ms
        for i in range(30):  # 20 junk transactions a second from a member: 30 blocks in 1.5 s of chain time
            req = b.next_block([fx.payload(bytes([i]))], timestamp_ms=t0 + 50 * (i + 1))
            assert led.append(req).results[0].accepted
            b.accept(req)
        r1 = led.round_summary(1)
        # chain time starts with the first block (t0 + 50), not at genesis_time_ms
        assert not r1.closed and r1.open_time_ms == t0 + 50  # 30 blocks > 5, but 1.5 s < 60 s
        req = b.next_block([], timestamp_ms=t0 + 50 + 59_999)
        led.append(req)
        b.accept(req)
        assert not led.round_summary(1).closed
        req = b.next_block([], timestamp_ms=t0 + 50 + 60_000)  # both deadlines passed
        led.append(req)
        b.accept(req)
        r1 = led.round_summary(1)
        assert r1.closed and r1.close_height == 32
        assert led.round_summary(2).open_time_ms == t0 + 50 + 60_000
    finally:
        led.close()

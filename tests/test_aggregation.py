"""Aggregation rules (zkpot.aggregation) and their use by the ledger's state machine."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from chain_factory import ChainBuilder, make_genesis, random_model

from services.ledger.ledger import Ledger
from services.ledger.state import GenesisError, StateMachine
from zkpot import aggregation, chain, model_codec, refusal
from zkpot.aggregation import Submission
from zkpot.codec import content_id
from zkpot.genesis import Genesis
from zkpot.v1 import types_pb2


def _subs(n: int = 7, seed: int = 3) -> list[Submission]:
    rng = np.random.default_rng(seed)
    return [Submission(bytes([i]) * 32, int(rng.integers(0, 17)), random_model(rng)) for i in range(n)]


def _fixed(model: bytes) -> list[np.ndarray]:
    return [arr for _, arr in model_codec.decode_fixed(model)]


@pytest.mark.parametrize("rule", aggregation.RULES)
def test_rules_are_order_independent_and_bit_exact(rule):
    subs = _subs()
    first = aggregation.aggregate(rule, subs, min_correct=4)
    assert first.model is not None
    for seed in range(5):
        shuffled = subs[:]
        random.Random(seed).shuffle(shuffled)
        again = aggregation.aggregate(rule, shuffled, min_correct=4)
        assert again.model == first.model and again.included == first.included
    assert list(first.included) == sorted(s.participant for s in subs if s.claimed_correct >= 4)
    assert first.rule == f"{rule}(min_correct=4)"


def test_threshold_fedavg_is_the_ledgers_first_rule():
    subs = _subs()
    passing = sorted((s for s in subs if s.claimed_correct >= 5), key=lambda s: s.participant)
    got = aggregation.aggregate("", subs, 5)
    assert got.model == model_codec.fedavg_fixed([s.model for s in passing])
    assert got.rule == "fedavg-threshold(min_correct=5)"


def test_accuracy_weighted_and_robust_rules_by_hand():
    def const(v: int) -> bytes:
        return model_codec.encode_fixed([("w", np.full((2,), v, dtype=np.int32))])

    subs = [Submission(b"a" * 32, 10, const(100)), Submission(b"b" * 32, 30, const(200)),
            Submission(b"c" * 32, 20, const(-7)), Submission(b"d" * 32, 1, const(10**6))]  # d: below threshold
    # weights 10, 30, 20: (1000 + 6000 - 140) // 60 = 114 (floor)
    assert _fixed(aggregation.aggregate("fedavg-accuracy", subs, 5).model)[0].tolist() == [114, 114]
    assert _fixed(aggregation.aggregate("fedavg-threshold", subs, 5).model)[0].tolist() == [97, 97]  # 293 // 3
    assert _fixed(aggregation.aggregate("median", subs, 5).model)[0].tolist() == [100, 100]
    # median of four (threshold 0): floor((100 + 200) / 2); the outlier does not move it
    assert _fixed(aggregation.aggregate("median", subs, 0).model)[0].tolist() == [150, 150]
    outliers = [Submission(bytes([i]) * 32, 9, const(v)) for i, v in enumerate([5, 6, 7, 8, 9, -10**6, 10**6])]
    # 7 values: trim 1 at each end -> mean of 5..9 = 7
    assert _fixed(aggregation.aggregate("trimmed-mean", outliers, 0).model)[0].tolist() == [7, 7]


def test_nothing_passing_and_bad_input():
    subs = _subs()
    nothing = aggregation.aggregate("median", subs, 100)
    assert nothing.model is None and nothing.included == ()
    with pytest.raises(aggregation.AggregationError, match="unknown aggregation rule"):
        aggregation.aggregate("krum", subs, 0)
    with pytest.raises(aggregation.AggregationError, match="same participant"):
        aggregation.aggregate("median", [subs[0], subs[0]], 0)


def _with_rule(fx, rule: str) -> Genesis:
    """The fixture's genesis with `aggregation_rule` set in its manifest (re-signed, new task id)."""
    publish = types_pb2.Transaction()
    publish.CopyFrom(fx.genesis.publish_task)
    publish.publish_task.manifest.aggregation_rule = rule
    publish.publish_task.task_id = chain.task_id(publish.publish_task.manifest)
    chain.sign_tx(fx.publisher, publish)
    return dataclasses.replace(fx.genesis, publish_task=publish)


def test_replicas_aggregate_identically_with_the_tasks_rule(tmp_path):
    fx = make_genesis(n_participants=5, rounds=1, min_correct=10)
    fx.genesis = _with_rule(fx, "median")
    models = [random_model(fx.rng) for _ in range(5)]
    claimed = [12, 40, 3, 25, 10]
    txs = [fx.submit(i, 1, claimed[i], models[i]) for i in range(5)]
    ledgers = [Ledger(tmp_path / f"db{i}", fx.genesis) for i in range(2)]
    try:
        b = ChainBuilder(fx)
        req = b.next_block(txs)
        b2 = ChainBuilder(fx)
        req_shuffled = b2.next_block(list(reversed(txs)))  # another proposer's order: same aggregate
        ledgers[0].append(req)
        ledgers[1].append(req_shuffled)
        summaries = [led.round_summary(1) for led in ledgers]
        assert all(s.closed for s in summaries)
        assert summaries[0].next_global_model_cid == summaries[1].next_global_model_cid
        keys = [k.public for k in fx.participant_keys]
        expected = aggregation.aggregate(
            "median", [aggregation.Submission(keys[i], claimed[i], models[i]) for i in range(5)], 10)
        assert summaries[0].next_global_model_cid == content_id(expected.model)
        assert summaries[0].aggregation_rule == "median(min_correct=10)"
        assert {s.participant for s in summaries[0].submissions if s.aggregated} == set(expected.included)
        assert ledgers[0].store.blob(summaries[0].next_global_model_cid) == expected.model
    finally:
        for led in ledgers:
            led.close()


def test_unknown_rule_in_manifest_is_a_genesis_error(tmp_path):
    fx = make_genesis()
    with pytest.raises(GenesisError, match="unknown aggregation rule"):
        StateMachine(_with_rule(fx, "krum")).execute_genesis(None, fx.genesis.block())  # type: ignore[arg-type]


def test_free_riding_submissions_are_refused_by_the_state_machine(tmp_path):
    fx = make_genesis(n_participants=3, rounds=1, min_correct=1)
    led = Ledger(tmp_path / "db", fx.genesis)
    try:
        b = ChainBuilder(fx)
        honest = random_model(fx.rng)
        req = b.next_block([fx.submit(0, 1, 20, honest),
                            fx.submit(1, 1, 30, fx.initial_model),  # proves the unchanged global model
                            fx.submit(2, 1, 20, honest)])          # proves a copy of participant 0's model
        resp = led.append(req)
        b.accept(req)
        assert [r.accepted for r in resp.results] == [True, False, False]
        assert resp.results[1].reason == resp.results[2].reason == refusal.FREE_RIDING, resp.results
        assert "global model unchanged (free-riding)" in resp.results[1].detail
        assert "copies an earlier submission" in resp.results[2].detail
        summary = led.round_summary(1)
        assert [s.participant for s in summary.submissions] == [fx.participant_keys[0].public]
    finally:
        led.close()

"""Secure aggregation in the ledger's state machine (services.ledger.masking) with real cryptography:
real X25519 masks and Shamir shares (zkpot.secagg), real KZG commitments of the test task
(ezkl.kzg_commit via zkpot.zkp.commitment), real RocksDB ledgers. No parameters ever go on chain;
the aggregate must equal the plain weighted mean of the proven models and be checked against
their commitments."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from chain_factory import ChainBuilder, Fixture, make_genesis, random_model
from zkp_env import shared_env

from services.ledger.ledger import Ledger
from services.ledger.state import GenesisError, StateMachine
from services.ledger.task_commitments import TaskCommitments
from services.participant import masking as secure
from zkpot import aggregation, chain, refusal, secagg
from zkpot.codec import content_id
from zkpot.v1 import ledger_pb2, types_pb2
from zkpot.zkp import commitment

PHASE = ledger_pb2.RoundPhase


def _secure_fixture(n: int = 3, rule: str = "", min_correct: int = 5, deadline: int = 3, t: int = 0) -> Fixture:
    fx = make_genesis(n_participants=n, rounds=2, min_correct=min_correct, deadline_blocks=deadline)
    publish = types_pb2.Transaction()
    publish.CopyFrom(fx.genesis.publish_task)
    publish.publish_task.manifest.secure_aggregation = True
    publish.publish_task.manifest.aggregation_rule = rule
    publish.publish_task.manifest.secagg_threshold = t
    publish.publish_task.task_id = chain.task_id(publish.publish_task.manifest)
    publish.signature = b""
    chain.sign_tx(fx.publisher, publish)
    fx.genesis = dataclasses.replace(fx.genesis, publish_task=publish)
    return fx


@dataclasses.dataclass
class Member:
    index: int
    model: bytes
    claimed: int
    state: secure.MaskingRound | None = None


class Round:
    """Drives one secure round through a ledger: proofs, masked updates, reveals."""

    def __init__(self, fx: Fixture, ledgers: list[Ledger], scheme: TaskCommitments) -> None:
        self.fx, self.ledgers, self.scheme, self.builder = fx, ledgers, scheme, ChainBuilder(fx)

    def block(self, txs: list[types_pb2.Transaction]) -> list[types_pb2.TxResult]:
        req = self.builder.next_block(txs)
        responses = [led.append(req) for led in self.ledgers]
        self.builder.accept(req)
        assert len({r.state_root for r in responses}) == 1  # every replica executes identically
        return list(responses[0].results)

    def summary(self, r: int = 1) -> ledger_pb2.RoundSummary:
        return self.ledgers[0].round_summary(r)

    def proof_tx(self, m: Member, r: int = 1) -> types_pb2.Transaction:
        key = self.fx.participant_keys[m.index]
        vector = commitment.param_vector(self.scheme.task, m.model)
        sp = types_pb2.SubmitProof(task_id=self.fx.task_id, round=r, participant=key.public,
                                   model_commitment=commitment.commit_vector(self.scheme.task, vector),
                                   claimed_correct=m.claimed, proof=b"checked-by-the-verifier")
        keys, self_seed = secure.deal(key, self.fx.genesis, sp)
        m.state = secure.MaskingRound(r, keys, self_seed, vector, m.claimed)
        self.fx.nonce += 1
        return chain.sign_tx(key, types_pb2.Transaction(submit_proof=sp, nonce=self.fx.nonce))

    def masked_tx(self, m: Member, cheat: bool = False) -> types_pb2.Transaction:
        assert m.state is not None
        return secure.masked_update_tx(self.fx.participant_keys[m.index], self.fx.genesis, m.state, self.summary(),
                                       cheat=cheat)

    def reveal_tx(self, m: Member) -> types_pb2.Transaction | None:
        return secure.reveal_tx(self.fx.participant_keys[m.index], self.fx.genesis, self.summary(), m.state)

    def reveal_all(self, members: list[Member]) -> list[types_pb2.TxResult]:
        assert self.summary().phase == PHASE.ROUND_PHASE_UNMASKING
        txs = [tx for m in members if (tx := self.reveal_tx(m)) is not None]
        return self.block(txs)


@contextmanager
def opened_round(tmp_path: Path, fx: Fixture, scheme: TaskCommitments, replicas: int = 1) -> Iterator[Round]:
    """A Round over `replicas` fresh RocksDB ledgers of fx's chain, closed afterwards."""
    ledgers = [Ledger(tmp_path / f"db{i}", fx.genesis, scheme) for i in range(replicas)]
    try:
        yield Round(fx, ledgers, scheme)
    finally:
        for led in ledgers:
            led.close()


def _expected(scheme: TaskCommitments, members: list[Member], rule: str) -> bytes:
    weights = [aggregation.sum_weight(rule, m.claimed) for m in members]
    total = sum(w * commitment.param_vector(scheme.task, m.model).astype(np.int64)
                for w, m in zip(weights, members, strict=True))
    return commitment.model_from_vector(scheme.task, total, sum(weights))


def _scores(rd: Round) -> dict[bytes, int]:
    sched = rd.ledgers[0].schedule()
    return dict(zip(sched.leaders, sched.scores, strict=True))


@pytest.fixture(scope="module")
def scheme() -> TaskCommitments:
    return TaskCommitments(shared_env().task)


def _members(fx: Fixture, claimed: list[int]) -> list[Member]:
    return [Member(i, random_model(fx.rng), c) for i, c in enumerate(claimed)]


@pytest.mark.parametrize("rule", ["fedavg-threshold", "fedavg-accuracy"])
def test_masked_round_aggregates_exactly_the_proven_models(tmp_path, scheme, rule):
    fx = _secure_fixture(n=4, rule=rule)
    with opened_round(tmp_path, fx, scheme, replicas=2) as rd:
        members = _members(fx, [9, 12, 2, 7])  # p2 fails the threshold (5): not in the mask set
        results = rd.block([rd.proof_tx(m) for m in members])
        assert all(r.accepted for r in results), [refusal.text(r.reason, r.detail) for r in results]
        s = rd.summary()
        assert s.phase == PHASE.ROUND_PHASE_MASKING
        passing = [m for m in members if m.claimed >= 5]
        assert list(s.mask_set) == sorted(fx.participant_keys[m.index].public for m in passing)
        assert all(not sub.model_cid for sub in s.submissions)  # nothing of a model on chain
        # a masked vector alone says nothing: it differs from the plain vector almost everywhere
        tx = rd.masked_tx(passing[0])
        plain = passing[0].state.vector.astype(np.int64)
        masked = secagg.decode_masked(tx.masked_update.masked, scheme.n_params).astype(np.int64)
        assert np.mean(masked != (plain % 2**32)) > 0.99
        results = rd.block([tx] + [rd.masked_tx(m) for m in passing[1:]])
        assert all(r.accepted for r in results), [refusal.text(r.reason, r.detail) for r in results]
        assert rd.summary().phase == PHASE.ROUND_PHASE_UNMASKING  # the self masks remain
        results = rd.reveal_all(members)
        assert all(r.accepted for r in results), [refusal.text(r.reason, r.detail) for r in results]
        s = rd.summary()
        assert s.closed and s.phase == PHASE.ROUND_PHASE_CLOSED
        expected = _expected(scheme, passing, rule)
        assert s.next_global_model_cid == content_id(expected)
        assert rd.ledgers[1].store.blob(s.next_global_model_cid) == expected
        assert {sub.participant for sub in s.submissions if sub.aggregated} == set(s.mask_set)
        assert "checked against the weighted sum of their commitments" in s.aggregate_note
        assert rd.summary(2).global_model_cid == s.next_global_model_cid


def test_a_dropped_member_is_recovered_from_t_revealed_shares(tmp_path, scheme):
    fx = _secure_fixture(n=4)
    with opened_round(tmp_path, fx, scheme) as rd:
        members = _members(fx, [9, 12, 8, 7])
        rd.block([rd.proof_tx(m) for m in members])
        survivors = members[:3]  # member 3 proves, then goes silent
        rd.block([rd.masked_tx(m) for m in survivors])
        assert rd.summary().phase == PHASE.ROUND_PHASE_MASKING
        rd.block([])
        rd.block([])  # masking deadline (3 blocks)
        s = rd.summary()
        assert s.phase == PHASE.ROUND_PHASE_UNMASKING
        assert list(s.dropped) == [fx.participant_keys[3].public]
        # a reveal about a member that did NOT drop is refused: it would unmask a counted update
        bad = types_pb2.Transaction(mask_reveal=types_pb2.MaskReveal(
            task_id=fx.task_id, round=1, holder=fx.participant_keys[0].public,
            keys=[types_pb2.RevealedShareKey(dealer=fx.participant_keys[1].public, share_key=b"k" * 32)]))
        chain.sign_tx(fx.participant_keys[0], bad)
        # a late masked update from the dropped member is refused (its bytes stay in the block: the
        # self mask, never revealed for a dropped member, keeps hiding it once its mask secret is out)
        late = secure.masked_update_tx(fx.participant_keys[3], fx.genesis, members[3].state, s)
        t = secagg.default_threshold(4)  # 3 of the 3 other holders
        reveals = [rd.reveal_tx(m) for m in survivors]
        assert len(reveals) == t
        self_key_for_dropped = types_pb2.Transaction()
        self_key_for_dropped.CopyFrom(reveals[0])
        self_key_for_dropped.mask_reveal.self_keys.add(dealer=fx.participant_keys[3].public, share_key=b"k" * 32)
        chain.sign_tx(fx.participant_keys[0], self_key_for_dropped)
        results = rd.block([bad, late, self_key_for_dropped, *reveals[:-1]])
        assert [r.reason for r in results[:3]] == [refusal.MASKING_RULE, refusal.WRONG_PHASE, refusal.MASKING_RULE]
        assert not results[0].accepted and "only revealed for a dropped member" in results[0].detail
        assert not results[1].accepted and "not in its masking phase" in results[1].detail
        assert not results[2].accepted and "only revealed for a member whose update counts" in results[2].detail
        assert all(r.accepted for r in results[3:]), [refusal.text(r.reason, r.detail) for r in results]
        assert not rd.summary().closed  # t - 1 shares of the dropped secret: not yet
        results = rd.block([reveals[-1], reveals[-1]])
        assert results[0].accepted and not results[1].accepted  # the same tx twice in a block
        s = rd.summary()
        assert s.closed, s.aggregate_note
        assert s.next_global_model_cid == content_id(_expected(scheme, survivors, ""))
        assert {sub.participant for sub in s.submissions if sub.aggregated} == \
            {fx.participant_keys[m.index].public for m in survivors}
        # the dropped member proved 7 >= 5, but its model is not in the aggregate: its validator earns
        # nothing and ranks after every survivor's (issue 18.5)
        assert _scores(rd) == {fx.validator_keys[m.index].public: m.claimed if m in survivors else 0
                               for m in members}
        assert rd.ledgers[0].schedule().leaders[-1] == fx.validator_keys[3].public


def test_masking_another_model_than_the_proven_one_voids_the_aggregate(tmp_path, scheme):
    fx = _secure_fixture(n=3)
    with opened_round(tmp_path, fx, scheme) as rd:
        members = _members(fx, [9, 12, 8])
        rd.block([rd.proof_tx(m) for m in members])
        rd.block([rd.masked_tx(members[0]), rd.masked_tx(members[1], cheat=True), rd.masked_tx(members[2])])
        rd.reveal_all(members)
        s = rd.summary()
        assert s.closed
        assert s.next_global_model_cid == s.global_model_cid  # carried over, nothing poisoned
        assert "does not open the sum of the members' commitments" in s.aggregate_note
        assert not any(sub.aggregated for sub in s.submissions)
        # one member voided learning for everyone: nobody's claim counts for leadership, its own included
        assert set(_scores(rd).values()) == {0}


def test_bad_secure_transactions_are_refused_with_reasons(tmp_path, scheme):
    fx = _secure_fixture(n=3)
    with opened_round(tmp_path, fx, scheme) as rd:
        members = _members(fx, [9, 12, 8])
        revealing = rd.proof_tx(members[0])
        revealing.submit_proof.model_params = members[0].model
        revealing.submit_proof.model_cid = content_id(members[0].model)
        chain.sign_tx(fx.participant_keys[0], revealing)
        short = rd.proof_tx(members[1])
        del short.submit_proof.mask_shares[-1]
        chain.sign_tx(fx.participant_keys[1], short)
        early = rd.proof_tx(members[2])
        results = rd.block([revealing, short])
        assert [r.reason for r in results] == [refusal.MASKING_RULE] * 2
        assert "model_params must be empty" in results[0].detail
        assert "one share per other genesis participant" in results[1].detail
        copy = rd.proof_tx(members[0])
        copy.submit_proof.model_commitment = early.submit_proof.model_commitment  # someone else's model
        chain.sign_tx(fx.participant_keys[0], copy)
        results = rd.block([early, copy, rd.proof_tx(members[1])])
        assert results[0].accepted and results[2].accepted
        assert results[1].reason == refusal.FREE_RIDING and "copies an earlier submission" in results[1].detail
        rd.block([])
        rd.block([])  # proof deadline: p0 is out, p1 and p2 form the mask set
        s = rd.summary()
        assert s.phase == PHASE.ROUND_PHASE_MASKING and len(s.mask_set) == 2
        outsider = secure.masked_update_tx(fx.participant_keys[0], fx.genesis, secure.MaskingRound(
            1, secagg.MaskKeys.generate(), b"s" * 32, members[0].state.vector, 9), s)
        truncated = rd.masked_tx(members[1])
        truncated.masked_update.masked = truncated.masked_update.masked[:-4]
        chain.sign_tx(fx.participant_keys[1], truncated)
        results = rd.block([outsider, truncated])
        assert [r.reason for r in results] == [refusal.MASKING_RULE] * 2
        assert "not in the round's mask set" in results[0].detail
        assert "bytes (one uint32 per committed parameter)" in results[1].detail
        assert rd.summary().phase == PHASE.ROUND_PHASE_MASKING  # nothing lost: still waiting


def test_too_few_passing_members_close_the_round_without_an_aggregate(tmp_path, scheme):
    fx = _secure_fixture(n=3)  # t = 2
    with opened_round(tmp_path, fx, scheme) as rd:
        members = _members(fx, [9, 1, 2])
        rd.block([rd.proof_tx(m) for m in members])
        s = rd.summary()
        assert s.closed and s.next_global_model_cid == s.global_model_cid
        assert "fewer than the 2 secure aggregation needs" in s.aggregate_note


def test_a_secure_task_needs_a_sum_rule_and_the_commitment_scheme(scheme):
    fx = _secure_fixture(rule="median")
    with pytest.raises(GenesisError, match="needs a sum rule"):
        StateMachine(fx.genesis, scheme).execute_genesis(None, fx.genesis.block())  # type: ignore[arg-type]
    fx = _secure_fixture(n=3, t=3)  # each participant's shares have only 2 holders
    with pytest.raises(GenesisError, match="threshold of 1..2"):
        StateMachine(fx.genesis, scheme).execute_genesis(None, fx.genesis.block())  # type: ignore[arg-type]
    fx = _secure_fixture()
    with pytest.raises(GenesisError, match="--task-dir"):
        StateMachine(fx.genesis).execute_genesis(None, fx.genesis.block())  # type: ignore[arg-type]


def test_a_survivor_that_vanishes_before_revealing_its_self_seed_is_recovered_from_shares(tmp_path, scheme):
    fx = _secure_fixture(n=4)
    with opened_round(tmp_path, fx, scheme) as rd:
        members = _members(fx, [9, 12, 8, 7])
        rd.block([rd.proof_tx(m) for m in members])
        rd.block([rd.masked_tx(m) for m in members])
        assert rd.summary().phase == PHASE.ROUND_PHASE_UNMASKING and not rd.summary().dropped
        wrong = rd.reveal_tx(members[0])
        wrong.mask_reveal.self_seed = b"\x00" * 32
        chain.sign_tx(fx.participant_keys[0], wrong)
        assert "does not match" in rd.block([wrong])[0].detail
        # member 3 is gone: the other three reveal their own seeds and their shares of member 3's seed
        results = rd.reveal_all(members[:3])
        assert all(r.accepted for r in results), [refusal.text(r.reason, r.detail) for r in results]
        s = rd.summary()
        assert s.closed, s.aggregate_note
        assert s.next_global_model_cid == content_id(_expected(scheme, members, ""))

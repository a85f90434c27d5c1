"""Sharded proving: a task whose public test set is proven in 2 shards, with real proofs.

Every shard proof must carry the submission's model commitment and verify on its own slice of the
test set under the binding of (task, round, submitter); the shard counts add up to the claim.
"""

from __future__ import annotations

import json

import pytest
import torch
from zkp_env import SHARD_SIZE, SHARDED_SIZE, sharded_env

from zkpot import chain, refusal
from zkpot.crypto import KeyPair
from zkpot.v1 import types_pb2
from zkpot.zkp import circuit
from zkpot.zkp.task import TaskConfig, TaskError
from zkpot.zkp.verify import check_submission

R = refusal.R


def _with(tx: types_pb2.Transaction, key: KeyPair, shards: list[tuple[bytes, int]] | None = None,
          **changes: object) -> types_pb2.Transaction:
    """A copy of a sharded SubmitProof with its shards and/or fields replaced, signed by `key`."""
    out = types_pb2.Transaction()
    out.CopyFrom(tx)
    sp = out.submit_proof
    if shards is not None:
        del sp.shards[:]
        sp.shards.extend(types_pb2.ShardProof(proof=p, correct=c) for p, c in shards)
    for name, value in changes.items():
        setattr(sp, name, value)
    return chain.sign_tx(key, out)


def _shards(tx: types_pb2.Transaction) -> list[tuple[bytes, int]]:
    return [(s.proof, s.correct) for s in tx.submit_proof.shards]


def test_sharded_task_manifest_and_instances() -> None:
    env = sharded_env()
    task = env.task
    assert task.manifest.shard_size == SHARD_SIZE and task.n_shards == SHARDED_SIZE // SHARD_SIZE == 2
    assert task.params["n_shards"] == 2
    assert len(task.shard(0)) == len(task.shard(1)) == SHARD_SIZE
    assert task.instances(1, env.alice.public, 0, 0) != task.instances(1, env.alice.public, 0, 1)
    TaskConfig(test_set_size=8, shard_size=3).check()  # a padded, masked last shard (test_a_padded_...)
    with pytest.raises(TaskError, match="shard_size must be 0..test_set_size"):
        TaskConfig(test_set_size=8, shard_size=9).check()


def test_honest_sharded_proof_is_accepted() -> None:
    env = sharded_env()
    h = env.honest
    assert h.proof == b"" and len(h.shards) == 2
    assert h.claimed_correct == sum(s.correct for s in h.shards)
    assert {s.proof[: env.task.commitment_size] for s in h.shards} == {h.model_commitment}
    sp = env.honest_tx.submit_proof
    assert not sp.proof and [s.correct for s in sp.shards] == [s.correct for s in h.shards]
    verdict = check_submission(env.task, env.honest_tx, env.root)
    assert verdict.valid, verdict


def test_shard_from_another_model_is_a_commitment_mismatch() -> None:
    env = sharded_env()
    theirs = env.other
    assert theirs.model_commitment != env.honest.model_commitment
    shards = _shards(env.honest_tx)
    shards[1] = (theirs.proof, shards[1][1])
    total = shards[0][1] + shards[1][1]
    verdict = check_submission(env.task, _with(env.honest_tx, env.alice, shards, claimed_correct=total), env.root)
    assert verdict.reason == refusal.COMMITMENT_MISMATCH and "shard 1" in verdict.detail, verdict


def test_shard_omitted_or_duplicated_is_a_shard_mismatch() -> None:
    env = sharded_env()
    (p0, c0), (p1, c1) = _shards(env.honest_tx)
    cases = {
        "omitted": _with(env.honest_tx, env.alice, [(p0, c0)], claimed_correct=c0),
        "duplicated": _with(env.honest_tx, env.alice, [(p0, c0), (p0, c0)], claimed_correct=2 * c0),
        "extra": _with(env.honest_tx, env.alice, [(p0, c0), (p1, c1), (p1, c1)], claimed_correct=c0 + 2 * c1),
        "single proof field": _with(env.honest_tx, env.alice, [], proof=p0, claimed_correct=c0),
    }
    for name, tx in cases.items():
        verdict = check_submission(env.task, tx, env.root)
        assert verdict.reason == refusal.SHARD_MISMATCH, (name, verdict)
    both = _with(env.honest_tx, env.alice, proof=p0)
    assert check_submission(env.task, both, env.root).reason == refusal.MALFORMED


def test_shard_counts_must_add_up_and_match_each_shard() -> None:
    env = sharded_env()
    (p0, c0), (p1, c1) = _shards(env.honest_tx)
    inflated = _with(env.honest_tx, env.alice, claimed_correct=c0 + c1 + 1)
    v = check_submission(env.task, inflated, env.root)
    assert v.reason == refusal.CLAIM_MISMATCH and "sum" in v.detail, v
    # same total, moved between shards: shard-level claim is wrong
    moved = [(p0, c0 + 1), (p1, c1 - 1)] if c1 > 0 else [(p0, c0 - 1), (p1, c1 + 1)]
    v = check_submission(env.task, _with(env.honest_tx, env.alice, moved), env.root)
    assert v.reason == refusal.CLAIM_MISMATCH and "shard" in v.detail, v
    over = _with(env.honest_tx, env.alice, [(p0, SHARD_SIZE + 1), (p1, c1)], claimed_correct=SHARD_SIZE + 1 + c1)
    assert check_submission(env.task, over, env.root).reason == refusal.CLAIM_MISMATCH


def test_shards_in_the_wrong_slots_or_replayed_do_not_verify() -> None:
    env = sharded_env()
    (p0, c0), (p1, c1) = _shards(env.honest_tx)
    swapped = _with(env.honest_tx, env.alice, [(p1, c0), (p0, c1)])  # each proof checked on the other's slice
    v = check_submission(env.task, swapped, env.root)
    assert v.reason == refusal.INVALID_PROOF and "shard 0" in v.detail, v
    replayed = _with(env.honest_tx, env.alice, round=2)
    assert check_submission(env.task, replayed, env.root).reason == refusal.INVALID_PROOF
    copied = _with(env.honest_tx, env.bob, participant=env.bob.public)
    assert check_submission(env.task, copied, env.root).reason == refusal.INVALID_PROOF
    tampered = bytearray(p1)
    tampered[len(tampered) // 2] ^= 1
    v = check_submission(env.task, _with(env.honest_tx, env.alice, [(p0, c0), (bytes(tampered), c1)]), env.root)
    assert v.reason == refusal.INVALID_PROOF and "shard 1" in v.detail, v


def test_every_shard_proof_verifies_only_on_its_own_slice() -> None:
    env = sharded_env()
    task, paths = env.task, env.task.paths
    s0, s1 = env.honest.shards
    inst = task.instances(1, env.alice.public, s1.correct, 1)
    assert circuit.verify(s1.proof, inst, paths["settings"], paths["vk"], paths["srs"])
    wrong_slice = task.instances(1, env.alice.public, s1.correct, 0)
    assert not circuit.verify(s1.proof, wrong_slice, paths["settings"], paths["vk"], paths["srs"])


def test_a_padded_last_shard_counts_only_its_real_samples(tmp_path) -> None:
    """Issue 14: 5 test samples in shards of 2 — the last shard holds 1 sample and 1 padding. Every
    shard's count is masked by a public input the verifier rebuilds (1 per sample, 0 per padding):
    an honest submission is accepted with the exact count, a claim above a shard's real samples is
    refused before any SNARK, and a real proof made with the padding unmasked (counted as a win)
    does not verify against the task's own instances."""
    from zkpot.crypto import KeyPair
    from zkpot.zkp import circuit, data, model, prove, submission
    from zkpot.zkp.task import create_task

    task = create_task(tmp_path / "task", KeyPair.from_seed(b"\x01" * 32),
                       TaskConfig(test_set_size=5, shard_size=2, min_correct=0, reference_models=1))
    assert task.masked and task.n_shards == 3 and task.params["n_shards"] == 3
    assert [task.shard_samples(i) for i in range(3)] == [2, 2, 1]
    assert task.shard_mask(0) == [1, 1] and task.shard_mask(2) == [1, 0]
    assert len(task.shard(2)) == 2 and task.shard(2).x[1].sum() == 0  # padded with a zero sample
    alice = KeyPair.from_seed(b"\x02" * 32)
    shard = data.dirichlet_shards(4, 100.0, seed=7)[0]
    honest = prove.prove_round(task, task.initial_model, shard, 1, alice.public, tmp_path / "a", seed=1)
    net = model.decode(honest.model_params, task.arch)
    assert honest.claimed_correct == model.correct_count(net, task.test_set) <= 5  # the 5 samples, no padding
    tx = submission.round_tx(alice, task.task_id, 1, honest)
    assert check_submission(task, tx, tmp_path).valid

    shards = [(s.proof, s.correct) for s in tx.submit_proof.shards]
    shards[0], shards[2] = (shards[0][0], 0), (shards[2][0], 2)  # the total stays within the test set
    over = _with(tx, alice, shards, claimed_correct=sum(c for _, c in shards))
    verdict = check_submission(task, over, tmp_path)
    assert verdict.reason == refusal.CLAIM_MISMATCH and "shard 2 claims 2 correct of 1" in verdict.detail

    # the padding unmasked and labelled as the model predicts a blank image: it would count
    blank = int(net(torch.zeros(1, 64)).argmax())
    work = tmp_path / "forged"
    prove.compile_step(task, honest.model_params, work)
    prove.witness_step(task, work, 2, 1, alice.public)
    doc = json.loads((prove.shard_dir(work, 2) / "input.json").read_text())
    doc["input_data"][1][1] = blank
    doc["input_data"][-1] = [1, 1]
    (prove.shard_dir(work, 2) / "input.json").write_text(json.dumps(doc))
    wit = circuit.gen_witness(prove.shard_dir(work, 2) / "input.json", work / "model.compiled",
                              prove.shard_dir(work, 2) / "witness.json", task.paths["vk"], task.paths["srs"])
    forged_count = circuit.witness_count(wit)
    assert forged_count == honest.shards[2].correct + 1  # the padding counted
    forged = circuit.prove(prove.shard_dir(work, 2) / "witness.json", work / "model.compiled", task.paths["pk"],
                           prove.shard_dir(work, 2) / "proof.json", task.paths["srs"])
    for claim in (forged_count, honest.shards[2].correct):
        assert not circuit.verify(forged, task.instances(1, alice.public, claim, 2), task.paths["settings"],
                                  task.paths["vk"], task.paths["srs"], tmp_path)

"""The task and the ZKPoT checks in-process, on one small real task and one real proof."""

from __future__ import annotations

import shutil

import pytest
import torch
from zkp_env import other_test_set_proof, resign, shared_env

from zkpot import refusal
from zkpot.zkp import circuit, model, prove
from zkpot.zkp.task import TaskError, load_task
from zkpot.zkp.verify import check_submission

R = refusal.R


def test_task_manifest_and_artefacts() -> None:
    env = shared_env()
    m = env.task.manifest
    assert m.architecture == "mlp:64-16-10"
    assert m.test_set_size == 8 and m.insecure_dev_srs and m.publisher == env.publisher.public
    assert set(m.artefacts) == {"settings", "vk", "pk", "srs", "test_set", "initial_model", "params"}
    assert env.task.publish_tx.publish_task.initial_model == env.task.initial_model
    assert env.task.n_commitments >= 1


def test_load_task_rejects_a_tampered_artefact(tmp_path) -> None:
    env = shared_env()
    copy = tmp_path / "task"
    shutil.copytree(env.task.dir, copy)
    assert load_task(copy).task_id == env.task.task_id
    vk = copy / "vk.key"
    raw = bytearray(vk.read_bytes())
    raw[100] ^= 1
    vk.write_bytes(bytes(raw))
    with pytest.raises(TaskError, match="vk.key"):
        load_task(copy)


def test_honest_proof_is_small_commits_the_model_and_verifies() -> None:
    env = shared_env()
    h = env.honest
    assert len(h.proof) < 16 * 1024  # proof bytes only; instances are rebuilt by the verifier
    assert h.model_commitment == h.proof[: env.task.commitment_size]
    assert 0 <= h.claimed_correct <= 8 and h.quantized_accuracy == h.claimed_correct / 8
    assert abs(h.float_accuracy - h.quantized_accuracy) <= 0.25
    verdict = check_submission(env.task, env.honest_tx, env.root)
    assert verdict.valid, verdict
    # the instances bind the round: the same proof fails on round 2's instances
    inst2 = env.task.instances(2, env.alice.public, h.claimed_correct)
    paths = env.task.paths
    assert not circuit.verify(h.proof, inst2, paths["settings"], paths["vk"], paths["srs"])


def test_other_test_set_proof_passes_naive_check_but_is_rejected() -> None:
    env = shared_env()
    tx = resign(env.honest_tx, env.alice, proof=other_test_set_proof())
    verdict = check_submission(env.task, tx, env.root)
    assert verdict.reason == refusal.INVALID_PROOF, verdict


def test_higher_claim_is_a_claim_mismatch() -> None:
    env = shared_env()
    claim = env.honest.claimed_correct + 1 if env.honest.claimed_correct < 8 else env.honest.claimed_correct - 1
    verdict = check_submission(env.task, resign(env.honest_tx, env.alice, claimed_correct=claim), env.root)
    assert verdict.reason == refusal.CLAIM_MISMATCH, verdict


def test_out_of_range_model_is_refused_before_proving(tmp_path) -> None:
    env = shared_env()
    net = model.decode(env.task.initial_model, env.task.arch)
    with torch.no_grad():
        net.fc2.weight[0, 0] = env.task.weight_bound * 3
    with pytest.raises(prove.ProveRangeError, match="calibrated range"):
        prove.circuit_step(env.task, model.encode(net), 1, env.alice.public, tmp_path / "w")

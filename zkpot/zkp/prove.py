"""A participant's round: train on the private shard, prove the accuracy of the revealed model.

Split into steps (train, circuit, prove) so a service can report progress between them and run
each in a worker process. The proven model is exactly the revealed one: the trained model is
encoded to zkpot.model_codec fixed point, decoded again, and that decoded model is what gets
exported, committed and proven.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from zkpot import chain, model_codec
from zkpot.crypto import KeyPair
from zkpot.model_codec import ModelFormatError
from zkpot.v1 import types_pb2
from zkpot.zkp import circuit, model
from zkpot.zkp.data import Dataset
from zkpot.zkp.task import Task

DEFAULT_LOCAL_EPOCHS = 5


class ProveInputError(ValueError):
    """Bad request (maps to INVALID_ARGUMENT)."""


class ProveRangeError(ValueError):
    """The model leaves the task's calibrated range (maps to FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class Trained:
    model_params: bytes
    model_cid: str
    float_correct: int
    train_seconds: float


@dataclass(frozen=True)
class Witnessed:
    correct: int
    compile_seconds: float
    witness_seconds: float


@dataclass(frozen=True)
class Proven:
    proof: bytes
    model_commitment: bytes
    prove_seconds: float


@dataclass(frozen=True)
class RoundProof:
    """Everything a SubmitProof transaction needs, plus figures for the participant."""

    round: int
    participant: bytes
    proof: bytes
    model_commitment: bytes
    claimed_correct: int
    test_set_size: int
    float_accuracy: float
    quantized_accuracy: float
    model_params: bytes
    model_cid: str
    train_seconds: float
    compile_seconds: float
    witness_seconds: float
    prove_seconds: float


def decode_global(task: Task, global_model: bytes) -> model.MLP:
    try:
        return model.decode(global_model, task.hidden)
    except ModelFormatError as exc:
        raise ProveInputError(f"global model: {exc}") from exc


def train_step(task: Task, global_model: bytes, shard: Dataset, epochs: int, seed: int) -> Trained:
    t0 = time.perf_counter()
    net = decode_global(task, global_model)
    net = model.train(net, shard, epochs or DEFAULT_LOCAL_EPOCHS, seed, task.weight_bound)
    params = model.encode(net)
    revealed = model.decode(params, task.hidden)  # what validators will see and aggregate
    return Trained(params, model_codec.model_cid(params), model.correct_count(revealed, task.test_set),
                   time.perf_counter() - t0)


def check_range(task: Task, net: model.MLP) -> None:
    worst = model.max_abs_weight(net)
    if worst > task.weight_bound:
        raise ProveRangeError(f"model has a weight of magnitude {worst:.4g}, outside the task's calibrated range "
                              f"±{task.weight_bound:g}; clip weights to the task's bound")


def circuit_step(task: Task, model_params: bytes, round_: int, participant: bytes, workdir: Path) -> Witnessed:
    """Export + compile the revealed model with the task's settings and generate the witness."""
    net = decode_global(task, model_params)
    check_range(task, net)
    workdir.mkdir(parents=True, exist_ok=True)
    limbs = task.binding(round_, participant)
    t0 = time.perf_counter()
    circuit.export_onnx(net, task.test_set, workdir / "model.onnx")
    circuit.compile_model(workdir / "model.onnx", task.paths["settings"], workdir / "model.compiled")
    circuit.write_input(task.test_set, limbs, workdir / "input.json")
    t1 = time.perf_counter()
    try:
        wit = circuit.gen_witness(workdir / "input.json", workdir / "model.compiled", workdir / "witness.json",
                                  task.paths["vk"], task.paths["srs"])
    except circuit.CircuitError as exc:
        raise ProveRangeError(f"witness generation failed; the model leaves the task's calibrated range ({exc})") \
            from exc
    return Witnessed(circuit.witness_count(wit), t1 - t0, time.perf_counter() - t1)


def prove_step(task: Task, workdir: Path) -> Proven:
    t0 = time.perf_counter()
    proof = circuit.prove(workdir / "witness.json", workdir / "model.compiled", task.paths["pk"],
                          workdir / "proof.json", task.paths["srs"])
    return Proven(proof, circuit.proof_commitment(proof, task.n_commitments), time.perf_counter() - t0)


def prove_round(task: Task, global_model: bytes, shard: Dataset, round_: int, participant: bytes, workdir: Path,
                epochs: int = 0, seed: int = 0, keep_files: bool = False) -> RoundProof:
    """The whole round in this process (tests, benchmarks; the service runs the steps in a worker)."""
    try:
        trained = train_step(task, global_model, shard, epochs, seed)
        wit = circuit_step(task, trained.model_params, round_, participant, workdir)
        proven = prove_step(task, workdir)
    finally:
        if not keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
    return assemble(task, round_, participant, trained, wit, proven)


def assemble(task: Task, round_: int, participant: bytes, trained: Trained, wit: Witnessed,
             proven: Proven) -> RoundProof:
    n = len(task.test_set)
    return RoundProof(
        round=round_, participant=participant, proof=proven.proof, model_commitment=proven.model_commitment,
        claimed_correct=wit.correct, test_set_size=n, float_accuracy=trained.float_correct / n,
        quantized_accuracy=wit.correct / n, model_params=trained.model_params, model_cid=trained.model_cid,
        train_seconds=trained.train_seconds, compile_seconds=wit.compile_seconds,
        witness_seconds=wit.witness_seconds, prove_seconds=proven.prove_seconds,
    )


def submit_proof_tx(key: KeyPair, task_id: bytes, round_: int, proof: bytes, model_commitment: bytes,
                    claimed_correct: int, model_params: bytes, nonce: int = 0) -> types_pb2.Transaction:
    """The signed SubmitProof transaction for a proven round (participant = key.public).

    First cut: the model is revealed (model_params) so validators can aggregate it; secure
    aggregation (masked shares + commitment openings) replaces this later.
    """
    tx = types_pb2.Transaction(
        submit_proof=types_pb2.SubmitProof(
            task_id=task_id, round=round_, participant=key.public, model_commitment=model_commitment,
            claimed_correct=claimed_correct, proof=proof, model_params=model_params,
            model_cid=model_codec.model_cid(model_params),
        ),
        nonce=nonce,
    )
    return chain.sign_tx(key, tx)

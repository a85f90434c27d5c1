"""A participant's round: train on the private shard, prove the accuracy of the revealed model.

Split into steps (train, compile, witness per test-set shard, prove per shard) so a service can
report progress between them and run the per-shard steps in parallel worker processes. The proven
model is exactly the revealed one: the trained model is encoded to zkpot.model_codec fixed point,
decoded again, and that decoded model is what gets exported, committed and proven.

Sharding: the task's public test set is cut into equal shards; the model is exported and compiled
once (for the shard shape) and every shard gets its own witness and proof in `workdir/shard-<i>/`.
All shard proofs commit to the same parameters, so they carry the same model commitment.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zkpot import model_codec
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
    """Witness of one shard (or, from circuit_step, of all shards: correct is then their sum)."""

    correct: int
    compile_seconds: float
    witness_seconds: float


@dataclass(frozen=True)
class Proven:
    """The proof of one shard."""

    proof: bytes
    model_commitment: bytes
    prove_seconds: float


@dataclass(frozen=True)
class ShardResult:
    index: int
    proof: bytes
    correct: int


@dataclass(frozen=True)
class RoundProof:
    """Everything a SubmitProof transaction needs, plus figures for the participant.

    `proof` is the single proof of a one-shard task (empty when the task has several shards);
    `shards` always lists every shard's proof and count, in shard order.
    """

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
    shards: tuple[ShardResult, ...] = ()


def decode_global(task: Task, global_model: bytes) -> model.Net:
    try:
        return model.decode(global_model, task.arch)
    except ModelFormatError as exc:
        raise ProveInputError(f"global model: {exc}") from exc


def train_step(task: Task, global_model: bytes, shard: Dataset, epochs: int, seed: int,
               behaviour: str = "") -> Trained:
    """Local training; `behaviour` (experiments) trains as a Byzantine participant would."""
    t0 = time.perf_counter()
    net = decode_global(task, global_model)
    net = model.train_as(behaviour, net, shard, epochs or DEFAULT_LOCAL_EPOCHS, seed, task.weight_bound)
    params = model.encode(net)
    revealed = model.decode(params, task.arch)  # what validators will see and aggregate
    return Trained(params, model_codec.model_cid(params), model.correct_count(revealed, task.test_set),
                   time.perf_counter() - t0)


def check_range(task: Task, net: model.Net) -> None:
    worst = model.max_abs_weight(net)
    if worst > task.weight_bound:
        raise ProveRangeError(f"model has a weight of magnitude {worst:.4g}, outside the task's calibrated range "
                              f"±{task.weight_bound:g}; clip weights to the task's bound")


def check_circuit_shape(task: Task, net: model.Net) -> None:
    """A tensor whose every value quantizes to 0 makes ezkl compile another circuit than the task's
    (the constant is folded away); its proof would never finish (ezkl 23 hangs), so refuse it here."""
    from zkpot.zkp import commitment  # its layout is learned once per process (~0.5 s)

    for t in commitment.layout(task).tensors:
        values = net.get_parameter(t.name).detach().cpu().numpy().ravel()
        if not np.any(circuit.quantize(values, t.scale)):
            raise ProveRangeError(f"{t.name} is all zeros at the circuit's scale 2^{t.scale}: ezkl would compile "
                                  "another circuit than the task's; retrain or perturb the model")


def shard_dir(workdir: Path, index: int) -> Path:
    return workdir / f"shard-{index}"


def compile_step(task: Task, model_params: bytes, workdir: Path) -> float:
    """Export + compile the revealed model once, for the shard shape, with the task's settings."""
    net = decode_global(task, model_params)
    check_range(task, net)
    check_circuit_shape(task, net)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    circuit.export_onnx(net, task.shard(0), workdir / "model.onnx", mask=task.shard_mask(0))
    circuit.compile_model(workdir / "model.onnx", task.paths["settings"], workdir / "model.compiled")
    return time.perf_counter() - t0


def witness_step(task: Task, workdir: Path, index: int, round_: int, participant: bytes) -> Witnessed:
    """Witness of shard `index` (needs compile_step's files); also computes the parameter polycommit."""
    d = shard_dir(workdir, index)
    d.mkdir(parents=True, exist_ok=True)
    circuit.write_input(task.shard(index), task.binding(round_, participant), task.norm_bound, d / "input.json",
                        task.arch.n_classes, mask=task.shard_mask(index))
    t0 = time.perf_counter()
    try:
        wit = circuit.gen_witness(d / "input.json", workdir / "model.compiled", d / "witness.json",
                                  task.paths["vk"], task.paths["srs"])
    except circuit.CircuitError as exc:
        raise ProveRangeError(f"witness generation failed; the model leaves the task's calibrated range ({exc})") \
            from exc
    if circuit.witness_excess(wit) != 0:  # no proof of it could verify: say why now
        raise ProveRangeError(f"the model's squared norm exceeds the task's bound {task.norm_bound:g}; clip weights to "
                              f"±{task.weight_bound:g}")
    return Witnessed(circuit.witness_count(wit), 0.0, time.perf_counter() - t0)


def prove_shard_step(task: Task, workdir: Path, index: int) -> Proven:
    d = shard_dir(workdir, index)
    t0 = time.perf_counter()
    proof = circuit.prove(d / "witness.json", workdir / "model.compiled", task.paths["pk"], d / "proof.json",
                          task.paths["srs"])
    return Proven(proof, circuit.proof_commitment(proof, task.n_commitments), time.perf_counter() - t0)


def circuit_step(task: Task, model_params: bytes, round_: int, participant: bytes, workdir: Path) -> Witnessed:
    """compile_step + every shard's witness, in this process (correct: the sum over shards)."""
    compile_s = compile_step(task, model_params, workdir)
    shards = [witness_step(task, workdir, i, round_, participant) for i in range(task.n_shards)]
    return Witnessed(sum(w.correct for w in shards), compile_s, sum(w.witness_seconds for w in shards))


def prove_step(task: Task, workdir: Path) -> list[Proven]:
    """Every shard's proof, one after the other in this process."""
    return [prove_shard_step(task, workdir, i) for i in range(task.n_shards)]


def prove_round(task: Task, global_model: bytes, shard: Dataset, round_: int, participant: bytes, workdir: Path,
                epochs: int = 0, seed: int = 0, keep_files: bool = False) -> RoundProof:
    """The whole round in this process (tests, benchmarks; the service runs the steps in workers)."""
    try:
        trained = train_step(task, global_model, shard, epochs, seed)
        compile_s = compile_step(task, trained.model_params, workdir)
        wits = [witness_step(task, workdir, i, round_, participant) for i in range(task.n_shards)]
        t0 = time.perf_counter()
        proven = prove_step(task, workdir)
        prove_s = time.perf_counter() - t0
    finally:
        if not keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
    return assemble(task, round_, participant, trained, compile_s, wits, proven, prove_s)


def assemble(task: Task, round_: int, participant: bytes, trained: Trained, compile_seconds: float,
             wits: list[Witnessed], proven: list[Proven], prove_seconds: float) -> RoundProof:
    """The round's result from its per-shard parts (shard order); checks they agree on the commitment."""
    if len(wits) != task.n_shards or len(proven) != task.n_shards:
        raise circuit.CircuitError(f"expected {task.n_shards} shards, got {len(wits)} witnesses, {len(proven)} proofs")
    commitments = {p.model_commitment for p in proven}
    if len(commitments) != 1:  # same parameters, same settings: ezkl's polycommit is deterministic
        raise circuit.CircuitError("shard proofs carry different model commitments")
    n = len(task.test_set)
    correct = sum(w.correct for w in wits)
    shards = tuple(ShardResult(i, p.proof, w.correct) for i, (w, p) in enumerate(zip(wits, proven, strict=True)))
    return RoundProof(
        round=round_, participant=participant, proof=proven[0].proof if task.n_shards == 1 else b"",
        model_commitment=proven[0].model_commitment, claimed_correct=correct, test_set_size=n,
        float_accuracy=trained.float_correct / n, quantized_accuracy=correct / n, model_params=trained.model_params,
        model_cid=trained.model_cid, train_seconds=trained.train_seconds, compile_seconds=compile_seconds,
        witness_seconds=sum(w.witness_seconds for w in wits), prove_seconds=prove_seconds, shards=shards,
    )


def shard_protos(shards: Sequence[ShardResult]) -> list[types_pb2.ShardProof]:
    return [types_pb2.ShardProof(proof=s.proof, correct=s.correct) for s in shards]

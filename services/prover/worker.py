"""The prover's worker processes: hold the task and the shard, run training, witness and proving.

Run as a ProcessPoolExecutor (spawn) of --prove-workers processes so the service's event loop keeps
answering (health checks included) during a proof, and so the shards of one round are proven in
parallel. State loaded once per process and reused across rounds: the task (settings, vk, test
set), the private shard, and the proving key's file, read once at start so that every ezkl.prove
(which takes the key by path) finds it in the page cache. Each worker's ezkl (rayon) thread pool
gets cores / workers threads, so parallel shard proofs share the cores instead of fighting for them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from zkpot.zkp import commitment, data, prove
from zkpot.zkp.task import Task, load_task

_task: Task | None = None
_shard: data.Dataset | None = None
_workbase: Path | None = None


def init(task_dir: str, shard_path: str, workbase: str, threads: int = 0) -> None:
    global _task, _shard, _workbase
    if threads > 0:  # ezkl's rayon pool reads this on first use: N workers x threads = the cores, no oversubscription
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(int(os.environ.get("ZKPOT_TORCH_THREADS", "1")))  # deterministic, shares the cores
    _task = load_task(Path(task_dir))  # reads (and content-checks) every artefact, the pk included
    commitment.layout(_task)  # the circuit's commitment layout (prove.check_circuit_shape), before SERVING
    _shard = data.load(Path(shard_path), _task.arch)
    _workbase = Path(workbase)
    _workbase.mkdir(parents=True, exist_ok=True)


def _state() -> tuple[Task, data.Dataset, Path]:
    assert _task is not None and _shard is not None and _workbase is not None, "worker not initialised"
    return _task, _shard, _workbase


def train(global_model: bytes, epochs: int, seed: int, behaviour: str = "") -> prove.Trained:
    task, shard, _ = _state()
    return prove.train_step(task, global_model, shard, epochs, seed, behaviour)


def committed_params(model_params: bytes) -> bytes:
    """The integers the proof commits to, big-endian int64 (what a secure-aggregation member masks)."""
    task, _, _ = _state()
    return commitment.param_vector(task, model_params).astype(">i8").tobytes()


def compile_job(job: str, model_params: bytes) -> float:
    task, _, base = _state()
    return prove.compile_step(task, model_params, base / job)


def witness(job: str, index: int, round_: int, participant: bytes) -> prove.Witnessed:
    task, _, base = _state()
    return prove.witness_step(task, base / job, index, round_, participant)


def prove_shard(job: str, index: int) -> prove.Proven:
    task, _, base = _state()
    return prove.prove_shard_step(task, base / job, index)


def cleanup(job: str) -> None:
    _, _, base = _state()
    shutil.rmtree(base / job, ignore_errors=True)


def ping() -> int:
    return os.getpid()

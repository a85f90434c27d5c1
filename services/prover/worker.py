"""The prover's worker process: holds the task and the shard, runs training, witness and proving.

Runs in a separate process (ProcessPoolExecutor, spawn) so the service's event loop keeps
answering (health checks included) during a proof. State loaded once per process and reused
across rounds: the task (keys, settings, test set) and the private shard.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from zkpot.zkp import data, prove
from zkpot.zkp.task import Task, load_task

_task: Task | None = None
_shard: data.Dataset | None = None
_workbase: Path | None = None


def init(task_dir: str, shard_path: str, workbase: str) -> None:
    global _task, _shard, _workbase
    import torch

    torch.set_num_threads(int(os.environ.get("ZKPOT_TORCH_THREADS", "1")))  # deterministic, shares the cores
    _task = load_task(Path(task_dir))
    _shard = data.load(Path(shard_path))
    _workbase = Path(workbase)
    _workbase.mkdir(parents=True, exist_ok=True)


def _state() -> tuple[Task, data.Dataset, Path]:
    assert _task is not None and _shard is not None and _workbase is not None, "worker not initialised"
    return _task, _shard, _workbase


def train(global_model: bytes, epochs: int, seed: int) -> prove.Trained:
    task, shard, _ = _state()
    return prove.train_step(task, global_model, shard, epochs, seed)


def witness(job: str, model_params: bytes, round_: int, participant: bytes) -> prove.Witnessed:
    task, _, base = _state()
    return prove.circuit_step(task, model_params, round_, participant, base / job)


def prove_job(job: str) -> prove.Proven:
    task, _, base = _state()
    return prove.prove_step(task, base / job)


def cleanup(job: str) -> None:
    _, _, base = _state()
    shutil.rmtree(base / job, ignore_errors=True)

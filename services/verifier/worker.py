"""The verifier's worker process: loads the task (verifying key, settings, test set) once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from zkpot import refusal
from zkpot.v1 import types_pb2
from zkpot.zkp import commitment, verify
from zkpot.zkp.task import Task, load_task

_task: Task | None = None
_workbase: Path | None = None


def init(task_dir: str, workbase: str) -> None:
    global _task, _workbase
    import torch

    torch.set_num_threads(int(os.environ.get("ZKPOT_TORCH_THREADS", "1")))
    _task = load_task(Path(task_dir))
    commitment.layout(_task)  # learn the circuit's commitment layout once (~0.5 s), before SERVING
    _workbase = Path(workbase)
    _workbase.mkdir(parents=True, exist_ok=True)


def check(tx_bytes: bytes) -> tuple[int, str, dict[str, float]]:
    """(zkpot.v1.Reason, detail, timings) of one serialized SubmitProof transaction."""
    assert _task is not None, "worker not initialised"
    try:
        tx = types_pb2.Transaction.FromString(tx_bytes)
    except Exception as exc:  # DecodeError
        return refusal.MALFORMED, f"undecodable transaction: {exc}", {}
    verdict = verify.check_submission(_task, tx, _workbase or Path(tempfile.gettempdir()))
    return verdict.reason, verdict.detail, verdict.timings


def ping() -> bool:
    return True

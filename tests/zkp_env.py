"""One small task and one honest proof, built once per test process and shared by the zkp tests.

(A module-level cache rather than a conftest fixture, so several test modules share it.)
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis, Member
from zkpot.ports import free_port  # noqa: F401 - the tests import it from here
from zkpot.v1 import types_pb2
from zkpot.zkp import data, prove, submission
from zkpot.zkp.task import Task, TaskConfig, create_task

REPO = Path(__file__).resolve().parent.parent
TEST_SET_SIZE = 8


@dataclass(frozen=True)
class ZkpEnv:
    root: Path
    task: Task
    publisher: KeyPair
    alice: KeyPair
    bob: KeyPair
    shard_path: Path
    genesis_path: Path
    honest: prove.RoundProof         # alice, round 1, from the initial model
    honest_tx: types_pb2.Transaction


_env: ZkpEnv | None = None


def shared_env() -> ZkpEnv:
    global _env
    if _env is None:
        root = Path(tempfile.mkdtemp(prefix="zkpot-zkp-test-"))
        atexit.register(shutil.rmtree, root, True)
        publisher, alice, bob = (KeyPair.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
        task = create_task(root / "task", publisher, TaskConfig(test_set_size=TEST_SET_SIZE, min_correct=0,
                                                                reference_models=2))
        shard = data.dirichlet_shards(4, 0.5, seed=7)[0]
        shard_path = root / "shard-0.npz"
        data.save(shard_path, shard)
        honest = prove.prove_round(task, task.initial_model, shard, 1, alice.public, root / "work", seed=1)
        honest_tx = submission.submit_proof_tx(alice, task.task_id, 1, honest.proof, honest.model_commitment,
                                          honest.claimed_correct, honest.model_params)
        validator = KeyPair.from_seed(b"\x09" * 32)
        genesis = Genesis(chain_id="zkp-test", genesis_time_ms=0, validators=(Member("v0", validator.public),),
                          participants=(Member("alice", alice.public, validator.public),),
                          publish_task=task.publish_tx)
        genesis_path = root / "genesis.json"
        genesis.save(genesis_path)
        _env = ZkpEnv(root, task, publisher, alice, bob, shard_path, genesis_path, honest, honest_tx)
    return _env


@dataclass(frozen=True)
class ShardedEnv:
    root: Path
    task: Task                       # 4 test samples in 2 shards of 2 (small circuit: logrows 12)
    alice: KeyPair
    bob: KeyPair
    shard_path: Path
    honest: prove.RoundProof         # alice, round 1
    honest_tx: types_pb2.Transaction
    other: prove.Proven              # bob, round 1, another model: the proof of shard 1 only


SHARDED_SIZE, SHARD_SIZE = 4, 2
_sharded: ShardedEnv | None = None


def sharded_env() -> ShardedEnv:
    """A task whose public test set is proven in 2 shards, and two real sharded submissions."""
    global _sharded
    if _sharded is None:
        root = Path(tempfile.mkdtemp(prefix="zkpot-zkp-shards-"))
        atexit.register(shutil.rmtree, root, True)
        publisher, alice, bob = (KeyPair.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
        task = create_task(root / "task", publisher, TaskConfig(test_set_size=SHARDED_SIZE, shard_size=SHARD_SIZE,
                                                                min_correct=0, reference_models=1))
        shards = data.dirichlet_shards(4, 0.5, seed=7)
        shard_path = root / "shard-0.npz"
        data.save(shard_path, shards[0])
        honest = prove.prove_round(task, task.initial_model, shards[0], 1, alice.public, root / "a", seed=1)
        trained = prove.train_step(task, task.initial_model, shards[1], 0, seed=2)
        prove.compile_step(task, trained.model_params, root / "b")
        prove.witness_step(task, root / "b", 1, 1, bob.public)
        other = prove.prove_shard_step(task, root / "b", 1)
        honest_tx = submission.round_tx(alice, task.task_id, honest.round, honest)
        _sharded = ShardedEnv(root, task, alice, bob, shard_path, honest, honest_tx, other)
    return _sharded


def start_service(args: list[str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "zkpot.cli", *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop_service(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_serving(proc: subprocess.Popen, target: str, log_path: Path, timeout: float = 90.0) -> None:
    import asyncio

    from zkpot import grpcutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            asyncio.run(grpcutil.wait_healthy(target, timeout_s=2.0))
            return
        except TimeoutError:
            continue
    raise RuntimeError(f"service not healthy after {timeout}s:\n{log_path.read_text()[-3000:]}")


_other: bytes | None = None


def other_test_set_proof() -> bytes:
    """Alice's honest model proven on a permutation of the task's test set (same count, other instances).

    ezkl.verify with the instances inside that proof file accepts it: only rebuilding the
    instances from the task catches it.
    """
    global _other
    if _other is None:
        import json

        import ezkl

        from zkpot.zkp import circuit, model

        env = shared_env()
        task = env.task
        net = model.decode(env.honest.model_params, task.arch)
        perm = list(range(1, len(task.test_set))) + [0]
        other = data.Dataset(task.test_set.x[perm], task.test_set.y[perm])
        work = env.root / "other"
        circuit.evaluate(net, other, task.binding(1, env.alice.public), task.norm_bound, task.paths["settings"], work,
                         task.paths["vk"], task.paths["srs"])
        _other = circuit.prove(work / "witness.json", work / "model.compiled", task.paths["pk"], work / "proof.json",
                               task.paths["srs"])
        assert ezkl.verify(str(work / "proof.json"), str(task.paths["settings"]), str(task.paths["vk"]),
                           str(task.paths["srs"]))
        assert json.loads((work / "proof.json").read_text())["instances"][0] != task.instances(
            1, env.alice.public, env.honest.claimed_correct)
    return _other


def resign(tx: types_pb2.Transaction, key: KeyPair, **changes: object) -> types_pb2.Transaction:
    """A copy of a SubmitProof tx with fields changed, signed by `key`."""
    from zkpot import chain

    out = types_pb2.Transaction()
    out.CopyFrom(tx)
    for name, value in changes.items():
        setattr(out.submit_proof, name, value)
    return chain.sign_tx(key, out)


def run_devnet(args: list[str], what: str, timeout_s: float = 900) -> tuple[int, str, str]:
    """`zkpot devnet ARGS` to its end (Ctrl-C past the timeout): (exit code, stdout, stderr); prints
    the tails and the time it took (pytest shows them for a failing test)."""
    import signal

    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "zkpot.cli", "devnet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    print(stdout[-6000:], stderr[-3000:], f"{what} took {time.monotonic() - t0:.0f}s", sep="\n")
    return proc.returncode, stdout, stderr

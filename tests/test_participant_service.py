"""`zkpot participant run` as a real process: it refuses to start, with one clear line and exit
code 2, when it could only do harm or nothing (a key genesis does not name, a prover made for
another task, a damaged or foreign state directory, a bad flag). Its rounds on a live network, and
its survival of kill -9, are tested by the devnet end-to-end test."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from chain_factory import make_genesis

from zkpot.crypto import KeyPair
from zkpot.ports import free_port
from zkpot.v1 import prover_pb2, prover_pb2_grpc


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zkpot.cli", "participant", "run", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def world(tmp_path: Path) -> dict:
    fx = make_genesis(n_validators=4, n_participants=2)
    fx.genesis.save(tmp_path / "genesis.json")
    fx.participant_keys[0].save(tmp_path / "p0.json")
    KeyPair.generate().save(tmp_path / "stranger.json")
    return {"dir": tmp_path, "fx": fx}


def _args(world: dict, key: str = "p0.json", prover: str = "127.0.0.1:1", **extra: str) -> list[str]:
    d = world["dir"]
    args = {"--key": str(d / key), "--genesis": str(d / "genesis.json"), "--validator": "127.0.0.1:1,127.0.0.1:2",
            "--prover": prover, "--data-dir": str(d / "state"), "--listen": f"127.0.0.1:{free_port()}",
            "--node": "p0", **extra}
    return [x for kv in args.items() for x in kv]


def test_a_key_genesis_does_not_name_is_refused(world: dict) -> None:
    out = _run(_args(world, key="stranger.json"))
    assert out.returncode == 2 and "is not a participant" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_key_or_bad_validator_flag_is_refused(world: dict) -> None:
    out = _run(_args(world, key="nope.json"))
    assert out.returncode == 2 and "no key file" in out.stderr, out.stderr
    out = _run(_args(world, **{"--validator": "127.0.0.1:1"}))
    assert out.returncode == 2 and "CONSENSUS_HOST:PORT,LEDGER_HOST:PORT" in out.stderr, out.stderr


class OtherTaskProver(prover_pb2_grpc.ProverServicer):
    def Info(self, request, context):
        return prover_pb2.ProverInfo(task_id=b"\x07" * 32, shard_samples=10, test_set_shards=1)


def test_a_prover_of_another_task_is_refused(world: dict) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prover_pb2_grpc.add_ProverServicer_to_server(OtherTaskProver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = _run(_args(world, prover=f"127.0.0.1:{port}"))
    finally:
        server.stop(0)
    assert out.returncode == 2 and "made for another task" in out.stderr, out.stderr


def test_a_damaged_or_foreign_state_dir_is_refused(world: dict) -> None:
    state = world["dir"] / "state" / "rounds"
    state.mkdir(parents=True)
    (state / "1.json").write_text("{not json")
    out = _run(_args(world))
    assert out.returncode == 2 and "1.json is unreadable" in out.stderr, out.stderr
    (state / "1.json").unlink()
    world["fx"].participant_keys[1].save(world["dir"] / "p1.json")
    out = _run(_args(world, key="p1.json"))  # p0's state dir, p1's key
    assert out.returncode == 2 and "holds the state of participant" in out.stderr, out.stderr


def test_the_participant_loads_neither_torch_nor_ezkl() -> None:
    """A participant process is small (tens of MB, bench/round.py): the heavy libraries are its prover's."""
    code = ("import sys, services.participant.server, services.participant.cli, services.participant.rounds; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ezkl', 'onnx', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr

"""Issue 20.7: a finished network can be looked at. `zkpot ledger <query> --data-dir DIR` answers
from a stopped ledger (read-only open, the service's own query code), names genesis members (p0,
v1) beside their keys, prints tx ids in full where another command takes them, and refuses a
ledger a running server holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from chain_factory import ChainBuilder, make_genesis

from services.ledger.ledger import Ledger
from zkpot import chain


def _zkpot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zkpot.cli", "ledger", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def stopped(tmp_path: Path) -> tuple[Path, str]:
    fx = make_genesis(n_validators=4, n_participants=2, rounds=2)
    fx.genesis.save(tmp_path / "genesis.json")
    data = tmp_path / "nodes" / "v0" / "ledger"
    ledger = Ledger(data, fx.genesis)
    builder = ChainBuilder(fx)
    tx = fx.submit(0, round_=1, claimed=12)
    req = builder.next_block([tx])
    ledger.append(req)
    builder.accept(req)
    ledger.close()
    return data, chain.tx_id(tx).hex()


def test_queries_answer_from_a_stopped_ledger_with_names(stopped: tuple[Path, str]) -> None:
    data, tx_id = stopped
    head = _zkpot("head", "--data-dir", str(data))
    assert head.returncode == 0, head.stderr
    assert "height        1" in head.stdout and "current round 1 of 2" in head.stdout
    block = _zkpot("block", "--height", "1", "--data-dir", str(data))
    assert block.returncode == 0, block.stderr
    assert tx_id in block.stdout and "participant participant-0 (" in block.stdout  # the full id, the member's name
    tx = _zkpot("tx", tx_id, "--data-dir", str(data))
    assert tx.returncode == 0, tx.stderr
    assert "round 1" in tx.stdout and "sender participant-0 " in tx.stdout, tx.stdout
    rnd = _zkpot("round", "--round", "1", "--data-dir", str(data))
    assert rnd.returncode == 0, rnd.stderr
    assert "participant-0 (" in rnd.stdout and "correct 12" in rnd.stdout, rnd.stdout


def test_a_running_or_missing_ledger_is_refused_clearly(stopped: tuple[Path, str], tmp_path: Path) -> None:
    data, _ = stopped
    out = _zkpot("head", "--data-dir", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "not a ledger's RocksDB directory" in out.stderr, out.stderr
    from chain_factory import make_genesis as other_genesis

    ledger = Ledger(data, other_genesis(n_validators=4, n_participants=2, rounds=2).genesis)  # holds the lock
    try:
        out = _zkpot("head", "--data-dir", str(data))
        assert out.returncode == 2 and "in use by a running ledger" in out.stderr, out.stderr
    finally:
        ledger.close()
    wrong = tmp_path / "other-genesis.json"
    make_genesis(n_validators=4, n_participants=2, rounds=2, chain_id="another").genesis.save(wrong)
    out = _zkpot("head", "--data-dir", str(data), "--genesis", str(wrong))
    assert out.returncode == 2 and "different chain" in out.stderr, out.stderr


def test_task_evaluate_scores_a_stored_model(tmp_path: Path) -> None:
    """`zkpot task evaluate TASK MODEL`: a global model fetched from the chain, on the public test
    set and the held-out split; a file that is not a model of the task is refused clearly."""
    import json

    from zkp_env import shared_env

    env = shared_env()
    model = tmp_path / "model.bin"
    model.write_bytes(env.task.initial_model)
    out = subprocess.run([sys.executable, "-m", "zkpot.cli", "task", "evaluate", str(env.task.dir), str(model)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["test_set_size"] == len(env.task.test_set) and figures["held_out_size"] > 100
    assert 0.0 <= figures["held_out_accuracy"] <= 1.0
    model.write_bytes(b"junk")
    out = subprocess.run([sys.executable, "-m", "zkpot.cli", "task", "evaluate", str(env.task.dir), str(model)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("error:") and "Traceback" not in out.stderr

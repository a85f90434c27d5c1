"""Ledger backups (RocksDB checkpoints) and restore: online during appends, offline, refusals."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from chain_factory import ChainBuilder, Fixture, make_genesis
from ledger_process import REPO, ledger_process

from services.ledger import backup
from services.ledger.ledger import Ledger
from services.ledger.store import COLUMN_FAMILIES, Store
from zkpot.v1 import ledger_pb2


def _fixture() -> Fixture:
    # a round closes every 3 blocks (all three participants in), so blocks keep changing state
    return make_genesis(n_participants=3, rounds=10_000, min_correct=10, deadline_blocks=3)


def _txs(fx: Fixture, height: int) -> list:
    return [fx.submit(height % 3, (height - 1) // 3 + 1, 8 + height % 9), fx.payload(b"x" * 200)]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zkpot.cli", "ledger", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def _dump(path: Path) -> dict[str, dict[bytes, bytes]]:
    store = Store(path, read_only=True)
    try:
        return {cf: dict(store.items(cf)) for cf in COLUMN_FAMILIES}
    finally:
        store.close()


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_online_backup_during_appends_restores_an_exact_prefix(tmp_path):
    fx = _fixture()
    gp = tmp_path / "genesis.json"
    fx.genesis.save(gp)
    b = ChainBuilder(fx)
    lp = ledger_process(tmp_path, gp).start()
    stop, errors = threading.Event(), []

    def appender() -> None:
        try:
            while not stop.is_set():
                req = b.next_block(_txs(fx, b.height + 1))
                resp = lp.stub.Append(req, timeout=10)
                assert all(r.accepted for r in resp.results), resp.results
                b.accept(req)
        except Exception as exc:  # surfaced by the main thread
            errors.append(exc)

    t = threading.Thread(target=appender, daemon=True)
    t.start()
    try:
        _wait(lambda: b.height >= 30 or errors, 30, "30 appends")
        before = b.height
        out = _cli("backup", "--target", lp.target, "--out", str(tmp_path / "bk"), "--genesis", str(gp))
        assert out.returncode == 0, out.stderr
        after = b.height
        _one_backup_at_a_time(lp.stub, tmp_path)
        _wait(lambda: b.height >= after + 10 or errors, 30, "appends after the backup")
    finally:
        stop.set()
        t.join(15)
        assert lp.stop() == 0
    assert not errors, errors
    live_height = b.height

    restored = tmp_path / "restored"
    out = _cli("restore", "--from", str(tmp_path / "bk"), "--data-dir", str(restored), "--genesis", str(gp))
    assert out.returncode == 0, out.stderr
    got, live = _dump(restored), _dump(lp.data_dir)
    height = backup.verify_chain(restored, fx.genesis).height
    # taken mid-stream: appends had run before the backup and went on after it
    assert before <= height <= after < live_height, (before, height, after, live_height)
    assert f"head {height} " in out.stdout
    # every block up to the backup's head is byte-identical to the live chain's; none beyond it
    assert got["blocks"] == {k: v for k, v in live["blocks"].items() if int.from_bytes(k, "big") <= height}
    # indexes, state, blobs and head are exactly those of a replica that executed blocks 1..height
    replica = Ledger(tmp_path / "replica", fx.genesis)
    try:
        roots = [replica.append(req).state_root for req in b.blocks[:height]]
    finally:
        replica.close()
    assert got == _dump(tmp_path / "replica")
    assert ledger_pb2.StoredBlock.FromString(got["blocks"][height.to_bytes(8, "big")]).state_root == roots[-1]

    # the restored ledger serves and takes the live chain's next block, reaching the same state root
    lp2 = ledger_process(tmp_path / "r", gp)
    lp2.data_dir = restored
    (tmp_path / "r").mkdir()
    lp2.start()
    try:
        resp = lp2.stub.Append(b.blocks[height], timeout=10)
        nxt = ledger_pb2.StoredBlock.FromString(live["blocks"][(height + 1).to_bytes(8, "big")])
        assert (resp.height, resp.state_root) == (height + 1, nxt.state_root)
    finally:
        assert lp2.stop() == 0


def _one_backup_at_a_time(stub, tmp_path: Path) -> None:
    big = stub.Backup(ledger_pb2.BackupRequest(chunk_size=8 * 1024 * 1024), timeout=10)
    with pytest.raises(grpc.RpcError) as exc:
        next(big)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    held = stub.Backup(ledger_pb2.BackupRequest(chunk_size=512), timeout=20)
    assert next(held).WhichOneof("part") == "info"  # the checkpoint exists; the stream is held open
    with pytest.raises(grpc.RpcError) as exc:
        next(stub.Backup(ledger_pb2.BackupRequest(), timeout=10))
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    held.cancel()
    # the cancelled backup's scratch checkpoint is removed
    _wait(lambda: not list(tmp_path.glob(backup.SCRATCH_MARK + "*")), 10, "scratch removal")


@pytest.fixture
def stopped_ledger(tmp_path):
    fx = _fixture()
    b = ChainBuilder(fx)
    led = Ledger(tmp_path / "db", fx.genesis)
    for _ in range(12):
        led.append(b.extend(_txs(fx, b.height + 1)))
    led.close()
    gp = tmp_path / "genesis.json"
    fx.genesis.save(gp)
    return fx, b, tmp_path / "db", gp


def test_offline_backup_and_restore_refusals(tmp_path, stopped_ledger):
    fx, b, db, gp = stopped_ledger
    bk = tmp_path / "bk"
    out = _cli("backup", "--data-dir", str(db), "--out", str(bk), "--genesis", str(gp))
    assert out.returncode == 0 and "12 " in out.stdout.split("head")[1], out.stdout + out.stderr
    assert _dump(bk) == _dump(db)
    # never over a non-empty directory
    out = _cli("backup", "--data-dir", str(db), "--out", str(bk))
    assert out.returncode == 1 and "not an empty directory" in out.stderr

    # restore refuses a non-empty data dir without --force, and leaves it untouched
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    out = _cli("restore", "--from", str(bk), "--data-dir", str(target), "--genesis", str(gp))
    assert out.returncode == 1 and "--force" in out.stderr and (target / "keep").exists()
    # another chain's genesis: refused before anything is replaced
    other = tmp_path / "other.json"
    make_genesis(seed=99).genesis.save(other)
    out = _cli("restore", "--from", str(bk), "--data-dir", str(target), "--genesis", str(other), "--force")
    assert out.returncode == 1 and "genesis does not match" in out.stderr and (target / "keep").exists()
    # a ledger holding the data dir: refused
    busy = Ledger(db, fx.genesis)
    try:
        with pytest.raises(backup.BackupError, match="in use"):
            backup.restore(bk, db, fx.genesis, force=True)
        with pytest.raises(backup.BackupError, match="--target"):
            backup.backup_offline(db, tmp_path / "bk-busy", fx.genesis)
    finally:
        busy.close()
    out = _cli("restore", "--from", str(bk), "--data-dir", str(target), "--genesis", str(gp), "--force")
    assert out.returncode == 0, out.stderr
    assert not (target / "keep").exists() and _dump(target) == _dump(db)
    assert not list(tmp_path.glob(backup.SCRATCH_MARK + "*"))  # no scratch left behind
    led = Ledger(target, fx.genesis)  # and it opens as a ledger at the same head
    try:
        assert led.head.height == 12 and led.head.block_hash == b.head_hash
    finally:
        led.close()


def test_restore_force_replaces_a_corrupt_ledger_nobody_holds(tmp_path, stopped_ledger):
    """--force exists for this: a ledger that no longer opens (issue 20.3). A held one still refuses."""
    fx, _, db, gp = stopped_ledger
    bk = tmp_path / "bk"
    assert _cli("backup", "--data-dir", str(db), "--out", str(bk), "--genesis", str(gp)).returncode == 0
    broken = tmp_path / "broken"
    shutil.copytree(db, broken)
    for sst in broken.glob("*.sst"):
        sst.write_bytes(sst.read_bytes()[: len(sst.read_bytes()) // 2])   # "Sst file size mismatch"
    with pytest.raises(Exception):  # noqa: B017 - whatever RocksDB raises: it does not open
        Ledger(broken, fx.genesis).close()
    out = _cli("restore", "--from", str(bk), "--data-dir", str(broken), "--genesis", str(gp), "--force")
    assert out.returncode == 0, out.stderr
    led = Ledger(broken, fx.genesis)
    try:
        assert led.head.height == 12
        # and now that a ledger holds it, even --force refuses, from another process too
        out = _cli("restore", "--from", str(bk), "--data-dir", str(broken), "--genesis", str(gp), "--force")
        assert out.returncode == 1 and "is in use" in out.stderr
    finally:
        led.close()


def test_verify_detects_a_broken_chain(tmp_path, stopped_ledger):
    fx, _, db, gp = stopped_ledger
    assert backup.verify_chain(db, fx.genesis).height == 12
    broken = tmp_path / "broken"
    backup.backup_offline(db, broken, fx.genesis)
    store = Store(broken)
    store._cf["blocks"].delete((5).to_bytes(8, "big"))  # a hole in the chain
    store.close()
    out = _cli("verify", "--data-dir", str(broken))
    assert out.returncode == 1 and "block 5 is missing" in out.stderr
    out = _cli("restore", "--from", str(broken), "--data-dir", str(tmp_path / "t"), "--genesis", str(gp))
    assert out.returncode == 1 and "block 5 is missing" in out.stderr and not (tmp_path / "t").exists()
    with pytest.raises(backup.BackupError, match="genesis does not match"):
        backup.verify_chain(db, make_genesis(seed=98).genesis)

"""What a rerun must not do: delete the last devnet when it cannot start, or call ports in
TIME-WAIT busy (issue 20.1, 20.2)."""
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from zkpot.devnet.plan import free_base_port, make_plan, plan_ports
from zkpot.devnet.run import MARKER
from zkpot.ports import ports_in_use

REPO = Path(__file__).resolve().parents[1]


def test_plan_ports_are_the_ports_make_plan_assigns(tmp_path) -> None:
    plan = make_plan(tmp_path, 4, 5, 31000)
    assert sorted(plan_ports(31000, 4, 5)) == sorted(plan.ports())


def _time_wait_port() -> int:
    """A port left in TIME-WAIT by a server that closed its side of a connection first."""
    srv = socket.socket()
    # as a gRPC server does: Linux lets a new SO_REUSEADDR bind share the port only with TIME-WAIT
    # sockets that had it too
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()          # the server closes first: its end (our port) goes to TIME-WAIT
    time.sleep(0.1)
    cli.close()
    time.sleep(0.1)   # the client's FIN completes the close: TIME-WAIT on our side
    srv.close()
    return port


def test_a_port_in_time_wait_is_free_and_a_listened_port_is_busy() -> None:
    port = _time_wait_port()
    with socket.socket() as plain:  # what the old check did: a plain bind fails on TIME-WAIT
        try:
            plain.bind(("127.0.0.1", port))
            plain_ok = True
        except OSError:
            plain_ok = False
    assert not plain_ok, "no TIME-WAIT was produced: the test would prove nothing"
    assert ports_in_use([port]) == []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert ports_in_use([listener.getsockname()[1]]) == [listener.getsockname()[1]]


@contextlib.contextmanager
def _squat_a_ledger_port() -> Iterator[tuple[int, socket.socket]]:
    """Listen on v0's ledger port of a free plan. SO_REUSEADDR, as the servers bind: after earlier
    tests some of the plan's ports may be in TIME-WAIT, which a plain bind refuses."""
    for _ in range(20):
        base = free_base_port(4, 4)
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            squatter.bind(("127.0.0.1", base + 2))
        except OSError:
            squatter.close()
            continue
        with squatter:
            squatter.listen()
            yield base, squatter
        return
    raise RuntimeError("no port to squat")


def test_a_run_that_cannot_start_leaves_the_last_devnet_untouched(tmp_path) -> None:
    data = tmp_path / "devnet-data"
    (data / "nodes" / "v0" / "ledger").mkdir(parents=True)
    (data / MARKER).write_text("made by zkpot devnet; safe to delete\n")
    (data / "report.json").write_text('{"ok": true}')
    (data / "nodes" / "v0" / "ledger" / "CURRENT").write_text("MANIFEST-000001\n")
    before = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
    with _squat_a_ledger_port() as (base, _):
        proc = subprocess.run([sys.executable, "-m", "zkpot.cli", "devnet", "--data-dir", str(data),
                               "--base-port", str(base)], cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode != 0
    assert f"ports [{base + 2}] are in use" in proc.stdout + proc.stderr
    assert "nothing in" in proc.stdout + proc.stderr
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == before
    assert (data / "report.json").read_text() == '{"ok": true}'


def test_a_rerun_refuses_to_delete_a_ledger_another_process_holds(tmp_path) -> None:
    """A hand-started `zkpot ledger serve` on the last devnet's ledger: the rerun must not delete its
    files (issue 20.1); it says who holds what, and changes nothing."""
    from chain_factory import make_genesis

    from services.ledger.ledger import Ledger

    data = tmp_path / "devnet-data"
    ledger_dir = data / "nodes" / "v0" / "ledger"
    ledger_dir.parent.mkdir(parents=True)
    (data / MARKER).write_text("made by zkpot devnet; safe to delete\n")
    fx = make_genesis()
    holder = Ledger(ledger_dir, fx.genesis)   # this process holds the RocksDB lock, as a server would
    try:
        before = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
        proc = subprocess.run([sys.executable, "-m", "zkpot.cli", "devnet", "--data-dir", str(data),
                               "--base-port", str(free_base_port(4, 4))], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode != 0
        assert f"a process still holds the ledger in {ledger_dir}" in proc.stdout + proc.stderr
        assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == before
    finally:
        holder.close()

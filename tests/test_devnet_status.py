"""Issue 20.7: `zkpot devnet status` and `zkpot devnet stop` find the devnet of a data dir through
DATA_DIR/devnet.json (another process's), say whether it runs and where, and stop it; a stopped
one points at the read-only ledger queries."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from zkpot.devnet import state


def _devnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zkpot.cli", "devnet", *args], capture_output=True, text=True,
                          timeout=120)


def test_status_and_stop_of_a_running_devnet(tmp_path: Path) -> None:
    # stands in for the devnet's own process: its pid and state file, and a name with "devnet" in it
    # (it handles SIGINT itself, as the devnet does: a suite started in the background by a
    # non-interactive shell inherits SIGINT ignored, and `devnet stop` then waited 120 s for nothing)
    code = ("import signal, time, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv[0] = 'devnet'; time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code, "devnet"])
    try:
        state.write(tmp_path, pid=proc.pid, state="running rounds", started_at="now",
                    endpoints={"v0": {"consensus": "127.0.0.1:1", "ledger": "127.0.0.1:2", "verifier": "127.0.0.1:3"},
                               "p0": {"participant": "127.0.0.1:4", "prover": "127.0.0.1:5"}})
        out = _devnet("status", "--data-dir", str(tmp_path))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "RUNNING" in out.stdout and "ledger 127.0.0.1:2" in out.stdout
        assert "participant 127.0.0.1:4" in out.stdout
        assert "does not answer" in out.stdout  # the stand-in serves no ledger: said, not a traceback
        out = _devnet("stop", "--data-dir", str(tmp_path))
        assert out.returncode == 0 and "stopped" in out.stdout, out.stdout + out.stderr
        time.sleep(0.2)
        assert proc.poll() is not None
    finally:
        proc.kill()
        proc.wait()
    out = _devnet("status", "--data-dir", str(tmp_path))
    assert out.returncode == 3 and "not running" in out.stdout and "--data-dir" in out.stdout
    assert _devnet("stop", "--data-dir", str(tmp_path)).returncode == 1


def test_status_without_a_devnet(tmp_path: Path) -> None:
    out = _devnet("status", "--data-dir", str(tmp_path))
    assert out.returncode == 1 and "no devnet" in out.stdout

"""Smoke test: bench/peer_transport.py (a peer message as a unary call or on a stream) ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

from ledger_process import REPO


def test_peer_transport_bench_runs_and_reports_both_arms():
    out = subprocess.run([sys.executable, "bench/peer_transport.py", "--messages", "300", "--rounds", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bench"] == "peer_transport" and result["messages"] == 300
    assert result["unary_cpu_us_per_msg"] > 0 and result["stream_cpu_us_per_msg"] > 0
    assert result["stream_vs_unary"] > 0

"""Smoke test: bench/txpath.py (a replica's per-transaction CPU by stage) runs and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

from ledger_process import REPO


def test_txpath_bench_runs_and_known_ids_beat_recomputing():
    out = subprocess.run([sys.executable, "bench/txpath.py", "--txs", "300", "--repeat", "2"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bench"] == "txpath" and result["txs"] == 300 and result["verify_us"] > 0
    for stage in ("tx_id", "known_id", "unknown_field_scan", "merkle_root", "proposal_tx_checks_cached"):
        assert result[f"{stage}_us"] > 0 and result[f"{stage}_vs_verify"] >= 0
    # the mempool lookup a proposal's copy takes must stay well below encoding and hashing it again
    assert result["block_ids_known_us"] < result["block_ids_recomputed_us"]

"""Smoke run of bench/prover.py --quick: every path of the benchmark works end to end.

It goes through a real `zkpot prover serve` process with 2 prove workers on a sharded task (the
service's ProveRound result is checked by the verifier inside the benchmark), direct ezkl calls,
a monolithic proof, a naive export and verification. The figures of a tiny run mean nothing; only
their presence and sanity are checked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from proc_tree import run_tree

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_prover_bench_quick_ends_with_one_json_line(tmp_path) -> None:
    # a ceiling against hangs (42 s on an idle machine; several minutes under load), never a speed check
    proc = run_tree([sys.executable, "bench/prover.py", "--quick", "--workdir", str(tmp_path)], cwd=REPO,
                    timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    fig = json.loads(lines[-1])
    assert fig["bench"] == "prover" and fig["quick"] and fig["shards"] == 2 and fig["prove_workers"] == 2
    for key in ("overhead_vs_raw_ezkl", "sharded_speedup_vs_mono", "rows_ratio_naive_vs_shard",
                "padded_rows_ratio_naive_vs_shard", "verify_snark_per_s_per_core", "shard_prove_s", "verify_snark_s",
                "prove_peak_rss_mb_per_worker"):
        assert fig[key] > 0, key
    assert fig["proof_bytes_sent"] == 2 * fig["proof_bytes_per_shard"] < fig["submit_tx_bytes"]
    assert fig["naive_logrows"] > fig["logrows"]  # the calibrated circuit is smaller than ezkl's defaults
    assert fig["insecure_dev_srs"] is True
    assert any("target" in line for line in lines[:-1])  # the ratios are printed before the JSON line
    assert list(tmp_path.iterdir()) == []  # the benchmark cleans up after itself

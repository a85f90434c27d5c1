"""Smoke test: bench/ledger.py runs end to end in its tiny mode and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

from ledger_process import REPO


def test_ledger_bench_quick_runs():
    out = subprocess.run(
        [sys.executable, "bench/ledger.py", "--quick", "--blocks", "15", "--reads", "20"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bench"] == "ledger" and result["blocks_per_shape"] == 15
    for shape in ("proof1",):  # --quick runs the one-proof shape only
        fig = result[shape]
        assert min(fig[f"{arm}_blocks_s"] for arm in ("raw", "raw2", "service", "stream", "inproc")) > 0
        assert fig["block_kb"] > (12 if shape == "proof1" else 48)  # real-size proofs inside
        assert 0 < fig["get_block_p50_ms"] <= fig["get_block_p99_ms"]
    assert "service_vs_raw_median" in result and isinstance(result["meets_target"], bool)
    # CPU per block, by process: the service's server and client both did work, as did the raw arm
    fig = result["proof1"]
    assert fig["service_cpu_ms_per_block"] > 0 and fig["raw_cpu_ms_per_block"] > 0
    assert {"service_client_cpu_ms_per_block", "stream_cpu_ms_per_block", "inproc_cpu_ms_per_block"} <= set(fig)
    assert result["service_cpu_vs_raw"] > 0
    # the floor of one Append here (round trip + the block's signature checks + raw write): the
    # service cannot beat it, and it is slower than the raw write it contains
    assert fig["sigs_per_block"] == 4 and fig["verify_ms"] > 0  # 3 of 4 validators' votes + the proposer
    assert 0 < fig["floor_vs_raw"] < 1 and 0 < result["service_vs_floor"] <= 1.05

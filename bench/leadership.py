"""What proven-score leadership (zkpot.schedule.rotation, issue 21) costs against plain
round-robin, and the stall when the top-ranked leader is killed.

Runs the consensus simulator (tests/consensus_sim.py: real Core replicas, real ed25519 and
certificates, real pacemaker timeouts, virtual time, so figures are protocol seconds, not this
machine's CPU) at n = 4 under a steady transaction load on a synchronous network (one-way delay up
to DELAY_S). The epoch from view 10 on is either
  round_robin  nothing proven: every validator leads in turn (the ceiling: the rule before issue 21)
  weighted     three validators qualified with scores best/mid/low, one not (it leads nothing):
               the weighted cycle, the best one holding the most turns
and in each, the replica that is top-ranked in the weighted epoch is killed at CRASH_S (never
restarted). Per mode, over SEEDS seeds: commit latency (block proposed -> appended to a live
replica's ledger) p50/p95 before the kill, committed blocks and transactions per second before
the kill, the stall (longest gap between commits after the kill) and the views lost after it
(timed out: the dead leader's turns until the skip rule removes it). Ratios are against
round_robin in the same run. Ends with one JSON line.

  python bench/leadership.py [--seeds 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import consensus_sim as sim  # noqa: E402

from zkpot.v1 import ledger_pb2  # noqa: E402

N = 4
DELAY_S = 0.005
CRASH_S = 8.0
ACTIVATION_VIEW = 10
original_leader_schedule = sim.SimLedger.leader_schedule  # restored after each run's patch


def run(mode: str, seed: int, seconds: float) -> dict[str, float]:
    fx = sim.fixture(N)
    keys = [v.public_key for v in fx.genesis.validators]
    killed = random.Random(f"run-{seed}").randrange(N)  # the simulator's choice (consensus_sim._run)
    ranked = [keys[killed], *(k for i, k in enumerate(keys) if i != killed)]
    mc = int(fx.genesis.manifest.min_correct)
    scores = [mc + 8, mc + 5, mc + 2, 0] if mode == "weighted" else [0] * N
    # per ledger: (virtual time appended, proposed at ms, txs, view, parent QC's view)
    appended: dict[int, list[tuple[float, int, int, int, int]]] = {}

    async def leader_schedule(self: sim.SimLedger) -> ledger_pb2.LeaderScheduleResponse:
        return ledger_pb2.LeaderScheduleResponse(epoch=1, activation_view=ACTIVATION_VIEW, leaders=ranked,
                                                 scores=scores, previous_leaders=keys, previous_activation_view=0)

    original_append = sim.SimLedger.append

    async def append(self: sim.SimLedger, block, qc):
        now = asyncio.get_running_loop().time()
        h = block.header
        appended.setdefault(id(self), []).append((now, h.timestamp_ms, len(block.txs), h.view, h.parent_qc.view))
        return await original_append(self, block, qc)

    sim.SimLedger.leader_schedule = leader_schedule  # type: ignore[method-assign]
    sim.SimLedger.append = append  # type: ignore[method-assign]
    try:
        sc = sim.Scenario(seed=seed, n=N, byzantine="crash_restart", drop=0.0, delay_s=DELAY_S, partitions=(),
                          gst_s=seconds - 0.01, end_s=seconds, crash_at_s=CRASH_S, restart_at_s=seconds + 1,
                          tx_batches=int(seconds * 20))
        result = sim.run_scenario(sc, fx)
    finally:
        sim.SimLedger.leader_schedule = original_leader_schedule  # type: ignore[method-assign]
        sim.SimLedger.append = original_append  # type: ignore[method-assign]
    # the killed replica never comes back (the simulator's liveness check expects a restart)
    problems = [p for p in result.problems if f"slot {killed} " not in p]
    assert not problems, problems
    live = next(s for s in result.honest if s.index != killed and s.core is not None)
    log = appended[id(live.ledger)]
    before = [e for e in log if 2.0 <= e[0] < CRASH_S]
    latency = [t - (p - sim.EPOCH_MS) / 1000 for t, p, *_ in before]
    after = [e for e in log if e[0] >= CRASH_S]
    gaps = [b - a for a, b in zip([CRASH_S, *(e[0] for e in after)], [e[0] for e in after], strict=False)]
    # views that timed out after the kill (a committed block above parent QC + 1 follows a TC):
    # the dead leader's turns until the skip rule removes it from the cycle
    lost = sum(view - parent - 1 for *_, view, parent in after)
    return {
        "latency_p50_s": statistics.median(latency),
        "latency_p95_s": statistics.quantiles(latency, n=20)[-1] if len(latency) >= 20 else max(latency),
        "blocks_per_s": len(before) / (CRASH_S - 2.0),
        "txs_per_s": sum(e[2] for e in before) / (CRASH_S - 2.0),
        "stall_s": max(gaps) if gaps else seconds - CRASH_S,
        "views_lost_after_kill": lost,
    }



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20.0, help="virtual seconds per run")
    args = ap.parse_args()
    out: dict[str, dict[str, float]] = {}
    for mode in ("round_robin", "weighted"):
        runs = [run(mode, seed, args.seconds) for seed in range(1, args.seeds + 1)]
        out[mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out[mode]["stall_max_s"] = max(r["stall_s"] for r in runs)
        print(f"{mode:12s} " + "  ".join(f"{k} {v:.3f}" for k, v in out[mode].items()), flush=True)
    rr, w = out["round_robin"], out["weighted"]
    figures = {
        "bench": "leadership", "n": N, "seeds": args.seeds, "virtual_seconds": args.seconds,
        "latency_p50_s_round_robin": round(rr["latency_p50_s"], 4),
        "latency_p50_s_weighted": round(w["latency_p50_s"], 4),
        "latency_p50_vs_round_robin": round(w["latency_p50_s"] / rr["latency_p50_s"], 3),
        "txs_per_s_vs_round_robin": round(w["txs_per_s"] / rr["txs_per_s"], 3),
        "blocks_per_s_vs_round_robin": round(w["blocks_per_s"] / rr["blocks_per_s"], 3),
        "stall_s_top_killed_round_robin": round(rr["stall_s"], 3),
        "stall_s_top_killed_weighted": round(w["stall_s"], 3),
        "stall_vs_round_robin": round(w["stall_s"] / rr["stall_s"], 3) if rr["stall_s"] else None,
        "stall_max_s_weighted": round(w["stall_max_s"], 3),
        "views_lost_after_kill_round_robin": rr["views_lost_after_kill"],
        "views_lost_after_kill_weighted": w["views_lost_after_kill"],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

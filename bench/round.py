"""Round scale: 4 validators and N participant processes sharing a small pool of provers.

For each N it runs `zkpot devnet --participants N --provers P` on a 4-sample one-proof task (cheap
proofs: the figures are about the network around them) and samples /proc every second for every
process of that devnet, the worker processes of each service counted with it. Per N:

- round_s: round open to round close, mean over rounds (the devnet report's wall_s);
- proving_span_s: the longest ProveRound as a participant saw it (queueing at the shared provers
  included), so round_s - proving_span_s is what the network added after the last proof;
- validator_cpu_s_per_submission: CPU seconds of every validator process (consensus, ledger,
  verifier and their workers) from round 1's first proof request to the end, per committed
  submission (idle blocks and the final ledger comparison included, start-up not);
- chain_bytes_per_participant_round: the committed chain's bytes (blocks as stored) / (N x rounds);
- participant_peak_rss_mb: the largest peak RSS (VmHWM) of any participant process.

Ratios against a ceiling measured in the same run: round_s(N) / proving_span_s(smallest N) (the
issue's target: <= 2 for N=64 vs N=8), chain bytes vs 10 KB. Ends with one JSON line.

  python bench/round.py [--sizes 8,32,64] [--provers 4] [--rounds 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHAIN_BYTES_TARGET = 10_000
TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, str, float, int]]:
    """pid -> (ppid, cmdline, cpu seconds, VmHWM kB) of every process now."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
            hwm = 0
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
            out[int(d.name)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / TICKS, hwm)
        except (OSError, ValueError, IndexError):
            continue
    return out


ROLES = ("participant run", "prover serve", "consensus serve", "ledger serve", "verifier serve", "observer serve")


class Sampler:
    """Latest CPU seconds and peak RSS per process, each attributed to its service's role."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.cpu: dict[int, float] = {}
        self.hwm: dict[int, int] = {}
        self.role: dict[int, str] = {}

    def sample(self) -> None:
        table = _proc_table()
        for pid, (ppid, cmd, cpu, hwm) in table.items():
            role = next((r for r in ROLES if r in cmd and self.marker in cmd), None)
            if role is None and ppid in self.role:  # a service's worker process
                role = self.role[ppid]
            if role is None:
                continue
            self.role[pid] = role
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)
            self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)

    def cpu_by_role(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for pid, cpu in self.cpu.items():
            out[self.role[pid]] += cpu
        return dict(out)

    def peak_rss_mb(self, role: str) -> float:
        return max((self.hwm[p] for p, r in self.role.items() if r == role), default=0) / 1024


def run_size(n: int, provers: int, rounds: int, root: Path) -> dict:
    from zkpot.devnet.plan import free_base_port

    data = root / f"n{n}"
    base = free_base_port(4, n)
    cmd = [sys.executable, "-m", "zkpot.cli", "devnet", "--validators", "4", "--participants", str(n),
           "--provers", str(min(provers, n)), "--rounds", str(rounds), "--test-set-size", "4", "--shard-size", "4",
           "--prove-workers", "1", "--no-attack-checks", "--round-deadline-blocks", "900", "--data-dir", str(data),
           "--base-port", str(base)]
    sampler = Sampler(str(data))
    at_start: dict[str, float] = {}  # CPU by role once round 1 is under way: start-up is not the rounds' cost
    first_log = data / "logs" / "p0-participant.log"
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        while proc.poll() is None:
            sampler.sample()
            if not at_start and first_log.exists() and "round=1 event=proving" in first_log.read_text(errors="replace"):
                at_start = sampler.cpu_by_role()
            time.sleep(1.0)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        raise
    out = proc.stdout.read() if proc.stdout else ""
    report_path = data / "report.json"
    if proc.returncode != 0 or not report_path.exists():
        raise SystemExit(f"devnet with {n} participants failed ({proc.returncode}):\n{out[-3000:]}")
    report = json.loads(report_path.read_text())
    subs = [s for r in report["rounds"] for s in r["submissions"]]
    accepted = sum(r["accepted_submissions"] for r in report["rounds"])
    committed = sum(1 for s in subs if s["height"] and not s["ledger_reason"])
    cpu = sampler.cpu_by_role()
    validator_roles = ("consensus serve", "ledger serve", "verifier serve")
    validator_cpu = sum(cpu.get(r, 0.0) - at_start.get(r, 0.0) for r in validator_roles)
    walls = [r["wall_s"] for r in report["rounds"] if r["wall_s"] is not None]
    return {
        "participants": n,
        "provers": min(provers, n),
        "round_s": round(sum(walls) / max(1, len(walls)), 2),
        "proving_span_s": round(max((s["prover_wall_s"] for s in subs), default=0.0), 2),
        "aggregated": accepted,
        "committed": committed,
        "submissions": len(subs),
        "validator_cpu_s_per_submission": round(validator_cpu / max(1, committed), 3),
        "validator_cpu_s": round(validator_cpu, 1),
        "participant_cpu_s_each": round(cpu.get("participant run", 0.0) / n, 2),
        "chain_bytes_per_participant_round": round(report["ledgers"]["chain_bytes"] / (n * rounds)),
        "tx_bytes_by_kind": report["ledgers"].get("tx_bytes", {}),
        "participant_peak_rss_mb": round(sampler.peak_rss_mb("participant run"), 1),
        "prover_peak_rss_mb": round(sampler.peak_rss_mb("prover serve"), 1),
        "devnet_s": round(time.monotonic() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8,32,64")
    ap.add_argument("--provers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="sizes 2,4 with 2 provers: a smoke run")
    args = ap.parse_args()
    sizes = [2, 4] if args.quick else [int(x) for x in args.sizes.split(",")]
    provers = 2 if args.quick else args.provers
    results = []
    with tempfile.TemporaryDirectory(prefix="zkpot-bench-round-") as tmp:
        for n in sizes:
            r = run_size(n, provers, args.rounds, Path(tmp))
            results.append(r)
            print(f"N={n:>3}: round {r['round_s']:.1f}s (longest proof wait {r['proving_span_s']:.1f}s), "
                  f"{r['committed']}/{r['submissions']} committed, validator CPU "
                  f"{r['validator_cpu_s_per_submission']:.2f} s/submission, chain "
                  f"{r['chain_bytes_per_participant_round']} B/participant/round, participant peak RSS "
                  f"{r['participant_peak_rss_mb']:.0f} MB", flush=True)
    base = results[0]
    largest = results[-1]
    figures = {
        "bench": "round",
        "sizes": sizes,
        "provers": provers,
        "results": results,
        # the issue's target: the largest round within 2x the smallest round's proving
        "largest_round_vs_smallest_proving": round(largest["round_s"] / max(1e-9, base["proving_span_s"]), 2),
        "largest_round_vs_smallest_round": round(largest["round_s"] / max(1e-9, base["round_s"]), 2),
        "network_s_after_last_proof": {str(r["participants"]): round(r["round_s"] - r["proving_span_s"], 2)
                                       for r in results},
        "chain_bytes_vs_10kb": round(largest["chain_bytes_per_participant_round"] / CHAIN_BYTES_TARGET, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

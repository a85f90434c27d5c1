"""Per-round figures, the closing summary table and report.json."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zkpot.devnet.network import Devnet
    from zkpot.devnet.stats import RoundStats


def _round_json(net: Devnet, rs: RoundStats) -> dict[str, Any]:
    s = rs.summary
    aggregated = {net.genesis.name_of(x.participant): x.aggregated for x in s.submissions} if s else {}
    subs = []
    for name, sub in sorted(rs.submissions.items()):
        sub.aggregated = aggregated.get(name, False)
        subs.append(asdict(sub))
    return {
        "round": rs.round,
        "closed": bool(s and s.closed),
        "wall_s": round(rs.closed - rs.started, 2) if rs.closed and rs.started else None,
        "open_height": s.open_height if s else None,
        "close_height": s.close_height if s else None,
        "aggregation_rule": s.aggregation_rule if s else None,
        "global_model_cid": s.global_model_cid if s else None,
        "next_global_model_cid": s.next_global_model_cid if s else None,
        "global_accuracy": rs.global_accuracy,
        "global_accuracy_holdout": rs.holdout_accuracy,
        "accepted_submissions": sum(1 for x in (s.submissions if s else []) if x.aggregated),
        "secure_aggregation": bool(net.genesis.manifest.secure_aggregation),
        "aggregate_note": s.aggregate_note if s else "",
        "dropped": [net.genesis.name_of(k) for k in s.dropped] if s else [],
        "next_leaders": rs.next_leaders,
        "next_leader_scores": rs.next_scores,
        "next_view_shares": rs.next_view_shares,
        "blocks_proposed": rs.blocks_proposed,
        "submissions": subs,
        "time": {
            "training_s": round(sum(x.train_s for x in rs.submissions.values()), 2),
            "proving_s": round(sum(x.prove_s + x.witness_s + x.compile_s for x in rs.submissions.values()), 2),
            "admission_verify_s": round(sum(x.admission_s for x in rs.submissions.values()), 2),
            "consensus_commit_s": round(sum(max(0.0, x.commit_s - x.admission_s)
                                            for x in rs.submissions.values()), 2),
        },
    }


def _config_used(net: Devnet) -> dict[str, Any]:
    """The run's settings with every "0: task default" replaced by the value the task has (issue 20.9)."""
    m = net.genesis.manifest
    used = {k: str(v) if hasattr(v, "__fspath__") else v for k, v in vars(net.config).items()}
    used.update(test_set_size=m.test_set_size, min_correct=m.min_correct, shard_size=m.shard_size or m.test_set_size,
                aggregation_rule=m.aggregation_rule or "fedavg-threshold",
                round_deadline_blocks=m.round_deadline_blocks, round_deadline_s=m.round_deadline_ms / 1000,
                secagg_threshold=m.secagg_threshold)
    return used


def write_report(net: Devnet, ledgers: dict[str, Any], verify: dict[str, float]) -> dict[str, Any]:
    rounds = [_round_json(net, rs) for _, rs in sorted(net.rounds.items())]
    all_subs = [s for r in rounds for s in r["submissions"]]
    ok = ledgers["agree"] and all(r["closed"] for r in rounds) and all(a["rejected"] for a in net.attacks)
    report = {
        "ok": ok,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chain_id": net.genesis.chain_id,
        "task_id": net.genesis.task_id.hex(),
        "insecure_dev_srs": bool(net.genesis.manifest.insecure_dev_srs),
        "test_set_size": net.genesis.manifest.test_set_size,
        "config": _config_used(net),
        "validators": [v.name for v in net.plan.validators],
        "participants": [p.name for p in net.plan.participants],
        "ledgers": ledgers,
        "where_time_went": {
            **{k: round(v, 2) for k, v in net.timings.items()},
            "training_s": round(sum(s["train_s"] for s in all_subs), 2),
            "proving_s": round(sum(s["prove_s"] + s["witness_s"] + s["compile_s"] for s in all_subs), 2),
            "verifying_s_all_validators": round(verify.get("sum", 0.0), 2),
            "verifications": int(verify.get("count", 0)),
            "consensus_commit_s": round(sum(max(0.0, s["commit_s"] - s["admission_s"]) for s in all_subs), 2),
        },
        "rounds": rounds,
        "attack_checks": net.attacks,
        "restarts": net.restarts,
        "consensus": net.network,
    }
    path = net.config.report_path or (net.config.data_dir / "report.json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"report: {path}")
    return report


def _leaders(r: dict[str, Any]) -> str:
    """The next epoch's leaders with their share of views (only proven contributors lead)."""
    shares = r.get("next_view_shares") or {}
    return " > ".join(f"{n} {100 * shares[n]:.0f}%" if n in shares else n for n in r["next_leaders"])


def print_summary(report: dict[str, Any]) -> None:
    if report["insecure_dev_srs"]:
        print("WARNING: this chain's task uses an INSECURE development SRS (ezkl.gen_srs); never use it in production")
    header = (f"{'round':>5} {'height':>7} {'accepted':>8} {'global acc':>10} {'held-out':>8} {'wall s':>7} "
              f"{'prove s':>8}  next leaders (share of views)")
    print(header)
    print("-" * len(header))
    for r in report["rounds"]:
        acc = f"{100 * r['global_accuracy']:.1f}%"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        accepted = f"{r['accepted_submissions']}/{len(r['submissions'])}"
        held = f"{100 * r['global_accuracy_holdout']:.1f}%"
        print(f"{r['round']:>5} {r['close_height'] or '-':>7} {accepted:>8} "
              f"{acc:>10} {held:>8} {wall:>7} {r['time']['proving_s']:>8.0f}  {_leaders(r)}")
    print(f"accepted: submissions aggregated / submitted; global acc: the round's aggregate (float) on the task's "
          f"public test set ({report['test_set_size']} samples, what the proofs score); held-out: the same model on "
          f"the whole held-out split, a steadier figure; prove s: training + proving summed over participants")
    print()
    print(f"{'participant':<12} " + " ".join(f"{'r' + str(r['round']) + ' correct':>12}" for r in report["rounds"]))
    names = sorted({s["participant"] for r in report["rounds"] for s in r["submissions"]})
    for name in names:
        cells = []
        for r in report["rounds"]:
            sub = next((s for s in r["submissions"] if s["participant"] == name), None)
            cell = "-" if sub is None else f"{sub['claimed_correct']}/{sub['test_set_size']}" + (
                "" if sub["admitted"] else " REJ")
            cells.append(f"{cell:>12}")
        print(f"{name:<12} " + " ".join(cells))
    t = report["where_time_went"]
    print()
    print("time: " + ", ".join(f"{k} {v}" for k, v in t.items()))
    agree = report["ledgers"]["agree"]
    print(f"ledgers: {'all validators hold identical chains' if agree else 'DISAGREE'} "
          f"(heights {report['ledgers']['heights']})")
    cons = report.get("consensus") or {}
    if cons.get("async_fallback"):
        fb = cons.get("fallbacks", {})
        exits = ", ".join(f"{k.removeprefix('exits_')} {int(v)}" for k, v in sorted(fb.items()) if k != "entries")
        slowed = (f"; adversary slowed each view's leader {cons['leader_delay_s']:g} s "
                  f"({sum(cons.get('leaders_slowed', {}).values())} leader changes followed)"
                  if cons.get("leader_delay_s") else "")
        print(f"asynchronous fallback: {int(fb.get('entries', 0))} entries over all replicas"
              f"{' (exits: ' + exits + ')' if exits else ''}{slowed}")

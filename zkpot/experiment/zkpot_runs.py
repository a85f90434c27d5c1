"""ZKPoT scenarios on the real services: one devnet per scenario (zkpot.devnet.run.run_devnet).

Every scenario of one experiment shares a devnet folder, so the task (circuit, keys), the
participants' keys and their shards are made once and reused (--existing reuse-task); each
scenario starts a fresh chain. The figures come from the devnet's report.json.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from zkpot.experiment.config import ExperimentConfig


def devnet_config(config: ExperimentConfig, behaviours: dict[str, str], report: Path,  # noqa: ANN201
                  base_port: int | None = None):
    from zkpot.devnet.network import DevnetConfig

    return DevnetConfig(
        data_dir=config.devnet_path().resolve(), validators=config.validators, participants=config.participants,
        rounds=config.rounds, base_port=config.base_port if base_port is None else base_port, existing="reuse-task",
        test_set_size=config.test_set_size, local_epochs=config.local_epochs, alpha=config.alpha, seed=config.seed,
        round_deadline_blocks=config.round_deadline_blocks,
        min_correct=config.min_correct, report_path=report.resolve(),
        attack_checks=False, behaviours=dict(behaviours), secure_aggregation=config.secure_aggregation,
        secagg_threshold=config.secagg_threshold, arch=config.arch,
        test_set_file=config.test_set_file, train_data=config.train_data,
    )


def run_scenario(config: ExperimentConfig, behaviours: dict[str, str], report: Path, index: int = 0) -> dict[str, Any]:
    """Scenario `index` uses the port plan at base_port + 1000 * index: the previous devnet's
    processes may still hold their ports for a moment after it stopped."""
    from zkpot.devnet.plan import free_base_port, make_plan
    from zkpot.devnet.run import run_devnet
    from zkpot.ports import ports_in_use

    report.parent.mkdir(parents=True, exist_ok=True)
    base = config.base_port + 1000 * index
    if (config.devnet_path() / "keys").is_dir():  # an earlier run made the keys: planning only reads them
        ports = make_plan(config.devnet_path().resolve(), config.validators, config.participants, base).ports()
        deadline = time.monotonic() + 60
        while ports_in_use(ports) and time.monotonic() < deadline:
            time.sleep(1)
        if ports_in_use(ports):  # someone else holds them: any free range will do
            base = free_base_port(config.validators, config.participants)
    async def runner() -> dict[str, Any]:
        # SIGINT / SIGTERM cancel the run, so that the devnet stops every process it started
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await run_devnet(devnet_config(config, behaviours, report, base))

    t0 = time.monotonic()
    result = asyncio.run(runner())
    result["_wall_s"] = time.monotonic() - t0
    return result


def leader_operator(validator: str, config: ExperimentConfig) -> str:
    """The participant operating validator v<i> in the devnet plan: p<i>."""
    return "p" + validator[1:] if validator.startswith("v") else validator


def _share(counts: dict[str, int], pick: Any) -> float:
    total = sum(counts.values())
    return round(sum(c for v, c in counts.items() if pick(v)) / total, 3) if total else 0.0


def summarize(report: dict[str, Any], config: ExperimentConfig, behaviours: dict[str, str]) -> dict[str, Any]:
    """Per-round figures of one ZKPoT scenario, from a devnet report."""
    min_correct = None
    rounds = []
    for r in report["rounds"]:
        rule = r.get("aggregation_rule") or ""
        if "min_correct=" in rule:
            min_correct = int(rule.split("min_correct=")[1].rstrip(")"))
        leader = r["next_leaders"][0] if r["next_leaders"] else ""
        operator = leader_operator(leader, config)
        excluded = {}
        for s in r["submissions"]:
            if s["aggregated"]:
                continue
            if not s["admitted"]:
                why = f"refused at admission: {s['admission_reason']}"
            elif min_correct is not None and s["claimed_correct"] < min_correct:
                why = f"proven {s['claimed_correct']}/{s['test_set_size']} < threshold {min_correct}"
            elif s.get("ledger_reason"):
                why = f"proof valid, refused by the ledger: {s['ledger_reason']}"
            elif r.get("secure_aggregation") and s["participant"] in r.get("dropped", []):
                why = "dropped out of the masking phase (its masks removed from the sum)"
            elif r.get("secure_aggregation") and r.get("aggregate_note"):
                why = f"no aggregate: {r['aggregate_note']}"
            else:
                why = "proof valid, not aggregated (committed after the round closed)"
            excluded[s["participant"]] = why
        for name, b in behaviours.items():
            if b == "silent":
                excluded[name] = "silent (submitted nothing)"
        proofs = [s["prove_s"] for s in r["submissions"] if s["prove_s"] > 0]
        rounds.append({
            "round": r["round"],
            "accuracy": r["global_accuracy_holdout"],
            "test_accuracy": r["global_accuracy"],
            "aggregation_rule": rule,
            "global_model_cid": r["next_global_model_cid"],
            "included": sorted((s["participant"] for s in r["submissions"] if s["aggregated"]),
                               key=lambda n: int(n[1:])),
            "excluded": excluded,
            "correct": {s["participant"]: s["claimed_correct"] for s in r["submissions"]},
            "leader": leader,
            "leader_operator": operator,
            "leader_is_attacker": operator in behaviours,
            "leader_score": r["next_leader_scores"][0] if r["next_leader_scores"] else 0,
            # issue 21: the share of the next epoch's views, and of this round's committed blocks, that
            # validators operated by attackers lead (0 while f+1 honest operators' participants qualify)
            "view_shares": dict(r.get("next_view_shares") or {}),
            "attacker_view_share": round(sum(share for v, share in (r.get("next_view_shares") or {}).items()
                                             if leader_operator(v, config) in behaviours), 3),
            "attacker_block_share": _share(r.get("blocks_proposed") or {},
                                           lambda v: leader_operator(v, config) in behaviours),
            "prove_s_mean": sum(proofs) / len(proofs) if proofs else 0.0,
            "prove_s_max": max(proofs, default=0.0),
            "round_wall_s": r["wall_s"],
        })
    return {"ok": bool(report.get("ok")), "ledgers_agree": report["ledgers"]["agree"], "rounds": rounds,
            "where_time_went": report.get("where_time_went", {}),
            # a report read back from disk (--resume) has only the devnet's own total
            "wall_s": report.get("_wall_s") or report.get("where_time_went", {}).get("total_s", 0.0)}

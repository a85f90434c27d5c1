"""Write deploy/grafana/dashboards/*.json (Grafana dashboards for zkpot) from the panel lists below.

Run after editing: .venv/bin/python deploy/grafana/build_dashboards.py
tests/test_deploy.py checks the JSON files are what this script writes, and that every metric
they query is defined by a service.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

# (title, [(expr, legend)], unit, kind) — kind: "timeseries" or "stat"
Panel = tuple[str, list[tuple[str, str]], str, str]


def q(quantile: float, metric: str, by: str = "node", sel: str = "") -> str:
    return f"histogram_quantile({quantile}, sum by (le, {by}) (rate({metric}_bucket{sel}[$__rate_interval])))"


NODE = '{node=~"$node"}'


def r(metric: str, by: str = "node", sel: str = NODE) -> str:
    return f"sum by ({by}) (rate({metric}{sel}[$__rate_interval]))"

DASHBOARDS: dict[str, dict] = {
    "zkpot-network": {
        "title": "zkpot / network",
        "description": "HotStuff replicas: heights, commits, latency, views, leaders, mempool",
        "node_var": "zkpot_consensus_height",
        "panels": [
            ("Committed height", [("max(zkpot_consensus_height)", "network")], "none", "stat"),
            ("Open FL round", [("max(zkpot_ledger_current_round)", "round")], "none", "stat"),
            ("View", [("max(zkpot_consensus_view)", "view")], "none", "stat"),
            ("Validators up", [('sum(up{job="zkpot", service="consensus"})', "up")], "none", "stat"),
            ("Height per replica", [
                (f"zkpot_consensus_height{NODE}", "{{node}} consensus"),
                (f"zkpot_consensus_appended_height{NODE}", "{{node}} appended"),
                (f"zkpot_ledger_height{NODE}", "{{node}} ledger"),
            ], "none", "timeseries"),
            ("Commit rate", [
                (r("zkpot_consensus_committed_blocks_total"), "{{node}} blocks/s"),
                (r("zkpot_consensus_committed_txs_total"), "{{node}} txs/s"),
            ], "ops", "timeseries"),
            ("Commit latency (proposal seen -> commit)", [
                (q(0.5, "zkpot_consensus_commit_latency_seconds", sel=NODE), "{{node}} p50"),
                (q(0.95, "zkpot_consensus_commit_latency_seconds", sel=NODE), "{{node}} p95"),
            ], "s", "timeseries"),
            ("QC formation (leader)", [
                (q(0.95, "zkpot_consensus_qc_formation_seconds", sel=NODE), "{{node}} p95"),
            ], "s", "timeseries"),
            ("View changes by cause", [
                (r("zkpot_consensus_view_changes_total", "node, cause"),
                 "{{node}} {{cause}}"),
            ], "ops", "timeseries"),
            ("Asynchronous fallback: entries, exits by outcome, active", [
                (r("zkpot_consensus_fallback_entries_total"), "{{node}} entered"),
                (r("zkpot_consensus_fallback_exits_total", "node, outcome"), "{{node}} exit {{outcome}}"),
                (f"zkpot_consensus_fallback_active{NODE}", "{{node}} in fallback"),
            ], "ops", "timeseries"),
            ("Fallback time (entry -> coin, entry -> exit)", [
                (q(0.5, "zkpot_consensus_fallback_coin_latency_seconds", sel=NODE), "{{node}} coin p50"),
                (q(0.95, "zkpot_consensus_fallback_coin_latency_seconds", sel=NODE), "{{node}} coin p95"),
                (q(0.5, "zkpot_consensus_fallback_seconds", sel=NODE), "{{node}} whole p50"),
                (q(0.5, "zkpot_consensus_fallback_views", sel=NODE), "{{node}} views p50"),
            ], "s", "timeseries"),
            ("Leader: blocks proposed per replica", [
                (r("zkpot_consensus_proposals_total"), "{{node}}"),
            ], "ops", "timeseries"),
            ("View per replica", [(f"zkpot_consensus_view{NODE}", "{{node}}")], "none", "timeseries"),
            ("Mempool", [
                (f"zkpot_consensus_mempool_txs{NODE}", "{{node}} txs"),
            ], "none", "timeseries"),
            ("Votes and timeouts", [
                (r("zkpot_consensus_votes_sent_total"), "{{node}} votes sent"),
                (r("zkpot_consensus_votes_received_total"),
                 "{{node}} votes received"),
                (r("zkpot_consensus_timeouts_sent_total"), "{{node}} timeouts"),
            ], "ops", "timeseries"),
            ("Rejected consensus messages", [
                (r("zkpot_consensus_rejected_messages_total", "node, reason"),
                 "{{node}} {{reason}}"),
            ], "ops", "timeseries"),
            ("Sync and send failures", [
                (r("zkpot_consensus_sync_requests_total", "node, result"),
                 "{{node}} sync {{result}}"),
                (r("zkpot_consensus_send_failures_total", "node, rpc"),
                 "{{node}} send failed {{rpc}}"),
                (r("zkpot_consensus_ledger_append_failures_total"),
                 "{{node}} ledger append failed"),
            ], "ops", "timeseries"),
            ("Ledger append time (check + execute + synced write)", [
                (q(0.5, "zkpot_ledger_append_seconds", sel=NODE), "{{node}} p50"),
                (q(0.95, "zkpot_ledger_append_seconds", sel=NODE), "{{node}} p95"),
            ], "s", "timeseries"),
        ],
    },
    "zkpot-zk": {
        "title": "zkpot / zero-knowledge",
        "description": "Provers and verifiers: proving and verification time, outcomes, rejections by reason",
        "panels": [
            ("Proofs verified (accepted)", [
                ("sum(increase(zkpot_verifier_accepted_total[$__range]))", "accepted"),
            ], "none", "stat"),
            ("Proofs rejected", [
                ("sum(increase(zkpot_verifier_rejections_total[$__range]))", "rejected"),
            ], "none", "stat"),
            ("Prover runs ok", [
                ('sum(increase(zkpot_prover_proofs_total{outcome="ok"}[$__range]))', "ok"),
            ], "none", "stat"),
            ("Provers busy", [("sum(zkpot_prover_busy)", "busy")], "none", "stat"),
            ("Proving time per round", [
                (q(0.5, "zkpot_prover_proof_seconds", sel=""), "{{node}} prove p50"),
                (q(0.95, "zkpot_prover_proof_seconds", sel=""), "{{node}} prove p95"),
                (q(0.5, "zkpot_prover_train_seconds", sel=""), "{{node}} train p50"),
                (q(0.5, "zkpot_prover_witness_seconds", sel=""), "{{node}} compile+witness p50"),
                (q(0.5, "zkpot_prover_round_seconds", sel=""), "{{node}} whole round p50"),
            ], "s", "timeseries"),
            ("Verification time", [
                (q(0.5, "zkpot_verifier_snark_seconds", sel=""), "{{node}} SNARK p50"),
                (q(0.95, "zkpot_verifier_snark_seconds", sel=""), "{{node}} SNARK p95"),
                (q(0.95, "zkpot_verifier_verify_seconds", sel=""), "{{node}} whole check p95"),
                (q(0.95, "zkpot_verifier_recommit_seconds", sel=""), "{{node}} model commitment p95"),
                (q(0.95, "zkpot_verifier_batch_seconds", sel=""), "{{node}} Verify RPC p95"),
            ], "s", "timeseries"),
            ("Proofs accepted / rejected by reason (verifiers)", [
                (r("zkpot_verifier_accepted_total", sel=""), "{{node}} accepted"),
                (r("zkpot_verifier_rejections_total", "node, reason", sel=""), "{{node}} {{reason}}"),
                (r("zkpot_verifier_cache_hits_total", sel=""), "{{node}} cache hits"),
            ], "ops", "timeseries"),
            ("Views led per validator (committed blocks; proven scores weight leadership)", [
                # every replica counts every committed block: the most complete replica's count
                ("max by (validator) (increase(zkpot_consensus_views_led_total[$__range]))", "{{validator}}"),
            ], "none", "stat"),
            ("Participants: last accepted round", [
                ("zkpot_participant_last_accepted_round", "{{node}}"),
            ], "none", "timeseries"),
            ("Participant submissions by outcome and reason", [
                ("sum by (outcome, reason) (increase(zkpot_participant_submissions_total[$__range]))",
                 "{{outcome}} {{reason}}"),
            ], "none", "stat"),
            ("Participants by phase (proving, submitting, masking ...)", [
                ("sum by (phase) (zkpot_participant_phase)", "{{phase}}"),
            ], "none", "timeseries"),
            ("Participant fail-overs to another validator", [
                (r("zkpot_participant_failovers_total", sel=""), "{{node}}"),
            ], "ops", "timeseries"),
            ("Prover runs by outcome", [
                ("sum by (outcome) (increase(zkpot_prover_proofs_total[$__range]))", "{{outcome}}"),
            ], "none", "stat"),
            ("Prover utilisation (one proof at a time: 100% = requests queue)", [
                ("avg_over_time(zkpot_prover_busy[$__rate_interval])", "{{node}}"),
            ], "percentunit", "timeseries"),
            ("Submissions admitted to mempools", [
                (r("zkpot_consensus_admitted_txs_total", sel=""), "{{node}}"),
            ], "ops", "timeseries"),
            ("Submissions refused by reason (admission)", [
                (r("zkpot_consensus_rejected_txs_total", "node, reason", sel=""), "{{node}} {{reason}}"),
            ], "ops", "timeseries"),
            ("Committed transactions: accepted / failed state rules", [
                ("max by (result) (zkpot_ledger_txs_total)", "{{result}}"),
            ], "none", "timeseries"),
        ],
    },
    "zkpot-learning": {
        "title": "zkpot / learning",
        "description": "Federated rounds recorded on chain",
        "panels": [
            ("Open FL round", [("max(zkpot_ledger_current_round)", "round")], "none", "stat"),
            ("Round over time", [("max(zkpot_ledger_current_round)", "round")], "none", "timeseries"),
            ("Round phase (1 proofs, 2 masking, 3 unmasking: secure aggregation; 4 closed)", [
                ("max(zkpot_ledger_round_phase)", "phase"),
            ], "none", "timeseries"),
            ("Accepted transactions (all validators agree; max over replicas)", [
                ('max(zkpot_ledger_txs_total{result="accepted"})', "accepted"),
                ('max(zkpot_ledger_txs_total{result="rejected"})', "failed state rules"),
            ], "none", "timeseries"),
            # zkpot observer: evaluates each closed round's aggregate on public data only
            ("Global model accuracy per round", [
                ("max by (round) (zkpot_observer_global_accuracy)", "round {{round}}: public test set"),
                ("max by (round) (zkpot_observer_global_accuracy_holdout)", "round {{round}}: held-out split"),
            ], "percentunit", "timeseries"),
            ("Accepted participants per round", [
                ("max by (round) (zkpot_observer_round_accepted_participants)", "round {{round}} aggregated"),
                ("max by (round) (zkpot_observer_round_submissions)", "round {{round}} submitted"),
            ], "none", "timeseries"),
            ("Proven correct count per participant", [
                ("max by (round, participant) (zkpot_observer_proven_correct)", "{{participant}} round {{round}}"),
            ], "none", "timeseries"),
            ("Rounds closed", [("max(zkpot_observer_rounds_closed)", "closed")], "none", "stat"),
            ("Leader schedule: rank (0 leads first) and proven score", [
                ("max by (validator) (zkpot_observer_leader_rank)", "{{validator}} rank"),
                ("max by (validator) (zkpot_observer_leader_score)", "{{validator}} score"),
            ], "none", "timeseries"),
        ],
    },
    "zkpot-resources": {
        "title": "zkpot / resources",
        "description": "Per-service process metrics (prometheus_client defaults)",
        "panels": [
            ("CPU", [
                ('sum by (service, node) (rate(process_cpu_seconds_total{job="zkpot"}[$__rate_interval]))',
                 "{{service}} {{node}}"),
            ], "percentunit", "timeseries"),
            ("Resident memory", [
                ('process_resident_memory_bytes{job="zkpot"}', "{{service}} {{node}}"),
            ], "bytes", "timeseries"),
            ("Virtual memory", [
                ('process_virtual_memory_bytes{job="zkpot"}', "{{service}} {{node}}"),
            ], "bytes", "timeseries"),
            ("Open file descriptors", [
                ('process_open_fds{job="zkpot"}', "{{service}} {{node}}"),
                ('process_max_fds{job="zkpot"}', "{{service}} {{node}} max"),
            ], "none", "timeseries"),
            ("Uptime", [
                ('time() - process_start_time_seconds{job="zkpot"}', "{{service}} {{node}}"),
            ], "s", "timeseries"),
        ],
    },
}


def panel(pid: int, spec: Panel, x: int, y: int) -> dict:
    title, targets, unit, kind = spec
    w, h = (6, 4) if kind == "stat" else (12, 8)
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def dashboard(uid: str, spec: dict) -> dict:
    panels, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(spec["panels"], start=1):
        item = panel(i, p, x, y)
        w, h = item["gridPos"]["w"], item["gridPos"]["h"]
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
            item["gridPos"].update(x=x, y=y)
        panels.append(item)
        x, row_h = x + w, max(row_h, h)
    variables = [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0}]
    if "node_var" in spec:
        variables.append({
            "name": "node", "label": "node", "type": "query", "datasource": DS,
            "query": {"query": f"label_values({spec['node_var']}, node)", "refId": "node"},
            "definition": f"label_values({spec['node_var']}, node)",
            "multi": True, "includeAll": True, "current": {"text": "All", "value": "$__all"}, "refresh": 2,
        })
    return {
        "uid": uid,
        "title": spec["title"],
        "description": spec["description"],
        "tags": ["zkpot"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{uid}.json": json.dumps(dashboard(uid, spec), indent=2) + "\n" for uid, spec in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)


if __name__ == "__main__":
    main()

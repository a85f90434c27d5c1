"""A real Prometheus server (Debian's `prometheus`) scraping every devnet process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from zkpot.devnet.plan import HOST, DevnetPlan


def binary() -> str | None:
    return shutil.which("prometheus")


def write_config(plan: DevnetPlan, out: Path, rules: Path | None = None) -> Path:
    """Static targets with `service` and `node` target labels (what the dashboards select on)."""
    groups = []
    for name, target in plan.metrics_targets().items():
        node, service = name.split("/")
        groups.append({"targets": [target], "labels": {"service": service, "node": node}})
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "zkpot", "honor_labels": True, "static_configs": groups}],
    }
    if rules is not None and rules.exists():
        config["rule_files"] = [str(rules)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return out


def args(plan: DevnetPlan, config_path: Path) -> list[str]:
    return [
        f"--config.file={config_path}",
        f"--storage.tsdb.path={plan.data_dir / 'prometheus'}",
        f"--web.listen-address={HOST}:{plan.prometheus_port}",
        "--storage.tsdb.retention.time=1d",
    ]

"""Write the optional PrometheusRule (deploy/k8s/components/prometheus-operator) from zkpot.rules.yml.

Run after editing the rules: .venv/bin/python deploy/prometheus/build_operator_rules.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"


def render() -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "zkpot", "labels": {"release": "kube-prometheus-stack"}},
        "spec": yaml.safe_load((HERE / "zkpot.rules.yml").read_text()),
    }
    return ("# Generated from deploy/prometheus/zkpot.rules.yml by deploy/prometheus/build_operator_rules.py.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=200))


if __name__ == "__main__":
    OUT.write_text(render())
    print(OUT)

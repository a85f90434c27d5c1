"""Prometheus metrics: every series is named zkpot_* and carries `service` and `node` labels."""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_identity: dict[str, str] = {"service": "unknown", "node": "unknown"}

# Durations from a millisecond RPC to a minutes-long proof.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def init(service: str, node: str, port: int | None) -> None:
    """Name this process and serve /metrics on `port` (None or 0: don't serve).

    The address comes from ZKPOT_METRICS_ADDR, default 127.0.0.1: /metrics has no TLS, so a process
    exposes it beyond loopback only when told to (the k8s pods set 0.0.0.0 for Prometheus).
    """
    _identity.update(service=service, node=node)
    _state["initialized"] = True
    for bound in _registry:
        bound.preset()
    if port:
        start_http_server(port, addr=os.environ.get("ZKPOT_METRICS_ADDR", "127.0.0.1"))


_state = {"initialized": False}
_registry: list[_Bound] = []


class _Bound:
    """A metric with the process identity already applied.

    Series exist from start-up, at zero: an unlabelled metric at once, a labelled one for each
    value in `known` (its first extra label), so dashboards and alerts see 0 rather than no data.
    """

    def __init__(self, metric: Counter | Gauge | Histogram, labels: Sequence[str], known: Sequence[str] = ()) -> None:
        self._metric = metric
        self._labels = tuple(labels)
        self._known = tuple(known)
        _registry.append(self)
        if _state["initialized"]:
            self.preset()

    def preset(self) -> None:
        if not self._labels:
            self._metric.labels(**_identity)
        elif len(self._labels) == 1:
            for value in self._known:
                self._metric.labels(**_identity, **{self._labels[0]: value})

    def labels(self, **extra: str):
        return self._metric.labels(**_identity, **extra)

    def _child(self):
        if self._labels:
            raise TypeError(f"{self._metric} needs labels {self._labels}")
        return self._metric.labels(**_identity)

    def inc(self, amount: float = 1) -> None:
        self._child().inc(amount)

    def set(self, value: float) -> None:
        self._child().set(value)

    def observe(self, value: float) -> None:
        self._child().observe(value)

    def time(self):
        return self._child().time()


def counter(name: str, doc: str, labels: Sequence[str] = (), known: Sequence[str] = ()) -> _Bound:
    return _Bound(Counter(name, doc, ["service", "node", *labels]), labels, known)


def gauge(name: str, doc: str, labels: Sequence[str] = (), known: Sequence[str] = ()) -> _Bound:
    return _Bound(Gauge(name, doc, ["service", "node", *labels]), labels, known)


def histogram(name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = DURATION_BUCKETS) -> _Bound:
    return _Bound(Histogram(name, doc, ["service", "node", *labels], buckets=buckets), labels)

"""The ledger service's Prometheus series (zkpot_ledger_*), created once per process."""

from __future__ import annotations

from functools import cache

from zkpot import metrics


class _Metrics:
    def __init__(self) -> None:
        self.height = metrics.gauge("zkpot_ledger_height", "height of the newest committed block")
        self.current_round = metrics.gauge("zkpot_ledger_current_round", "open FL round (rounds+1: finished)")
        self.round_phase = metrics.gauge("zkpot_ledger_round_phase", "phase of the open round (zkpot.v1.RoundPhase): "
                                         "1 proofs, 2 masking, 3 unmasking (secure aggregation), 4 closed")
        self.append_seconds = metrics.histogram("zkpot_ledger_append_seconds", "check + execute + synced write")
        self.group_commit_blocks = metrics.histogram("zkpot_ledger_group_commit_blocks",
                                                     "blocks written by one synced batch",
                                                     buckets=(1, 2, 4, 8, 16, 32, 64))
        self.appends = metrics.counter("zkpot_ledger_appends_total", "Append calls that succeeded", ["result"],
                                       known=("appended", "already_present"))
        self.rejections = metrics.counter("zkpot_ledger_rejections_total", "refused appends", ["reason"],
                                          known=("conflict", "signature", "qc", "parent_qc"))
        self.txs = metrics.counter("zkpot_ledger_txs_total", "executed transactions", ["result"],
                                   known=("accepted", "rejected"))
        self.refused_txs = metrics.counter("zkpot_ledger_refused_txs_total",
                                           "committed transactions the state rules refused, by zkpot.v1.Reason",
                                           ["reason"])


@cache
def _metrics() -> _Metrics:
    return _Metrics()  # prometheus metrics are process-global: create them once

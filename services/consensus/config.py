"""A replica's tunables (what `zkpot consensus serve` flags set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    data_dir: Path
    min_block_interval_s: float = 0.02
    idle_block_s: float = 1.0
    base_timeout_s: float = 1.0
    max_timeout_s: float = 30.0
    max_block_txs: int = 2000
    # transactions in admission (signature checks queued or running) past which SubmitTx and
    # GossipTxs are refused as busy; one request is always taken when none is running
    admission_backlog_txs: int = 4000
    max_block_bytes: int = 8 * 1024 * 1024
    mempool_max_txs: int = 50_000
    mempool_max_bytes: int = 256 * 1024 * 1024
    mempool_max_per_sender: int = 0  # 0: no per-sender quota (the CLI defaults to a quarter of the pool)
    mempool_max_bytes_per_sender: int = 0  # likewise, in bytes

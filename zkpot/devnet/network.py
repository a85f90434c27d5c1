"""The devnet's configuration and the state of one running devnet, shared by the orchestrator
(run.py) and the modules it drives (adapters, adversary, report), which import them from here
rather than from the orchestrator."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from zkpot.devnet import netdelay
from zkpot.devnet.plan import DevnetPlan
from zkpot.devnet.procs import ProcessGroup
from zkpot.devnet.progress import Progress
from zkpot.devnet.stats import RoundStats
from zkpot.genesis import Genesis


@dataclass
class DevnetConfig:
    data_dir: Path
    validators: int = 4
    participants: int = 4
    rounds: int = 3
    base_port: int = 26000
    existing: str = "replace"           # replace | reuse-task | fail
    test_set_size: int = 0               # 0: task default
    shard_size: int = 0                  # 0: one proof over the whole public test set
    prove_workers: int = 1               # per prover; the devnet's provers share the machine
    provers: int = 0                     # scale tests: participants share this many provers; 0: one each
    local_epochs: int = 0               # 0: prover default
    alpha: float = 0.5
    seed: int = 7
    round_deadline_blocks: int = 300
    min_correct: int = 0                # 0: task default
    aggregation_rule: str = ""          # zkpot.aggregation rule; "": task default (fedavg-threshold)
    secure_aggregation: bool = False    # pairwise-masked aggregation: no model leaves its participant
    secagg_threshold: int = 0           # 0: zkpot.secagg.default_threshold (ceil(2n/3))
    report_path: Path | None = None
    idle_block_ms: int = 1000
    attack_checks: bool = True          # submit forged copies of a real proof and expect rejection
    prometheus: bool = False            # also run a real Prometheus scraping every process
    tls: bool = False                   # mutual TLS between every process (dev CA, one cert per node)
    async_fallback: bool = True         # deal a common coin: timeouts start Ditto's asynchronous fallback
    test_set_file: Path | None = None   # the public test set from a user's file (zkpot.zkp.datafiles)
    train_data: Path | None = None      # participants' private shards cut from a user's file
    arch: str = ""                      # the task's zkpot.zkp.arch spec; "": the task default (mlp:64-16-10)
    task_dir: Path | None = None        # run a task the user created (zkpot task create) instead of making one
    # > 0: an asynchronous network adversary (zkpot/devnet/netdelay.py) slows each view's leader
    # by this many seconds, past every view timer, for the whole run (nothing is dropped)
    attack_leader_delay_s: float = 0.0
    linger_s: float = 0.0               # keep the network up this long after the last round
    # experiments: participant name -> Byzantine behaviour (BEHAVIOURS); absent: honest
    behaviours: dict[str, str] = field(default_factory=dict)


@dataclass
class Devnet:
    config: DevnetConfig
    plan: DevnetPlan
    genesis: Genesis
    procs: ProcessGroup
    progress: Progress
    rounds: dict[int, RoundStats] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    attacks: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)  # services that died and were restarted
    t_start: float = field(default_factory=time.monotonic)
    attack_rounds: set[int] = field(default_factory=set)   # rounds whose attack checks have run
    delay_proxy: netdelay.DelayProxy | None = None          # --attack-leader-delay: every replica link
    leader_delay: netdelay.LeaderDelay | None = None
    network: dict = field(default_factory=dict)  # the consensus' view of the run: fallbacks, the adversary

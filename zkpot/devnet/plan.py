"""Who runs where in a devnet: keys, ports, paths and the genesis file."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from zkpot import chain, coin
from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis, Member
from zkpot.ports import base_port_span, ports_in_use
from zkpot.v1 import types_pb2

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ValidatorPlan:
    index: int
    name: str
    key_path: Path
    public_key: bytes
    consensus_port: int
    verifier_port: int
    ledger_port: int
    consensus_metrics: int
    verifier_metrics: int
    ledger_metrics: int
    data_dir: Path

    @property
    def consensus(self) -> str:
        return f"{HOST}:{self.consensus_port}"

    @property
    def coin_share_path(self) -> Path:
        """This validator's share of the fallback's common coin (dealt with genesis)."""
        return self.key_path.with_name(f"{self.name}.coin-share.json")

    @property
    def verifier(self) -> str:
        return f"{HOST}:{self.verifier_port}"

    @property
    def ledger(self) -> str:
        return f"{HOST}:{self.ledger_port}"


@dataclass(frozen=True)
class ParticipantPlan:
    index: int
    name: str
    key_path: Path
    public_key: bytes
    validator: ValidatorPlan          # the validator it submits to (and operates, if `leads`)
    leads: bool                       # operates that validator: its proven score ranks it as leader
    prover_port: int
    prover_metrics: int
    shard_path: Path
    participant_port: int = 0         # its Participant status service (base+500+10j+1)
    participant_metrics: int = 0      # base+500+10j+6
    state_dir: Path = Path()          # the participant service's durable state

    @property
    def prover(self) -> str:
        return f"{HOST}:{self.prover_port}"

    @property
    def participant(self) -> str:
        return f"{HOST}:{self.participant_port}"


@dataclass(frozen=True)
class DevnetPlan:
    data_dir: Path
    validators: tuple[ValidatorPlan, ...]
    participants: tuple[ParticipantPlan, ...]
    observer_metrics: int = 0       # base+905
    prometheus_port: int = 0        # base+909
    proxy_base: int = 0             # base+600: the adversary's delay line a -> b at +n*a+b (n <= 10)

    def proxy_port(self, a: int, b: int) -> int:
        return self.proxy_base + len(self.validators) * a + b

    @property
    def task_dir(self) -> Path:
        return self.data_dir / "task"

    @property
    def genesis_path(self) -> Path:
        return self.data_dir / "genesis.json"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def ports(self) -> list[int]:
        out = []
        for v in self.validators:
            out += [v.consensus_port, v.verifier_port, v.ledger_port, v.consensus_metrics, v.verifier_metrics,
                    v.ledger_metrics]
        for p in self.participants:
            out += [p.prover_port, p.prover_metrics, p.participant_port, p.participant_metrics]
        return out + [self.observer_metrics, self.prometheus_port]

    def metrics_targets(self) -> dict[str, str]:
        out = {}
        for v in self.validators:
            out[f"{v.name}/consensus"] = f"{HOST}:{v.consensus_metrics}"
            out[f"{v.name}/verifier"] = f"{HOST}:{v.verifier_metrics}"
            out[f"{v.name}/ledger"] = f"{HOST}:{v.ledger_metrics}"
        for p in self.participants:
            out[f"{p.name}/prover"] = f"{HOST}:{p.prover_metrics}"
            out[f"{p.name}/participant"] = f"{HOST}:{p.participant_metrics}"
        out["observer/observer"] = f"{HOST}:{self.observer_metrics}"
        return out


def plan_ports(base: int, n_validators: int, n_participants: int) -> list[int]:
    """Every port a devnet with this base uses (see make_plan)."""
    ports = [base + 10 * i + k for i in range(n_validators) for k in (0, 1, 2, 5, 6, 7)]
    ports += [base + 500 + 10 * j + k for j in range(n_participants) for k in (0, 1, 5, 6)]
    return ports + [base + 905, base + 909]


def free_base_port(n_validators: int, n_participants: int) -> int:
    """A base port whose whole plan is free on loopback now (tests, and a hint when ours is busy),
    below the ephemeral range so outgoing connections cannot take its ports before the servers do."""
    lo, hi = base_port_span()
    for base in random.sample(range(lo, hi, 1000), k=len(range(lo, hi, 1000))):
        if not ports_in_use(plan_ports(base, n_validators, n_participants)):
            return base
    raise RuntimeError(f"no free port range between {lo} and {hi}")


def _key(path: Path) -> KeyPair:
    if path.exists():
        return KeyPair.load(path)
    key = KeyPair.generate()
    key.save(path)
    return key


def make_plan(data_dir: Path, n_validators: int, n_participants: int, base_port: int) -> DevnetPlan:
    """Ports: validator i uses base+10i .. +7; participant j's prover base+500+10j (+5 metrics) and
    participant service base+500+10j+1 (+6 metrics); the observer's
    metrics base+905; Prometheus (with --prometheus) base+909."""
    keys = data_dir / "keys"
    validators = []
    for i in range(n_validators):
        name = f"v{i}"
        key = _key(keys / f"{name}.json")
        p = base_port + 10 * i
        validators.append(
            ValidatorPlan(i, name, keys / f"{name}.json", key.public, p, p + 1, p + 2, p + 5, p + 6, p + 7,
                          data_dir / "nodes" / name)
        )
    participants = []
    for j in range(n_participants):
        name = f"p{j}"
        key = _key(keys / f"{name}.json")
        p = base_port + 500 + 10 * j
        participants.append(
            ParticipantPlan(j, name, keys / f"{name}.json", key.public, validators[j % n_validators],
                            leads=j < n_validators, prover_port=p, prover_metrics=p + 5,
                            shard_path=data_dir / "shards" / f"{name}.npz", participant_port=p + 1,
                            participant_metrics=p + 6, state_dir=data_dir / "nodes" / name / "participant")
        )
    return DevnetPlan(data_dir, tuple(validators), tuple(participants), observer_metrics=base_port + 905,
                      prometheus_port=base_port + 909, proxy_base=base_port + 600)


def make_genesis(plan: DevnetPlan, publish_tx: types_pb2.Transaction, async_fallback: bool = True) -> Genesis:
    """Genesis, and with the asynchronous fallback the common coin's keys: dealt here, by this
    process, which therefore knows every share (a trusted dealer: fine for a devnet whose keys it
    makes anyway; docs/consensus.md says what a distributed key generation changes)."""
    task_id = publish_tx.publish_task.task_id
    coin_public = None
    if async_fallback:
        n = len(plan.validators)
        coin_public, shares = coin.deal(n, chain.quorum_size(n))
        for v, share in zip(plan.validators, shares, strict=True):
            coin.save_share(v.coin_share_path, share, v.index)
    genesis = Genesis(
        chain_id=f"zkpot-devnet-{task_id[:4].hex()}-{int(time.time())}",
        genesis_time_ms=int(time.time() * 1000),
        validators=tuple(Member(v.name, v.public_key) for v in plan.validators),
        participants=tuple(
            Member(p.name, p.public_key, p.validator.public_key if p.leads else b"") for p in plan.participants
        ),
        publish_task=publish_tx,
        coin=coin_public,
    )
    genesis.check()
    genesis.save(plan.genesis_path)
    return genesis

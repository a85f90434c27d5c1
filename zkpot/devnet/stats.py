"""What the devnet records of each round and each submission (the report's rows): filled by the
orchestrator from the participants' Status and the ledgers, written by report.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from zkpot import refusal
from zkpot.v1 import ledger_pb2, participant_pb2


@dataclass
class SubmissionStats:
    participant: str
    round: int
    tx_id: str = ""
    claimed_correct: int = 0
    test_set_size: int = 0
    float_accuracy: float = 0.0
    quantized_accuracy: float = 0.0
    train_s: float = 0.0
    compile_s: float = 0.0
    witness_s: float = 0.0
    prove_s: float = 0.0
    prover_wall_s: float = 0.0
    admission_s: float = 0.0          # SubmitTx round trip: signature + proof verification
    commit_s: float = 0.0             # submission to committed in the ledger
    admitted: bool = False
    admission_reason: str = ""
    ledger_reason: str = ""           # committed, but refused by the ledger's state rules: why
    refusal: str = ""                 # the validator's refusal (zkpot.refusal label), "" if none
    ledger_refusal: str = ""          # the ledger's refusal (zkpot.refusal label), "" if none
    height: int = 0
    aggregated: bool = False

    stage: str = ""                   # how the round ended for the participant (its own record)
    validator: str = ""               # consensus address that admitted it
    attempts: int = 0                 # SubmitTx calls, fail-overs included

    @classmethod
    def from_participant(cls, name: str, r: participant_pb2.ParticipantRound) -> SubmissionStats:
        """From the participant service's own record of the round (its Status RPC)."""
        return cls(participant=name, round=r.round, tx_id=r.tx_id.hex(), claimed_correct=r.claimed_correct,
                   test_set_size=r.test_set_size, float_accuracy=r.float_accuracy,
                   quantized_accuracy=r.claimed_correct / r.test_set_size if r.test_set_size else 0.0,
                   train_s=r.train_seconds, compile_s=r.compile_seconds, witness_s=r.witness_seconds,
                   prove_s=r.prove_seconds, prover_wall_s=r.prover_wall_seconds, admission_s=r.admission_seconds,
                   commit_s=r.commit_seconds, admitted=r.admitted,
                   admission_reason="" if r.admitted else r.reason, ledger_reason=r.ledger_reason, height=r.height,
                   refusal=refusal.label(r.refusal) if r.refusal else "",
                   ledger_refusal=refusal.label(r.ledger_refusal) if r.ledger_refusal else "",
                   aggregated=r.aggregated, stage=r.stage, validator=r.validator, attempts=r.attempts)


@dataclass
class RoundStats:
    round: int
    started: float = 0.0
    closed: float = 0.0
    global_accuracy: float = 0.0      # on the task's public test set
    holdout_accuracy: float = 0.0     # on the whole held-out split
    next_leaders: list[str] = field(default_factory=list)
    next_scores: list[int] = field(default_factory=list)
    next_view_shares: dict[str, float] = field(default_factory=dict)  # the next epoch's share of views per validator
    blocks_proposed: dict[str, int] = field(default_factory=dict)     # this round's committed blocks by proposer
    submissions: dict[str, SubmissionStats] = field(default_factory=dict)
    summary: ledger_pb2.RoundSummary | None = None

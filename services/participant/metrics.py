"""The participant's Prometheus series (zkpot_participant_*)."""

from __future__ import annotations

from zkpot import metrics

PHASES = ("starting", "waiting", "proving", "submitting", "including", "masking", "unmasking", "finished")
OUTCOMES = ("committed", "refused", "ledger_refused", "late", "skipped", "prover_failed")

rounds_joined = metrics.counter("zkpot_participant_rounds_joined_total",
                                "Rounds this participant asked its prover to prove")
proof_seconds = metrics.histogram("zkpot_participant_proof_seconds",
                                  "ProveRound wall time as this participant saw it (training included)")
submissions = metrics.counter("zkpot_participant_submissions_total",
                              "Round submissions by outcome and reason (a validator's refusal: its zkpot.v1.Reason "
                              "label; else this participant's own, e.g. late)",
                              ["outcome", "reason"])
attempts = metrics.counter("zkpot_participant_submit_attempts_total",
                           "SubmitTx calls by result (admitted, duplicate, retry, refused, unavailable)", ["result"],
                           known=("admitted", "duplicate", "retry", "refused", "unavailable"))
failovers = metrics.counter("zkpot_participant_failovers_total",
                            "Switches to another validator (the current one was down or could not verify)")
prover_failures = metrics.counter("zkpot_participant_prover_failures_total",
                                  "ProveRound calls that failed, by gRPC status", ["code"])
errors = metrics.counter("zkpot_participant_errors_total",
                         "Unexpected errors in a round (logged with a traceback; the round is picked up again)",
                         ["kind"])
last_accepted_round = metrics.gauge("zkpot_participant_last_accepted_round",
                                    "Last round whose submission the chain accepted")
height = metrics.gauge("zkpot_participant_chain_height", "Chain head as this participant follows it")
current_round = metrics.gauge("zkpot_participant_current_round", "Round the participant is working on")
phase = metrics.gauge("zkpot_participant_phase", "1 for the phase the participant is in now", ["phase"],
                      known=PHASES)


def set_phase(name: str) -> None:
    for p in PHASES:
        phase.labels(phase=p).set(1 if p == name else 0)


def label(reason: str) -> str:
    """A bounded metric label from this participant's own "label: detail" sentence ("late: ..." ->
    "late"); a validator's refusal is labelled by its enum (zkpot.refusal.label), never its text."""
    head = reason.split(":", 1)[0].strip().lower().replace(" ", "_")
    return head[:40] if head.replace("_", "").isalnum() else "other"

"""One vocabulary of refusals (issue 17.2): the `zkpot.v1.Reason` enum, set by admission
(consensus TxAdmission), execution (ledger TxResult) and verification (VerifyResult), and the
`reason` label of every refusal metric. Code branches on the enum, never on text; `detail` is for
people and may change. The enum's comments in types.proto say which refusals are transient."""

from __future__ import annotations

from dataclasses import dataclass

from zkpot.v1 import types_pb2

R = types_pb2.Reason
UNSPECIFIED = types_pb2.REASON_UNSPECIFIED
ACCEPTED = types_pb2.REASON_ACCEPTED
MALFORMED = types_pb2.REASON_MALFORMED
BAD_SIGNATURE = types_pb2.REASON_BAD_SIGNATURE
UNKNOWN_SIGNER = types_pb2.REASON_UNKNOWN_SIGNER
DUPLICATE = types_pb2.REASON_DUPLICATE
TOO_LARGE = types_pb2.REASON_TOO_LARGE
RATE_LIMITED = types_pb2.REASON_RATE_LIMITED
BUSY = types_pb2.REASON_BUSY
VERIFIER_UNAVAILABLE = types_pb2.REASON_VERIFIER_UNAVAILABLE
WRONG_TASK = types_pb2.REASON_WRONG_TASK
SUBMITTER_MISMATCH = types_pb2.REASON_SUBMITTER_MISMATCH
CLAIM_MISMATCH = types_pb2.REASON_CLAIM_MISMATCH
COMMITMENT_MISMATCH = types_pb2.REASON_COMMITMENT_MISMATCH
INVALID_PROOF = types_pb2.REASON_INVALID_PROOF
MODEL_MISMATCH = types_pb2.REASON_MODEL_MISMATCH
SHARD_MISMATCH = types_pb2.REASON_SHARD_MISMATCH
WRONG_ROUND = types_pb2.REASON_WRONG_ROUND
WRONG_PHASE = types_pb2.REASON_WRONG_PHASE
FREE_RIDING = types_pb2.REASON_FREE_RIDING
MASKING_RULE = types_pb2.REASON_MASKING_RULE

# Transient refusals: the same signed bytes may succeed later (RETRY_LATER, same validator) or at
# another validator (RETRY_ELSEWHERE: this one's verifier is down). Every other refusal is final.
RETRY_LATER = frozenset({RATE_LIMITED, BUSY})
RETRY_ELSEWHERE = frozenset({VERIFIER_UNAVAILABLE})


def label(reason: int) -> str:
    """The metric label of a reason: REASON_BAD_SIGNATURE -> "bad_signature" (bounded: one per
    enum value; a number this build does not know is "unknown")."""
    try:
        return R.Name(reason).removeprefix("REASON_").lower()
    except ValueError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why something was refused: the enum value and a sentence for people."""

    reason: int
    detail: str

    @property
    def label(self) -> str:
        return label(self.reason)

    def __str__(self) -> str:
        return f"{self.label}: {self.detail}"


def text(reason: int, detail: str) -> str:
    """A log line's / a report's rendering of a refusal ("" when accepted)."""
    return "" if reason == ACCEPTED else str(Refusal(reason, detail))

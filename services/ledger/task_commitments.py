"""The task's KZG commitment scheme, bound to one task, as the state machine's secure aggregation
needs it (services.ledger.masking.Commitments). Imported only for secure-aggregation tasks: it
pulls in ezkl and torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zkpot.zkp import commitment
from zkpot.zkp.task import Task


class TaskCommitments:
    def __init__(self, task: Task) -> None:
        self.task = task
        commitment.layout(task)  # learns the circuit's layout now (~0.5 s), not inside a block's execution
        self.n_params = commitment.vector_length(task)
        self.commitment_size = task.commitment_size

    def commitment_of(self, model: bytes) -> bytes:
        return commitment.commit_vector(self.task, commitment.param_vector(self.task, model))

    def matches(self, commitments: Sequence[bytes], weights: Sequence[int], summed: np.ndarray) -> bool:
        try:
            return commitment.aggregate_matches(self.task, list(commitments), list(weights), summed)
        except commitment.CommitmentError:
            return False  # a commitment that is not a curve point opens nothing

    def to_model(self, summed: np.ndarray, divisor: int) -> bytes:
        return commitment.model_from_vector(self.task, summed, divisor)

"""Leader of a view: zkpot.schedule.leader_for_view over the ledger's committed schedule."""

from __future__ import annotations

from collections.abc import Sequence

from zkpot import schedule
from zkpot.v1 import ledger_pb2


class LeaderElector:
    def __init__(self, genesis_order: Sequence[bytes]) -> None:
        self.validators = frozenset(genesis_order)
        # before the ledger answers: the genesis order, which is also the ledger's epoch-0 schedule
        self.schedule = schedule.Schedule(
            epoch=0, activation_view=0, leaders=tuple(genesis_order), scores=tuple(0 for _ in genesis_order)
        )

    def leader(self, view: int) -> bytes:
        return schedule.leader_for_view(self.schedule, view)

    def update(self, resp: ledger_pb2.LeaderScheduleResponse) -> bool:
        """Adopt the ledger's schedule; refuse one naming non-validators (returns whether it changed)."""
        leaders = tuple(resp.leaders)
        previous = tuple(resp.previous_leaders)
        if not leaders or any(k not in self.validators for k in (*leaders, *previous)):
            raise ValueError("leader schedule names no leaders or a key that is not a validator")
        new = schedule.Schedule(
            epoch=resp.epoch,
            activation_view=resp.activation_view,
            leaders=leaders,
            scores=tuple(resp.scores),
            previous_leaders=previous,
            previous_activation_view=resp.previous_activation_view,
        )
        changed = new != self.schedule
        self.schedule = new
        return changed

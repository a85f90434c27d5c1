"""Leader schedule: a pure function of committed data, shared by the ledger (which records it)
and consensus (which evaluates it per view).

Rule: when FL round r closes (in a block of view V), validators whose participant's proven
correct count in round r reached the task threshold are ranked best first (ties broken by
sha256(round || key)); the rest follow in the same tie order, so a validator without a passing
proof can still lead but only after every proven one. The schedule applies from view
V + ACTIVATION_LAG: every replica has committed the closing block long before it reaches that
view, so all derive the same leader for every view. Before any round closes: genesis order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ACTIVATION_LAG = 10


@dataclass(frozen=True)
class Schedule:
    epoch: int                      # FL round whose scores ranked the leaders (0: genesis order)
    activation_view: int
    leaders: tuple[bytes, ...]
    scores: tuple[int, ...]
    previous_leaders: tuple[bytes, ...] = ()
    previous_activation_view: int = 0


def tie_break(round_: int, key: bytes) -> bytes:
    return hashlib.sha256(round_.to_bytes(8, "big") + key).digest()


def rank_leaders(
    round_: int, validators: Sequence[bytes], scores: Mapping[bytes, int], min_correct: int
) -> tuple[tuple[bytes, ...], tuple[int, ...]]:
    """Order validators for the epoch after `round_` from their proven scores in that round."""

    def sort_key(v: bytes) -> tuple[int, int, bytes]:
        score = scores.get(v, -1)
        passed = score >= min_correct
        return (0 if passed else 1, -score if passed else 0, tie_break(round_, v))

    ordered = sorted(validators, key=sort_key)
    return tuple(ordered), tuple(max(scores.get(v, 0), 0) for v in ordered)


def leader_for_view(schedule: Schedule, view: int) -> bytes:
    if view >= schedule.activation_view or not schedule.previous_leaders:
        leaders, start = schedule.leaders, schedule.activation_view
    else:
        leaders, start = schedule.previous_leaders, schedule.previous_activation_view
    return leaders[(view - start) % len(leaders)]

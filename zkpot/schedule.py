"""Leader schedule: a pure function of committed data, shared by the ledger (which records it)
and consensus (which evaluates it per view).

Ranking (recorded by the ledger): when FL round r closes (in a block of view V), validators whose
participant's proven correct count in round r reached the task threshold are ranked best first
(ties broken by sha256(round || key)); the rest follow in the same tie order. The schedule applies
from view V + ACTIVATION_LAG: every replica has committed the closing block long before it reaches
that view, so all derive the same leader for every view. Before any round closes: genesis order.

Leadership (issue 21; `rotation`): proven contribution decides *how often* a validator leads,
not only in which order. When at least 2f+1 validators qualified in the epoch's round, only they
lead, each in proportion to its proven score (WEIGHT_LEVELS levels of the best score, at least
1), interleaved by smooth weighted round-robin so no validator leads long runs; a validator whose
participant proved nothing, or too little, leads no view at all. Liveness needs more than that:
a 2-chain commit needs two certified views in a row, and a crashed leader is skipped only once
its failure is in a committed block, so a cycle in which f crashed leaders hold so many turns
that no two live ones are adjacent never commits again (found in the simulator: n = 4, two
qualified, the heavier one crashed: the chain stopped at height 7). Hence the f largest weights
must sum to less than the rest (then live turns outnumber dead ones and two are adjacent): where
they would not, the heaviest are lowered one turn at a time until they do (_capped).
With f+1..2f qualified only they lead still, two turns in a row each: at most f of them are
faulty, so one live leader holds two adjacent views, commits, and the committed timeouts of the
others then skip them. Only with 1..f qualified (all of them
may be faulty) does the cycle widen, to the 2f+1 best ranked, one turn each (qualified first;
f+1 of those are live); with none, every validator in turn.
A qualified leader that crashes is skipped by
services.consensus.leader's rule as before. The score is the last closed round's only: a
validator whose participant stops proving loses its turns at the next epoch.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ACTIVATION_LAG = 10
WEIGHT_LEVELS = 8   # a leader's turns per cycle: 1..8, in proportion to its score over the best


@dataclass(frozen=True)
class Schedule:
    epoch: int                      # FL round whose scores ranked the leaders (0: genesis order)
    activation_view: int
    leaders: tuple[bytes, ...]
    scores: tuple[int, ...]
    previous_leaders: tuple[bytes, ...] = ()
    previous_activation_view: int = 0
    previous_scores: tuple[int, ...] = ()


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


def weights(scores: Sequence[int], min_correct: int) -> tuple[int, ...]:
    """Turns per cycle for each ranked validator: 0 unless it qualified (score >= min_correct and
    > 0), else 1..WEIGHT_LEVELS by its score over the best (integer arithmetic: every replica agrees)."""
    threshold = max(1, min_correct)
    best = max((s for s in scores if s >= threshold), default=0)
    return tuple(max(1, (WEIGHT_LEVELS * s + best // 2) // best) if best and s >= threshold else 0 for s in scores)


@functools.lru_cache(maxsize=64)
def rotation(leaders: tuple[bytes, ...], scores: tuple[int, ...], min_correct: int, f: int) -> tuple[bytes, ...]:
    """The cycle of leaders for an epoch (module docstring): the qualified ones, weighted (smooth
    weighted round-robin, ties to the better ranked) when 2f+1 or more qualified, the heaviest
    capped so no f of them hold half the turns; f+1..2f qualified: two turns in a row each; 1..f:
    the 2f+1 best ranked; none: every validator."""
    w = weights(scores, min_correct)
    qualified = [i for i, x in enumerate(w) if x > 0]
    if not qualified:
        return leaders  # nothing proven (genesis): everyone, in turn
    if len(qualified) <= f:
        # all of them may be faulty: the 2f+1 best ranked (qualified first), one turn each
        return leaders[: 2 * f + 1]
    if len(qualified) < 2 * f + 1:
        # too few to weight safely, enough that one is live: a pair of adjacent turns each
        return tuple(leaders[i] for i in qualified for _ in range(2))
    w = _capped(w, qualified, f)
    total = sum(w[i] for i in qualified)
    current = dict.fromkeys(qualified, 0)
    cycle = []
    for _ in range(total):
        for i in qualified:
            current[i] += w[i]
        best = max(qualified, key=lambda i: (current[i], -i))
        current[best] -= total
        cycle.append(leaders[best])
    return tuple(cycle)


def _capped(w: Sequence[int], qualified: Sequence[int], f: int) -> list[int]:
    """The weights with the heaviest lowered, one turn at a time (the heaviest first, ties to the
    worse ranked), until any f of them hold fewer turns than the rest: then f crashed leaders
    cannot separate every pair of live turns. The least change that keeps liveness, so proven
    scores still set the shares (equal turns instead would hand a validator at the threshold as
    many views as the best: measured in `zkpot experiment`, a label flipper at 4/16 led 1/3).
    Terminates: with 2f+1 or more qualified, equal weights already satisfy it."""
    out = list(w)
    while True:
        ranked = sorted(qualified, key=lambda i: (-out[i], -i))
        top = sum(out[i] for i in ranked[:f])
        if top < sum(out[i] for i in qualified) - top:
            return out
        out[ranked[0]] -= 1


def epoch_of(schedule: Schedule, view: int) -> tuple[int, tuple[bytes, ...], tuple[int, ...]]:
    """(first view, ranked leaders, scores) of the epoch `view` is in: the current one, or for the
    views before its activation the previous one, with its own weights (a schedule recorded without
    previous scores rotates those views plainly)."""
    if view >= schedule.activation_view or not schedule.previous_leaders:
        return schedule.activation_view, schedule.leaders, schedule.scores
    return schedule.previous_activation_view, schedule.previous_leaders, schedule.previous_scores


def order_for_view(schedule: Schedule, view: int, min_correct: int | None = None, f: int = 0
                   ) -> tuple[int, tuple[bytes, ...]]:
    """(first view of its epoch, the epoch's leader cycle). min_correct None: plain rotation over
    the ranking (the rule before issue 21, kept for tools that only show the ranking)."""
    start, leaders, scores = epoch_of(schedule, view)
    if min_correct is None or len(scores) != len(leaders):
        return start, leaders
    return start, rotation(leaders, scores, min_correct, f)


def leader_for_view(schedule: Schedule, view: int, min_correct: int | None = None, f: int = 0) -> bytes:
    start, cycle = order_for_view(schedule, view, min_correct, f)
    return cycle[(view - start) % len(cycle)]


def coin_weights(cycle: Sequence[bytes], validators: Sequence[bytes]) -> tuple[int, ...]:
    """The asynchronous fallback's election weights (issue 15), from the fast path's own cycle so
    proven contribution weighs the same in both: each validator's turns in the epoch's cycle plus
    a floor of max(1, len(cycle) // n), in the order of `validators`. The floor keeps everyone
    electable (>= 1/(2n) even when one validator holds every turn), and turns come only from
    proven scores, so f Byzantine validators raise their odds only by proving better models."""
    floor = max(1, len(cycle) // max(1, len(validators)))
    return tuple(cycle.count(v) + floor for v in validators)


def view_shares(leaders: Sequence[bytes], scores: Sequence[int], min_correct: int, f: int) -> dict[bytes, float]:
    """Each validator's share of the views of an epoch with this ranking (dashboards, reports);
    scores not parallel to the leaders (a schedule recorded without them) rotate plainly, as in
    order_for_view."""
    cycle = rotation(tuple(leaders), tuple(scores), min_correct, f) if len(scores) == len(leaders) else tuple(leaders)
    return {v: cycle.count(v) / len(cycle) for v in leaders}

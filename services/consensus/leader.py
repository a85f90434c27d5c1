"""Leader of a view: zkpot.schedule.leader_for_view over the ledger's committed schedule, skipping
validators that failed to lead earlier in the same epoch.

Skip rule (a pure function of committed blocks; docs/consensus.md has the fairness and liveness
argument): a committed block whose view is above parent_qc.view + 1 was proposed after a TC, so
the leaders of the views in that gap produced no certified block. For view v, F(v) = scheduled
leaders of gap views found in committed blocks of v's epoch whose own view is <= v - SKIP_LAG. If the
scheduled leader is in F(v), the next validator of the epoch's order not in F(v) leads instead.
F(v) is ignored when it holds more than f validators (plain rotation), so at most f are ever
skipped and they are forgiven when the next epoch starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from zkpot import chain, schedule
from zkpot.v1 import ledger_pb2, types_pb2

# Evidence counts from this many views after its block. A block of view b is committed everywhere
# once the QC of its child (view b+1) is seen, i.e. by view b+2 on a live network (votes go to every
# replica); one view more of margin. With the epoch's ACTIVATION_LAG (10) instead, a dead leader at
# n = 4 failed three times per epoch before the skip took effect (issue 19.4, measured in the simulator).
SKIP_LAG = 3
MAX_GAP = 64  # views of one gap examined (a gap is a run of timeouts; longer ones add nothing)


class LeaderElector:
    def __init__(self, genesis_order: Sequence[bytes], min_correct: int | None = None) -> None:
        """min_correct: the task's threshold, which decides who qualifies to lead (zkpot.schedule.rotation);
        None: plain rotation over the ranking."""
        self.validators = frozenset(genesis_order)
        self.min_correct = min_correct
        # before the ledger answers: the genesis order, which is also the ledger's epoch-0 schedule
        self.schedule = schedule.Schedule(
            epoch=0, activation_view=0, leaders=tuple(genesis_order), scores=tuple(0 for _ in genesis_order)
        )

        self.f = chain.max_faulty(len(self.validators))
        self._evidence: list[tuple[int, int]] = []  # (view of the committed block, failed view)
        self._memo: dict[int, bytes] = {}
        self._last_noted_height = 0
        self._last_fallback_h1_view = 0  # view of the last noted block if it was a fallback height-1 block

    def _epoch(self, view: int) -> tuple[int, tuple[bytes, ...]]:
        """(first view, leader cycle) of view's epoch (zkpot.schedule.order_for_view)."""
        start, cycle = schedule.order_for_view(self.schedule, view, self.min_correct, self.f)
        return (start if view >= start else 0), cycle

    def leader(self, view: int) -> bytes:
        cached = self._memo.get(view)
        if cached is not None:
            return cached
        base = schedule.leader_for_view(self.schedule, view, self.min_correct, self.f)
        start, order = self._epoch(view)
        # evidence is appended in view order, so a prefix holds everything committed by view - LAG
        # the *scheduled* leaders of those views, not recomputed ones: a view whose substitute
        # failed blames the scheduled leader (already skipped) instead of growing F past f and
        # switching the rule off (a weighted cycle gives a dead top scorer several turns per
        # SKIP_LAG; recomputing them with later evidence named live substitutes)
        failed = {
            schedule.leader_for_view(self.schedule, fv, self.min_correct, self.f)
            for ev, fv in self._evidence if ev <= view - SKIP_LAG and self._epoch(fv)[0] == start
        }
        out = base
        if base in failed and len(failed) <= self.f:
            k = (view - schedule.epoch_of(self.schedule, view)[0]) % len(order)  # base's place in the cycle
            later = (order[(k + i) % len(order)] for i in range(1, len(order)))
            out = next((c for c in later if c not in failed), base)
        self._memo[view] = out
        return out

    def fallback_leader(self, fallback_view: int, coin_value: int) -> bytes:
        """The chain the coin of a fallback elects: each validator with probability proportional to
        schedule.coin_weights of the fast path's cycle in the epoch of `fallback_view` (its turns
        plus a floor). A pure function of committed data and the coin."""
        _start, cycle = schedule.order_for_view(self.schedule, fallback_view, self.min_correct, self.f)
        order = sorted(self.validators)  # fixed order: only the weights matter, not the ranking
        weights = schedule.coin_weights(cycle, order)
        pick = coin_value % sum(weights)
        for k, w in zip(order, weights, strict=True):
            if pick < w:
                return k
            pick -= w
        raise AssertionError("unreachable")

    def note_committed(self, block: types_pb2.Block) -> None:
        """Record the failed-leader evidence of a newly committed block (call in height order)."""
        hdr = block.header
        if hdr.height <= self._last_noted_height:
            return
        self._last_noted_height = hdr.height
        start = hdr.parent_qc.view + 1
        if self._last_fallback_h1_view and hdr.parent_qc.view == self._last_fallback_h1_view:
            start += 1  # a fallback's second view has no leader: its chain stopped at height 1
        self._last_fallback_h1_view = hdr.view if hdr.fallback_height == 1 else 0
        if hdr.fallback_height == 2:
            return
        gap = range(max(start, hdr.view - MAX_GAP), hdr.view)
        if gap:
            self._evidence.extend((hdr.view, fv) for fv in gap)
            self._memo.clear()

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
            previous_scores=tuple(resp.previous_scores),
        )
        changed = new != self.schedule
        self.schedule = new
        if changed:
            self._memo.clear()
        return changed

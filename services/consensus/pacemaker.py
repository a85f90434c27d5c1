"""View timer with exponential backoff.

The timer of a view is wait_s + base_s * 2^k (capped at max_s), k the number of views in a row
that ended by timeout. wait_s is how long the leader may legitimately hold back its proposal:
the idle interval when this replica knows of no pending transactions (an idle leader waits that
long before proposing an empty block), the batching interval when it does (so a crashed leader
costs ~base_s, not idle_s + base_s, while there is work). Repeated timeouts give slow links ever
more time; k steps back down by one after DECAY_VIEWS views in a row that ended by a QC (not to
0 at the first QC: when a full block takes longer to check than the base timer, as at n = 10 on 2
cores under load, a reset to base timed out every other view and, with 2-chain commits needing two
certified views in a row, nothing ever committed; issue 22). And a view whose proposal has
arrived gets at least a whole timer from its arrival (`proposal_arrived`), so a replica does not
give up on a proposal it is still checking.

Each restart opens a new generation; the expiry callback gets the generation it expired in, so a
handler that waited (for the core's lock) while the view moved on can tell that its timer is
stale and must not time out the view that is current by then (issue 19.3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DECAY_VIEWS = 3  # certified views in a row that take one doubling off the timer


class Pacemaker:
    def __init__(
        self,
        base_s: float,
        idle_s: float,
        max_s: float,
        on_expiry: Callable[[int], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.base_s = base_s
        self.idle_s = idle_s
        self.max_s = max_s
        self.consecutive_timeouts = 0
        self._certified_run = 0  # views in a row that began by a QC since the last step down
        self._extended = False
        self._on_expiry = on_expiry
        self.wait_s = idle_s
        self._deadline = self._clock() + self.duration()
        self._moved = asyncio.Event()
        self.generation = 0

    def timer_s(self) -> float:
        return min(self.base_s * (2**self.consecutive_timeouts), self.max_s)

    def duration(self) -> float:
        return self.wait_s + self.timer_s()

    def restart(self, progress: bool, wait_s: float | None = None) -> None:
        """A new view began; `progress`: it began by a QC (the backoff steps down after
        DECAY_VIEWS of those in a row); `wait_s`: the leader's allowed hold-back in this view
        (default: the idle interval)."""
        if progress:
            self._certified_run += 1
            if self._certified_run >= DECAY_VIEWS and self.consecutive_timeouts:
                self.consecutive_timeouts -= 1
                self._certified_run = 0
        else:
            self._certified_run = 0
        self.wait_s = self.idle_s if wait_s is None else min(wait_s, self.idle_s)
        self._deadline = self._clock() + self.duration()
        self._extended = False
        self.generation += 1
        self._moved.set()

    def step_down(self) -> None:
        """One doubling less (the asynchronous fallback just committed)."""
        if self.consecutive_timeouts:
            self.consecutive_timeouts -= 1
            self._certified_run = 0

    def proposal_arrived(self) -> None:
        """The current view's proposal is here (signed by its leader): allow a whole timer from
        now to check it and vote. Once per view, so a leader cannot stretch a view further than
        one timer by proposing late (as slow as not proposing at all)."""
        if self._extended:
            return
        self._extended = True
        self._deadline = max(self._deadline, self._clock() + self.timer_s())
        self._moved.set()

    def suspend(self) -> None:
        """No timer until the next restart (the asynchronous fallback has none: it must not count
        as timeouts that lengthen the fast path's timer afterwards)."""
        self._deadline = float("inf")
        self.generation += 1
        self._moved.set()

    def is_current(self, generation: int) -> bool:
        """No restart since the expiry of `generation`: the view it timed is still the view."""
        return generation == self.generation

    async def run(self) -> None:
        while True:
            delay = self._deadline - self._clock()
            if delay > 0:
                self._moved.clear()
                try:
                    await asyncio.wait_for(self._moved.wait(), timeout=None if delay == float("inf") else delay)
                except TimeoutError:
                    pass
                continue
            self.consecutive_timeouts += 1
            self._certified_run = 0
            self._deadline = self._clock() + self.duration()
            await self._on_expiry(self.generation)

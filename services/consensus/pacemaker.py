"""View timer with exponential backoff.

The timer of a view is wait_s + base_s * 2^k (capped at max_s), k the number of views in a row
that ended by timeout. wait_s is how long the leader may legitimately hold back its proposal:
the idle interval when this replica knows of no pending transactions (an idle leader waits that
long before proposing an empty block), the batching interval when it does (so a crashed leader
costs ~base_s, not idle_s + base_s, while there is work). Repeated timeouts give slow links ever
more time until a QC resets k.

Each restart opens a new generation; the expiry callback gets the generation it expired in, so a
handler that waited (for the core's lock) while the view moved on can tell that its timer is
stale and must not time out the view that is current by then (issue 19.3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


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
        self._on_expiry = on_expiry
        self.wait_s = idle_s
        self._deadline = self._clock() + self.duration()
        self._moved = asyncio.Event()
        self.generation = 0

    def duration(self) -> float:
        return self.wait_s + min(self.base_s * (2**self.consecutive_timeouts), self.max_s)

    def restart(self, progress: bool, wait_s: float | None = None) -> None:
        """A new view began; `progress`: it began by a QC (resets the backoff); `wait_s`: the
        leader's allowed hold-back in this view (default: the idle interval)."""
        if progress:
            self.consecutive_timeouts = 0
        self.wait_s = self.idle_s if wait_s is None else min(wait_s, self.idle_s)
        self._deadline = self._clock() + self.duration()
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
                    await asyncio.wait_for(self._moved.wait(), timeout=delay)
                except TimeoutError:
                    pass
                continue
            self.consecutive_timeouts += 1
            self._deadline = self._clock() + self.duration()
            await self._on_expiry(self.generation)

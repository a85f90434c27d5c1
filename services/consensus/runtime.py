"""Where a replica reads its clocks and runs CPU-heavy work.

Production: the monotonic clock, the wall clock and a thread pool (PyNaCl releases the GIL, so
signature checks in threads use every core). The deterministic simulator swaps in virtual time
and inline execution, so a seeded scenario replays event for event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Runtime:
    def now(self) -> float:
        """Monotonic seconds (timers, latencies)."""
        return time.monotonic()

    def wall_ms(self) -> int:
        """Wall-clock milliseconds (block timestamps)."""
        return int(time.time() * 1000)

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        """Run CPU-heavy `fn(*args)` off the event loop."""
        return await asyncio.to_thread(fn, *args)


REAL = Runtime()

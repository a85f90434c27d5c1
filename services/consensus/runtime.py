"""Where a replica reads its clocks and runs CPU-heavy work.

Production: the monotonic clock, the wall clock and thread pools (PyNaCl releases the GIL, so
signature checks in threads use every core). Two pools: the protocol's own work (proposal, vote
and timeout checks, the safety state) never queues behind bulk transaction admission, which has
its own small pool; under a flood of submissions and gossip, a proposal is checked at once
instead of after every queued batch (at n = 10 on 2 cores that queue outlasted the view timeout,
and no view committed: issue 22). The deterministic simulator swaps in virtual time and inline
execution, so a seeded scenario replays event for event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
BULK_WORKERS = 2  # signature batches release the GIL: two keep two cores busy without a backlog of threads


class Runtime:
    def now(self) -> float:
        """Monotonic seconds (timers, latencies)."""
        return time.monotonic()

    def wall_ms(self) -> int:
        """Wall-clock milliseconds (block timestamps)."""
        return int(time.time() * 1000)

    _bulk: ThreadPoolExecutor | None = None

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        """Run CPU-heavy `fn(*args)` of the protocol off the event loop."""
        return await asyncio.to_thread(fn, *args)

    async def offload_bulk(self, fn: Callable[..., T], *args: object) -> T:
        """Run transaction-admission work off the event loop, in its own pool."""
        if Runtime._bulk is None:
            Runtime._bulk = ThreadPoolExecutor(max_workers=BULK_WORKERS, thread_name_prefix="admission")
        return await asyncio.get_running_loop().run_in_executor(Runtime._bulk, fn, *args)


REAL = Runtime()

"""Token buckets per key (peer, submitter), bounded in memory, for throttling strangers.

One bucket per key refills at `rate` tokens/s up to `burst`; a request costs tokens (e.g. one
per transaction) and is refused when the bucket cannot pay. Buckets are kept in LRU order and
the oldest are dropped past `max_keys`, so a stranger inventing identities cannot grow memory;
a dropped key comes back with a full bucket, which is no more than a fresh peer gets.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_KEYS = 10_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst <= 0 or max_keys <= 0:
            raise ValueError("rate, burst and max_keys must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str) -> _Bucket:
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(self.burst, now)
            self._buckets[key] = b
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            self._buckets.move_to_end(key)
        return b

    def try_take(self, key: str, cost: float = 1.0) -> bool:
        """Pay `cost` tokens from `key`'s bucket if it can; True when paid (the request may go on).

        A request costing more than the burst can never pass: callers cap request sizes below it.
        """
        b = self._bucket(key)
        if b.tokens >= cost:
            b.tokens -= cost
            return True
        return False

    def charge(self, key: str, cost: float) -> None:
        """Take `cost` more tokens after the fact, down to at most one burst of debt: what a request
        turned out to cost (e.g. signatures that failed to verify) beyond what it paid up front."""
        b = self._bucket(key)
        b.tokens = max(-self.burst, b.tokens - cost)

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until `key` could pay `cost` (0 if it can now)."""
        b = self._bucket(key)
        return max(0.0, (cost - b.tokens) / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)

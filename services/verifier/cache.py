"""Verdicts by transaction: a resubmitted identical transaction costs nothing.

Keyed by (tx id, signature): the tx id covers every field but the signature, so the pair names
exactly one transaction (a copy with a forged signature is a different key and is checked).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedVerdict:
    reason: int  # zkpot.v1.Reason
    detail: str
    seconds: float


class VerdictCache:
    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[bytes, bytes], CachedVerdict] = OrderedDict()

    def get(self, key: tuple[bytes, bytes]) -> CachedVerdict | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple[bytes, bytes], verdict: CachedVerdict) -> None:
        self._items[key] = verdict
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

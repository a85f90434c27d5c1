"""The participant's view of the validators: ledger queries and transaction submission with
fail-over, and the chain follower (Ledger.StreamBlocks) that wakes the round driver on each block.

A validator is a (consensus, ledger) pair; the first configured is preferred. A transport failure
(the validator is down, restarting or unreachable) moves to the next one; when every one has
failed in turn the participant waits with backoff and says so, and never gives up: a network that
comes back finds its participants still there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from zkpot import grpcutil
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc, ledger_pb2, ledger_pb2_grpc, types_pb2

from . import metrics as m

log = logging.getLogger("zkpot.participant")
T = TypeVar("T")

# Transport-level failures: the validator (or the path to it) is down, not the request wrong.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                       grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class Endpoint:
    consensus: str
    ledger: str

    def __str__(self) -> str:
        return self.consensus


def parse_endpoint(text: str) -> Endpoint:
    """"CONSENSUS_HOST:PORT,LEDGER_HOST:PORT" (one validator's two services)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(":" in p for p in parts):
        raise ValueError(f"--validator {text!r}: expected CONSENSUS_HOST:PORT,LEDGER_HOST:PORT")
    return Endpoint(parts[0], parts[1])


class Validators:
    """The configured validators, the current one first; stubs are cached per endpoint."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        if not endpoints:
            raise ValueError("at least one --validator is needed")
        self.endpoints = endpoints
        self.index = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._failed_in_a_row = 0
        self._last_warning = 0.0

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self.index]

    def _channel(self, target: str) -> grpc.aio.Channel:
        if target not in self._channels:
            self._channels[target] = grpcutil.channel(target, options=grpcutil.FAST_RECONNECT_OPTIONS)
        return self._channels[target]

    def ledger(self) -> ledger_pb2_grpc.LedgerStub:
        return ledger_pb2_grpc.LedgerStub(self._channel(self.current.ledger))

    def consensus(self) -> consensus_pb2_grpc.ConsensusStub:
        return consensus_pb2_grpc.ConsensusStub(self._channel(self.current.consensus))

    def ok(self) -> None:
        self._failed_in_a_row = 0

    async def failover(self, why: str) -> None:
        """Move to the next validator; after a whole lap of failures, wait (backoff) before going on."""
        self._failed_in_a_row += 1
        old = self.current
        self.index = (self.index + 1) % len(self.endpoints)
        if len(self.endpoints) > 1:
            m.failovers.inc()
        laps = self._failed_in_a_row // len(self.endpoints)
        now = time.monotonic()
        if laps == 0:
            log.warning("event=failover from=%s to=%s why=%r", old, self.current, why)
        elif now - self._last_warning > 10:  # one line per 10 s while nothing answers, not one per try
            self._last_warning = now
            log.warning("event=no_validator tried=%d why=%r: no validator reachable; retrying",
                        len(self.endpoints), why)
        if laps:
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.25 * 2 ** min(laps, 5)))

    async def call_ledger(self, what: str, fn: Callable[[ledger_pb2_grpc.LedgerStub], Awaitable[T]]) -> T:
        """A ledger query that fails over on transport errors; other errors (NOT_FOUND...) propagate."""
        while True:
            try:
                out = await fn(self.ledger())
                self.ok()
                return out
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT:
                    raise
                await self.failover(f"{what}: {exc.code().name} {exc.details()}")

    async def head(self) -> ledger_pb2.HeadResponse:
        return await self.call_ledger("Head", lambda s: s.Head(ledger_pb2.HeadRequest(), timeout=10))

    async def get_round(self, r: int) -> ledger_pb2.RoundSummary | None:
        try:
            return await self.call_ledger("GetRound", lambda s: s.GetRound(ledger_pb2.GetRoundRequest(round=r),
                                                                          timeout=10))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def get_tx(self, tx_id: bytes) -> ledger_pb2.GetTxResponse | None:
        try:
            return await self.call_ledger("GetTx", lambda s: s.GetTx(ledger_pb2.GetTxRequest(tx_id=tx_id), timeout=10))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def get_model(self, cid: str) -> bytes:
        async def fetch(stub: ledger_pb2_grpc.LedgerStub) -> bytes:
            return b"".join([c.data async for c in stub.GetModel(ledger_pb2.GetModelRequest(cid=cid), timeout=60)])

        return await self.call_ledger("GetModel", fetch)

    async def submit(self, tx: types_pb2.Transaction, timeout_s: float = 300) -> consensus_pb2.TxAdmission:
        """One SubmitTx to the current validator (transport errors raise; the caller fails over)."""
        resp = await self.consensus().SubmitTx(consensus_pb2.SubmitTxRequest(txs=[tx]), timeout=timeout_s)
        return resp.results[0]

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()


class ChainFollower:
    """Follows the head through Ledger.StreamBlocks (headers only) of the current validator,
    reconnecting (with fail-over) when the stream breaks; `wait_beyond` wakes on each new block."""

    def __init__(self, validators: Validators) -> None:
        self.validators = validators
        self.height = -1
        self._moved = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                stub = self.validators.ledger()
                request = ledger_pb2.StreamBlocksRequest(from_height=self.height + 1, headers_only=True)
                async for sb in stub.StreamBlocks(request):
                    self.validators.ok()
                    height = sb.block.header.height
                    if height > self.height:
                        self.height = height
                        m.height.set(height)
                        moved, self._moved = self._moved, asyncio.Event()
                        moved.set()
                # the server ended the stream (it is stopping): reconnect
                await self.validators.failover("StreamBlocks ended")
            except grpc.aio.AioRpcError as exc:
                await self.validators.failover(f"StreamBlocks: {exc.code().name} {exc.details()}")

    async def wait_beyond(self, height: int, timeout_s: float = 30.0) -> None:
        """Return once the chain is past `height`, or after timeout_s (the caller re-checks then:
        a ledger that fell behind the others must not hold the participant forever)."""
        if self.height > height:
            return
        try:
            await asyncio.wait_for(self._moved.wait(), timeout_s)
        except TimeoutError:
            pass

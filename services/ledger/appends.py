"""The ledger service's write side: Append and AppendStream, and the writer task behind them.

Appends are prepared (checked, executed) one at a time under a lock and written, in order, by one
writer task, both in worker threads: signatures, the state machine and the synced RocksDB write
never block the event loop, and with several appends in flight (AppendStream) preparing the next
block overlaps syncing the previous one. A caller is answered once its block is durable.

Two stages: a block is checked and executed (on top of the blocks still waiting for their
write) under the prepare lock, then the writer task writes prepared blocks, in order (those
prepared meanwhile share one synced batch), and only then are their callers answered. So with
several Appends in flight (AppendStream, or concurrent calls) the next block's checks and
execution overlap the previous block's fsync; durability and order are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from services.ledger.block_checks import AppendRejected
from services.ledger.ledger import Ledger
from services.ledger.metrics import _Metrics
from services.ledger.pending import Prepared
from zkpot import refusal
from zkpot.v1 import ledger_pb2

log = logging.getLogger("zkpot.ledger")

PIPELINE = 8  # AppendStream: prepared blocks in flight per stream
GROUP_COMMIT_MAX = 64  # blocks per synced batch at most (bounds one batch's memory)


class AppendPipeline:
    """The append RPCs of LedgerServicer (services.ledger.server), which sets these attributes in its
    __init__ (declared here for readers and type checkers; a mixin, so close() and StreamBlocks
    there share the same locks, queue and wake-up event)."""

    ledger: Ledger
    m: _Metrics
    _prepare_lock: asyncio.Lock  # blocks are checked and executed one at a time, in order
    _write_queue: asyncio.Queue[tuple[Prepared, asyncio.Future]]  # prepared, waiting for the writer
    _durable: dict[int, asyncio.Future]  # height -> future of a prepared, unwritten block
    _writer: asyncio.Task | None
    _appended: asyncio.Event  # replaced after every append; followers wait on it
    _publish_gauges: Callable[[], None]

    async def _submit(self, request: ledger_pb2.AppendRequest) -> asyncio.Future:
        """Prepare `request`; a future of its response once durable (or of its refusal)."""
        loop = asyncio.get_running_loop()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())
        async with self._prepare_lock:
            try:
                prepared = await asyncio.to_thread(self.ledger.prepare, request)
            except Exception as exc:
                done = loop.create_future()
                done.set_exception(exc)
                return done
            if isinstance(prepared, ledger_pb2.AppendResponse):  # already there, or on its way
                pending = self._durable.get(prepared.height)
                done = loop.create_future()
                if pending is None:
                    done.set_result(prepared)
                else:
                    pending.add_done_callback(lambda f, r=prepared: _settle(done, f, r))
                return done
            fut = loop.create_future()
            self._durable[prepared.commit.height] = fut
            self._write_queue.put_nowait((prepared, fut))
            return fut

    async def _write_loop(self) -> None:
        while True:
            group = [await self._write_queue.get()]
            while not self._write_queue.empty() and len(group) < GROUP_COMMIT_MAX:
                group.append(self._write_queue.get_nowait())  # prepared meanwhile: same fsync
            first = group[0][0].commit.height
            try:
                await asyncio.to_thread(self.ledger.commit_group, [prepared for prepared, _ in group])
            except Exception as exc:  # an I/O error (or a dropped block): it and all after it fail
                log.exception("synced write of blocks from %d failed; dropping the blocks prepared after it", first)
                for _, fut in group:
                    _fail(fut, exc)
                while not self._write_queue.empty():
                    _, later = self._write_queue.get_nowait()
                    _fail(later, RuntimeError(f"block {first} before it could not be written"))
                self._durable.clear()
                continue
            self.m.group_commit_blocks.observe(len(group))
            for prepared, fut in group:
                self._durable.pop(prepared.commit.height, None)
                resp = prepared.response
                self.m.appends.labels(result="appended").inc()
                accepted = sum(1 for r in resp.results if r.accepted)
                self.m.txs.labels(result="accepted").inc(accepted)
                self.m.txs.labels(result="rejected").inc(len(resp.results) - accepted)
                for r in resp.results:
                    if not r.accepted:
                        self.m.refused_txs.labels(reason=refusal.label(r.reason)).inc()
                if not fut.done():
                    fut.set_result(resp)
            self._publish_gauges()
            event, self._appended = self._appended, asyncio.Event()
            event.set()

    async def _respond(self, fut: asyncio.Future, context: grpc.aio.ServicerContext) -> ledger_pb2.AppendResponse:
        try:
            resp = await asyncio.shield(fut)  # a caller that goes away does not stop the write
        except AppendRejected as exc:
            self.m.rejections.labels(reason=exc.reason).inc()
            log.warning("append refused (%s): %s", exc.reason, exc.message)
            await context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises
        except Exception as exc:  # a bug or an I/O error: this block was not committed
            log.error("append failed: %r", exc)
            self.m.rejections.labels(reason="internal").inc()
            await context.abort(grpc.StatusCode.INTERNAL, f"append failed: {exc}")
            raise
        if resp.already_present:
            self.m.appends.labels(result="already_present").inc()
        return resp

    async def Append(
        self, request: ledger_pb2.AppendRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.AppendResponse:
        start = time.perf_counter()
        resp = await self._respond(await self._submit(request), context)
        if not resp.already_present:
            self.m.append_seconds.observe(time.perf_counter() - start)
        return resp

    async def AppendStream(
        self, request_iterator: AsyncIterator[ledger_pb2.AppendRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ledger_pb2.AppendResponse]:
        """Appends in stream order, up to PIPELINE of them in flight; one response each, in order,
        once its block is durable. The stream ends at the first refusal (blocks after it fail too)."""
        inflight: asyncio.Queue[asyncio.Future | None] = asyncio.Queue(maxsize=PIPELINE)

        async def feed() -> None:
            try:
                async for request in request_iterator:
                    await inflight.put(await self._submit(request))
            except Exception:  # a broken or refused request stream: wake the loop below, which re-raises
                await inflight.put(None)
                raise
            await inflight.put(None)

        feeder = asyncio.create_task(feed())
        try:
            while (fut := await inflight.get()) is not None:
                yield await self._respond(fut, context)
            await feeder  # surfaces a broken request stream
        finally:
            feeder.cancel()


def _settle(target: asyncio.Future, source: asyncio.Future, resp: ledger_pb2.AppendResponse) -> None:
    """Resolve an already-present response once the identical block in flight is durable."""
    if target.done():
        return
    if source.cancelled() or source.exception() is not None:
        target.set_exception(RuntimeError("the identical block in flight could not be written"))
    else:
        target.set_result(resp)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)

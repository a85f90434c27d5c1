"""LedgerService (grpc.aio): appends committed blocks and answers chain and state queries.

Appends are prepared (checked, executed) one at a time under a lock and written, in order, by one
writer task, both in worker threads: signatures, the state machine and the synced RocksDB write
never block the event loop, and with several appends in flight (AppendStream) preparing the next
block overlaps syncing the previous one. A caller is answered once its block is durable. Reads
run against RocksDB directly (thread-safe). StreamBlocks followers wake on every durable append.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path

import grpc

from services.ledger import backup
from services.ledger.ledger import HASH_LEN, AppendRejected, Ledger, Prepared, check_cid
from services.ledger.store import Store
from zkpot import grpcutil, metrics, refusal
from zkpot.grpcutil import Registrar
from zkpot.v1 import ledger_pb2, ledger_pb2_grpc, types_pb2

log = logging.getLogger("zkpot.ledger")
_cleanups: set[asyncio.Task] = set()  # backup scratch removals in flight (kept referenced until done)

DEFAULT_CHUNK = 1024 * 1024
MAX_CHUNK = 4 * 1024 * 1024
DEFAULT_BLOCKS = 64
MAX_BLOCKS = 256
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # under grpcutil's 64 MiB message limit
STREAM_BATCH = 32
PIPELINE = 8  # AppendStream: prepared blocks in flight per stream
GROUP_COMMIT_MAX = 64  # blocks per synced batch at most (bounds one batch's memory)
# Every request but Append is a handful of small fields: cap it far below the server-wide 64 MiB.
REQUEST_LIMITS = {
    f"/{ledger_pb2.DESCRIPTOR.package}.Ledger/{m.name}": 64 * 1024
    for m in ledger_pb2.DESCRIPTOR.services_by_name["Ledger"].methods
    if m.name not in ("Append", "AppendStream")  # blocks: bounded by the server-wide message limit
}


class _Metrics:
    def __init__(self) -> None:
        self.height = metrics.gauge("zkpot_ledger_height", "height of the newest committed block")
        self.current_round = metrics.gauge("zkpot_ledger_current_round", "open FL round (rounds+1: finished)")
        self.round_phase = metrics.gauge("zkpot_ledger_round_phase", "phase of the open round (zkpot.v1.RoundPhase): "
                                         "1 proofs, 2 masking, 3 unmasking (secure aggregation), 4 closed")
        self.append_seconds = metrics.histogram("zkpot_ledger_append_seconds", "check + execute + synced write")
        self.group_commit_blocks = metrics.histogram("zkpot_ledger_group_commit_blocks",
                                                     "blocks written by one synced batch",
                                                     buckets=(1, 2, 4, 8, 16, 32, 64))
        self.appends = metrics.counter("zkpot_ledger_appends_total", "Append calls that succeeded", ["result"],
                                       known=("appended", "already_present"))
        self.rejections = metrics.counter("zkpot_ledger_rejections_total", "refused appends", ["reason"],
                                          known=("conflict", "signature", "qc", "parent_qc"))
        self.txs = metrics.counter("zkpot_ledger_txs_total", "executed transactions", ["result"],
                                   known=("accepted", "rejected"))
        self.refused_txs = metrics.counter("zkpot_ledger_refused_txs_total",
                                           "committed transactions the state rules refused, by zkpot.v1.Reason",
                                           ["reason"])


@cache
def _metrics() -> _Metrics:
    return _Metrics()  # prometheus metrics are process-global: create them once


class LedgerServicer(ledger_pb2_grpc.LedgerServicer):
    def __init__(self, ledger: Ledger, admins: frozenset[str] = frozenset()) -> None:
        self.ledger = ledger
        self.admins = admins  # TLS identities allowed to call admin RPCs (Backup)
        self.m = _metrics()
        self._prepare_lock = asyncio.Lock()  # blocks are checked and executed one at a time, in order
        # prepared blocks wait here for the writer, oldest first; each with the future its callers await
        self._write_queue: asyncio.Queue[tuple[Prepared, asyncio.Future]] = asyncio.Queue()
        self._durable: dict[int, asyncio.Future] = {}  # height -> future of a prepared, unwritten block
        self._writer: asyncio.Task | None = None
        self._appended = asyncio.Event()  # replaced after every append; followers wait on it
        self._backup_running = False
        self._checkpoint_lock = asyncio.Lock()  # held while RocksDB is being checkpointed
        backup.remove_stale_scratch(self.ledger.store.path)
        self._publish_gauges()

    async def close(self) -> None:
        """Close the store once no append or checkpoint is in flight (on shutdown)."""
        async with self._prepare_lock, self._checkpoint_lock:
            await asyncio.gather(*(asyncio.shield(f) for f in list(self._durable.values())), return_exceptions=True)
            if self._writer is not None:
                self._writer.cancel()
            self.ledger.close()

    def _publish_gauges(self) -> None:
        self.m.height.set(self.ledger.head.height)
        self.m.current_round.set(self.ledger.head.current_round)
        summary = self.ledger.round_summary(self.ledger.head.current_round)
        self.m.round_phase.set(summary.phase if summary is not None else ledger_pb2.ROUND_PHASE_CLOSED)

    # -- writes --------------------------------------------------------------------------------
    #
    # Two stages: a block is checked and executed (on top of the blocks still waiting for their
    # write) under the prepare lock, then the writer task writes prepared blocks one by one, in
    # order, each as its own synced batch, and only then are their callers answered. So with
    # several Appends in flight (AppendStream, or concurrent calls) the next block's checks and
    # execution overlap the previous block's fsync; durability and order are unchanged.

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


    # -- chain reads ---------------------------------------------------------------------------

    async def Head(
        self, request: ledger_pb2.HeadRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.HeadResponse:
        head = self.ledger.head
        return ledger_pb2.HeadResponse(
            height=head.height,
            block_hash=head.block_hash,
            view=head.view,
            state_root=head.state_root,
            chain_id=self.ledger.genesis.chain_id,
            current_round=head.current_round,
        )

    async def GetBlock(
        self, request: ledger_pb2.GetBlockRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.StoredBlock:
        which = request.WhichOneof("key")
        if which == "block_hash":
            if len(request.block_hash) != HASH_LEN:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"block_hash must be {HASH_LEN} bytes")
            height = self.ledger.store.height_of(request.block_hash)
            if height is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no block {request.block_hash.hex()}")
        elif which == "height":
            height = request.height
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give a height or a block_hash")
        sb = self.ledger.stored_block(height)
        if sb is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no block at height {height} (head is {self.ledger.head.height})"
            )
        return sb

    async def GetBlocks(
        self, request: ledger_pb2.GetBlocksRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.GetBlocksResponse:
        limit = min(request.limit or DEFAULT_BLOCKS, MAX_BLOCKS)
        return await asyncio.to_thread(self._read_blocks, request.from_height, limit)

    def _read_blocks(self, from_height: int, limit: int) -> ledger_pb2.GetBlocksResponse:
        resp = ledger_pb2.GetBlocksResponse()
        size = 0
        for _, raw in self.ledger.store.blocks_from(from_height):
            if len(resp.blocks) >= limit or (resp.blocks and size + len(raw) > MAX_RESPONSE_BYTES):
                break
            resp.blocks.append(ledger_pb2.StoredBlock.FromString(raw))
            size += len(raw)
        return resp

    async def GetTx(
        self, request: ledger_pb2.GetTxRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.GetTxResponse:
        if len(request.tx_id) != HASH_LEN:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"tx_id must be {HASH_LEN} bytes")
        loc = self.ledger.store.tx_location(request.tx_id)
        if loc is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no transaction {request.tx_id.hex()}")
        height, pos = loc
        sb = self.ledger.stored_block(height)
        assert sb is not None
        return ledger_pb2.GetTxResponse(tx=sb.block.txs[pos], height=height, result=sb.results[pos])

    # -- state reads ---------------------------------------------------------------------------

    async def GetTask(
        self, request: ledger_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.GetTaskResponse:
        task = self.ledger.task()
        assert task is not None  # written at genesis
        if request.task_id and request.task_id != task.task_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no task {request.task_id.hex()} on this chain")
        return task

    async def GetRound(
        self, request: ledger_pb2.GetRoundRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.RoundSummary:
        round_ = self.ledger.resolve_round(request.round)
        summary = self.ledger.round_summary(round_)
        if summary is None:
            await self._round_not_opened(round_, context)
        return summary

    async def GetScores(
        self, request: ledger_pb2.GetScoresRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.GetScoresResponse:
        round_ = self.ledger.resolve_round(request.round)
        scores = self.ledger.scores(round_)
        if scores is None:
            await self._round_not_opened(round_, context)
        return scores

    async def _round_not_opened(self, round_: int, context: grpc.aio.ServicerContext) -> None:
        current = self.ledger.current_round()
        await context.abort(grpc.StatusCode.NOT_FOUND, f"round {round_} has not opened (current round {current})")

    async def GetModel(
        self, request: ledger_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ledger_pb2.ModelChunk]:
        try:
            check_cid(request.cid)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.chunk_size > MAX_CHUNK:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size exceeds {MAX_CHUNK}")
        chunk = request.chunk_size or DEFAULT_CHUNK
        data = self.ledger.store.blob(request.cid)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.cid}")
        total = len(data)
        if total == 0:
            yield ledger_pb2.ModelChunk(data=b"", total_size=0)
        for off in range(0, total, chunk):
            yield ledger_pb2.ModelChunk(data=data[off : off + chunk], total_size=total)

    async def LeaderSchedule(
        self, request: ledger_pb2.LeaderScheduleRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.LeaderScheduleResponse:
        sched = self.ledger.schedule()
        assert sched is not None  # written at genesis
        return sched

    async def StreamBlocks(
        self, request: ledger_pb2.StreamBlocksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ledger_pb2.StoredBlock]:
        """Blocks from from_height up to the head, then each new block, until the client cancels."""
        next_height = request.from_height
        while True:
            appended = self._appended  # taken before reading the head: no lost wake-up
            head = self.ledger.head.height
            if next_height > head:
                await appended.wait()
                continue
            upto = min(head, next_height + STREAM_BATCH - 1)
            blocks = await asyncio.to_thread(self._read_range, next_height, upto)
            for sb in blocks:
                if request.headers_only:
                    sb = ledger_pb2.StoredBlock(block=types_pb2.Block(header=sb.block.header), block_hash=sb.block_hash,
                                                state_root=sb.state_root)
                yield sb
            next_height = upto + 1

    # -- admin ---------------------------------------------------------------------------------

    async def Backup(
        self, request: ledger_pb2.BackupRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ledger_pb2.BackupChunk]:
        """Checkpoint RocksDB (appends go on meanwhile) and stream the checkpoint's files."""
        refusal = grpcutil.admin_refusal(context, self.admins)
        if refusal is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"Backup is an admin RPC: {refusal}")
        if request.chunk_size > MAX_CHUNK:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size exceeds {MAX_CHUNK}")
        if self._backup_running:  # one at a time: each pins a full set of SST files on disk
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "a backup is already running")
        chunk = request.chunk_size or DEFAULT_CHUNK
        self._backup_running = True
        scratch = backup.scratch_dir(self.ledger.store.path, "backup")
        checkpointing: asyncio.Future | None = None

        async def remove_scratch() -> None:
            if checkpointing is not None and not checkpointing.done():
                # cut off mid-checkpoint: the thread still writes `scratch`; remove it once it is done
                await asyncio.wait([checkpointing])
            await asyncio.to_thread(shutil.rmtree, scratch, True)

        def on_rpc_done(_: object) -> None:
            # a cancelled stream may leave this generator suspended (its `finally` runs only when it is
            # garbage-collected): clean up when the RPC ends, whatever state the generator is in
            self._backup_running = False
            task = asyncio.get_running_loop().create_task(remove_scratch())
            _cleanups.add(task)
            task.add_done_callback(_cleanups.discard)

        context.add_done_callback(on_rpc_done)
        try:
            async with self._checkpoint_lock:
                checkpointing = asyncio.ensure_future(asyncio.to_thread(self.ledger.store.checkpoint, scratch))
                await asyncio.shield(checkpointing)
            head, files = await asyncio.to_thread(_describe_checkpoint, scratch)
            log.info("backup: checkpoint at height %d, %d files", head.height, len(files))
            yield ledger_pb2.BackupChunk(
                info=ledger_pb2.BackupInfo(
                    height=head.height,
                    block_hash=head.block_hash,
                    state_root=head.state_root,
                    total_bytes=sum(size for _, size in files),
                    files=len(files),
                )
            )
            for name, size in files:
                with open(scratch / name, "rb") as f:
                    offset = 0
                    while True:
                        data = await asyncio.to_thread(f.read, chunk)
                        yield ledger_pb2.BackupChunk(
                            file=ledger_pb2.BackupFileChunk(path=name, offset=offset, data=data, file_size=size)
                        )
                        offset += len(data)
                        if offset >= size or not data:
                            break
        finally:
            self._backup_running = False
            await remove_scratch()

    def _read_range(self, lo: int, hi: int) -> list[ledger_pb2.StoredBlock]:
        out = []
        for h in range(lo, hi + 1):
            sb = self.ledger.stored_block(h)
            assert sb is not None
            out.append(sb)
        return out


def _describe_checkpoint(path: Path) -> tuple[backup.ChainSummary, list[tuple[str, int]]]:
    """The checkpoint's head (as its own database sees it) and files; the client verifies fully."""
    files = list(backup.checkpoint_files(path))  # before opening: a read-only open writes nothing
    store = Store(path, read_only=True)
    try:
        return backup.head_summary(store), files
    finally:
        store.close()


def registrar(servicer: LedgerServicer) -> Registrar:
    def register(server: grpc.aio.Server) -> str:
        ledger_pb2_grpc.add_LedgerServicer_to_server(servicer, server)
        return ledger_pb2.DESCRIPTOR.services_by_name["Ledger"].full_name

    return register


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

"""LedgerService (grpc.aio): appends committed blocks and answers chain and state queries.

Appends (services.ledger.appends) are prepared one at a time and written, in order, by one writer
task, both in worker threads; a caller is answered once its block is durable. Reads run against
RocksDB directly (thread-safe). StreamBlocks followers wake on every durable append.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from services.ledger import backup
from services.ledger.appends import AppendPipeline
from services.ledger.block_checks import HASH_LEN, check_cid
from services.ledger.ledger import Ledger
from services.ledger.metrics import _metrics
from services.ledger.pending import Prepared
from services.ledger.store import Store
from zkpot import grpcutil
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
# Every request but Append is a handful of small fields: cap it far below the server-wide 64 MiB.
REQUEST_LIMITS = {
    f"/{ledger_pb2.DESCRIPTOR.package}.Ledger/{m.name}": 64 * 1024
    for m in ledger_pb2.DESCRIPTOR.services_by_name["Ledger"].methods
    if m.name not in ("Append", "AppendStream")  # blocks: bounded by the server-wide message limit
}


class LedgerServicer(AppendPipeline, ledger_pb2_grpc.LedgerServicer):
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

"""gRPC Verifier service: Verify(batch of SubmitProof txs) -> one verdict per tx, in order.

The task is loaded (every artefact checked against its content id) and must be the genesis task.
Uncached transactions are checked in worker processes (the event loop only routes and caches);
duplicates inside one batch are checked once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from zkpot import chain, grpcutil, metrics, refusal, workerpool
from zkpot.genesis import Genesis
from zkpot.v1 import verifier_pb2, verifier_pb2_grpc
from zkpot.zkp.task import load_task

from . import worker
from .cache import CachedVerdict, VerdictCache

log = logging.getLogger("zkpot.verifier")
MAX_BATCH = 1024
# Distinct checks queued for the worker pool at once (all callers together): a bounded queue, so
# a flood of distinct submissions is refused at once instead of growing memory and latency.
MAX_PENDING = 256


@dataclass(frozen=True)
class ServeArgs:
    task_dir: Path
    genesis: Path
    listen: str
    node: str
    metrics_port: int | None = None
    workers: int = 1
    workdir: Path | None = None


class _Metrics:
    def __init__(self) -> None:
        self.verify_seconds = metrics.histogram("zkpot_verifier_verify_seconds", "check time per uncached transaction")
        self.recommit_seconds = metrics.histogram("zkpot_verifier_recommit_seconds",
                                                  "recomputing the revealed model's commitment")
        self.snark_seconds = metrics.histogram("zkpot_verifier_snark_seconds", "SNARK verification")
        self.batch_seconds = metrics.histogram("zkpot_verifier_batch_seconds", "Verify RPC time")
        self.rejections = metrics.counter("zkpot_verifier_rejections_total", "rejected transactions", ["reason"],
                                           known=tuple(sorted(refusal.label(r) for r in refusal.R.values()
                                                              if r not in (refusal.UNSPECIFIED, refusal.ACCEPTED))))
        self.accepted = metrics.counter("zkpot_verifier_accepted_total", "accepted transactions")
        self.cache_hits = metrics.counter("zkpot_verifier_cache_hits_total", "verdicts served from the cache")


class VerifierServicer(verifier_pb2_grpc.VerifierServicer):
    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool
        self.cache = VerdictCache()
        self.m = _Metrics()
        self.inflight: dict[tuple[bytes, bytes], asyncio.Future[CachedVerdict]] = {}

    async def _check(self, key: tuple[bytes, bytes], tx_bytes: bytes) -> CachedVerdict:
        fut = self.inflight.get(key)
        if fut is not None:  # the same tx is being checked for another request: share the result
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self.inflight[key] = fut
        try:
            t0 = time.perf_counter()
            reason, detail, timings = await asyncio.get_running_loop().run_in_executor(
                self.pool, worker.check, tx_bytes)
            verdict = CachedVerdict(reason, detail, time.perf_counter() - t0)
            self.m.verify_seconds.observe(verdict.seconds)
            if "recommit_seconds" in timings:
                self.m.recommit_seconds.observe(timings["recommit_seconds"])
            if "snark_seconds" in timings:
                self.m.snark_seconds.observe(timings["snark_seconds"])
            if reason == refusal.ACCEPTED:
                self.m.accepted.inc()
            else:
                self.m.rejections.labels(reason=refusal.label(reason)).inc()
                log.info("rejected %s: %s", refusal.label(reason), detail)
            self.cache.put(key, verdict)
            fut.set_result(verdict)
            return verdict
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self.inflight[key]

    async def Verify(
        self, request: verifier_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> verifier_pb2.VerifyResponse:
        if len(request.txs) > MAX_BATCH:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_BATCH} transactions per call")
        t0 = time.perf_counter()
        ids = [chain.tx_id(tx) for tx in request.txs]
        keys = [(i, tx.signature) for i, tx in zip(ids, request.txs, strict=True)]
        cached = [self.cache.get(k) for k in keys]
        todo: dict[tuple[bytes, bytes], asyncio.Task[CachedVerdict]] = {}
        fresh = {k for k, hit in zip(keys, cached, strict=True) if hit is None and k not in self.inflight}
        if len(self.inflight) + len(fresh) > MAX_PENDING:
            self.m.rejections.labels(reason=refusal.label(refusal.BUSY)).inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"verifier busy: {len(self.inflight)} checks queued, {len(fresh)} more asked, "
                                f"limit {MAX_PENDING}; retry later or send smaller batches")
        for k, tx, hit in zip(keys, request.txs, cached, strict=True):
            if hit is None and k not in todo:
                todo[k] = asyncio.ensure_future(self._check(k, tx.SerializeToString()))
        if todo:
            try:
                await asyncio.gather(*todo.values())
            except Exception as exc:
                log.exception("verification failed")
                await context.abort(grpc.StatusCode.INTERNAL, f"verification failed: {exc}")
        results = []
        for tx_id_, k, hit in zip(ids, keys, cached, strict=True):
            verdict = hit if hit is not None else todo[k].result()
            if hit is not None:
                self.m.cache_hits.inc()
            results.append(verifier_pb2.VerifyResult(
                tx_id=tx_id_, valid=verdict.reason == refusal.ACCEPTED, reason=verdict.reason,
                detail=verdict.detail, cached=hit is not None, seconds=0.0 if hit is not None else verdict.seconds,
            ))
        self.m.batch_seconds.observe(time.perf_counter() - t0)
        return verifier_pb2.VerifyResponse(results=results)


async def serve(args: ServeArgs) -> None:
    genesis = Genesis.load(args.genesis)
    task = load_task(args.task_dir)
    if task.task_id != genesis.task_id:
        raise SystemExit(f"task {task.task_id.hex()[:16]} in {args.task_dir} is not the genesis task "
                         f"{genesis.task_id.hex()[:16]}")
    metrics.init("verifier", args.node, args.metrics_port)
    # every worker loads the task once before we report SERVING
    pool = await workerpool.start(args.workers, f"zkpot-verifier-{args.node}-", worker.init,
                                  lambda workdir: (str(args.task_dir), str(workdir)), worker.ping, args.workdir)
    servicer = VerifierServicer(pool.executor)
    log.info("task %s (%s, %d test samples, logrows %d)", task.task_id.hex()[:16], task.manifest.architecture,
             task.manifest.test_set_size, task.manifest.logrows)

    def register(server: grpc.aio.Server) -> str:
        verifier_pb2_grpc.add_VerifierServicer_to_server(servicer, server)
        return verifier_pb2.DESCRIPTOR.services_by_name["Verifier"].full_name

    async def on_stop() -> None:
        pool.close()

    await grpcutil.serve(args.listen, [register], on_stop=on_stop)

"""gRPC Prover service: ProveRound streams stages, then the proof and its figures.

The round's global model is decoded and checked here (INVALID_ARGUMENT / FAILED_PRECONDITION
before any work starts); training and compiling run in a worker process, then every shard of the
task's public test set gets its witness and its proof in parallel across --prove-workers worker
processes. One round at a time (later requests queue); the shards of a round use every worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from zkpot import grpcutil, metrics, model_codec, workerpool
from zkpot.crypto import PUBLIC_KEY_LEN
from zkpot.model_codec import ModelFormatError
from zkpot.v1 import prover_pb2, prover_pb2_grpc
from zkpot.zkp import data, model, prove
from zkpot.zkp.task import Task, load_task

from . import worker

log = logging.getLogger("zkpot.prover")
MAX_EPOCHS = 100


@dataclass(frozen=True)
class ServeArgs:
    task_dir: Path
    shard: Path
    listen: str
    node: str
    metrics_port: int | None = None
    workdir: Path | None = None
    prove_workers: int = 2
    allow_behaviours: bool = False  # experiments only: train Byzantine behaviours on request


class _Metrics:
    def __init__(self) -> None:
        self.proof_seconds = metrics.histogram("zkpot_prover_proof_seconds", "SNARK proving time per round")
        self.train_seconds = metrics.histogram("zkpot_prover_train_seconds", "local training time per round")
        self.witness_seconds = metrics.histogram("zkpot_prover_witness_seconds", "export+compile+witness time")
        self.round_seconds = metrics.histogram("zkpot_prover_round_seconds", "whole ProveRound time")
        self.proofs = metrics.counter("zkpot_prover_proofs_total", "ProveRound calls by outcome", ["outcome"],
                                      known=("ok", "error", "out_of_range", "invalid_argument"))
        self.busy = metrics.gauge("zkpot_prover_busy", "1 while a proof is being produced")
        self.shard_seconds = metrics.histogram("zkpot_prover_shard_proof_seconds", "SNARK proving time per shard")


class ProverServicer(prover_pb2_grpc.ProverServicer):
    def __init__(self, task: Task, pool: ProcessPoolExecutor, workers: int = 1, shard_samples: int = 0,
                 allow_behaviours: bool = False) -> None:
        self.task = task
        self.allow_behaviours = allow_behaviours
        self.shard_samples = shard_samples
        self.pool = pool
        self.workers = workers
        self.lock = asyncio.Lock()
        self.m = _Metrics()

    async def _run(self, fn, *args):  # noqa: ANN001 - thin executor wrapper
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _check(self, request: prover_pb2.ProveRoundRequest) -> tuple[grpc.StatusCode, str] | None:
        if request.task_id != self.task.task_id:
            return (grpc.StatusCode.INVALID_ARGUMENT,
                    f"task_id {request.task_id.hex()[:16] or '(empty)'} is not this prover's task "
                    f"{self.task.task_id.hex()[:16]}")
        if len(request.participant) != PUBLIC_KEY_LEN:
            return grpc.StatusCode.INVALID_ARGUMENT, f"participant must be a {PUBLIC_KEY_LEN}-byte ed25519 public key"
        if request.local_epochs > MAX_EPOCHS:
            return grpc.StatusCode.INVALID_ARGUMENT, f"local_epochs must be 0..{MAX_EPOCHS}"
        if request.behaviour and not self.allow_behaviours:
            # a test hook must not be a production feature: only a prover started for experiments
            # trains as a Byzantine participant (issue 17.4)
            return (grpc.StatusCode.PERMISSION_DENIED,
                    f"behaviour {request.behaviour[:40]!r} refused: this prover trains honestly only "
                    "(experiments start it with --allow-behaviours)")
        if request.behaviour and request.behaviour not in model.BEHAVIOURS:
            return (grpc.StatusCode.INVALID_ARGUMENT,
                    f"behaviour must be empty or one of {', '.join(model.BEHAVIOURS)}; got {request.behaviour[:40]!r}")
        try:
            net = model.decode(request.global_model, self.task.arch)
        except ModelFormatError as exc:
            return grpc.StatusCode.INVALID_ARGUMENT, f"global_model is not a model of this task: {exc}"
        try:
            prove.check_range(self.task, net)
        except prove.ProveRangeError as exc:
            return grpc.StatusCode.FAILED_PRECONDITION, f"global_model: {exc}"
        return None

    async def ProveRound(
        self, request: prover_pb2.ProveRoundRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[prover_pb2.ProveRoundProgress]:
        bad = self._check(request)
        if bad is not None:
            self.m.proofs.labels(outcome="invalid_argument").inc()
            await context.abort(*bad)
        job = uuid.uuid4().hex
        outcome = "error"
        t0 = time.perf_counter()
        async with self.lock:
            self.m.busy.set(1)
            try:
                yield prover_pb2.ProveRoundProgress(stage="training")
                trained = await self._run(worker.train, request.global_model, request.local_epochs, request.seed,
                                         request.behaviour)
                self.m.train_seconds.observe(trained.train_seconds)
                yield prover_pb2.ProveRoundProgress(stage="compiling")
                compile_s = await self._run(worker.compile_job, job, trained.model_params)
                yield prover_pb2.ProveRoundProgress(stage="witness")
                shards = range(self.task.n_shards)
                wits = await asyncio.gather(*(self._run(worker.witness, job, i, request.round, request.participant)
                                              for i in shards))
                self.m.witness_seconds.observe(compile_s + sum(w.witness_seconds for w in wits))
                yield prover_pb2.ProveRoundProgress(stage="proving")
                t_prove = time.perf_counter()
                proven = await asyncio.gather(*(self._run(worker.prove_shard, job, i) for i in shards))
                prove_s = time.perf_counter() - t_prove
                self.m.proof_seconds.observe(prove_s)
                for p in proven:
                    self.m.shard_seconds.observe(p.prove_seconds)
                r = prove.assemble(self.task, request.round, request.participant, trained, compile_s, list(wits),
                                   list(proven), prove_s)
                result = to_proto(r, self.workers)
                if self.task.manifest.secure_aggregation:  # the participant masks these; it loads no torch
                    result.committed_params = await self._run(worker.committed_params, trained.model_params)
                outcome = "ok"
                log.info("round %d proven: %d/%d correct (float %.3f) in %d shard(s), prove %.1fs", request.round,
                         r.claimed_correct, r.test_set_size, r.float_accuracy, len(r.shards), r.prove_seconds)
                yield prover_pb2.ProveRoundProgress(result=result)
            except prove.ProveRangeError as exc:
                outcome = "out_of_range"
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except prove.ProveInputError as exc:
                outcome = "invalid_argument"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                log.exception("ProveRound failed")
                await context.abort(grpc.StatusCode.INTERNAL, f"proving failed: {exc}")
            finally:
                self.m.busy.set(0)
                self.m.proofs.labels(outcome=outcome).inc()
                self.m.round_seconds.observe(time.perf_counter() - t0)
                try:
                    self.pool.submit(worker.cleanup, job)
                except RuntimeError:  # pool already shut down (service stopping)
                    pass


    async def Info(
        self, request: prover_pb2.ProverInfoRequest, context: grpc.aio.ServicerContext
    ) -> prover_pb2.ProverInfo:
        return prover_pb2.ProverInfo(task_id=self.task.task_id, shard_samples=self.shard_samples,
                                     test_set_shards=self.task.n_shards, prove_workers=self.workers)


def to_proto(r: prove.RoundProof, workers: int = 1) -> prover_pb2.ProveRoundResult:
    return prover_pb2.ProveRoundResult(
        shards=prove.shard_protos(r.shards) if len(r.shards) > 1 else [], prove_workers=workers,
        proof=r.proof, model_commitment=r.model_commitment, claimed_correct=r.claimed_correct,
        test_set_size=r.test_set_size, float_accuracy=r.float_accuracy, quantized_accuracy=r.quantized_accuracy,
        model_params=r.model_params, model_cid=r.model_cid, train_seconds=r.train_seconds,
        witness_seconds=r.witness_seconds, prove_seconds=r.prove_seconds, compile_seconds=r.compile_seconds,
    )


async def serve(args: ServeArgs) -> None:
    task = load_task(args.task_dir)
    shard = data.load(args.shard, task.arch)  # fail fast on a bad shard, before the workers start
    metrics.init("prover", args.node, args.metrics_port)
    workers = max(1, args.prove_workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    # each worker imports torch/ezkl, loads the task and reads the pk before we report SERVING
    pool = await workerpool.start(
        workers, f"zkpot-prover-{args.node}-", worker.init,
        lambda workdir: (str(args.task_dir), str(args.shard), str(workdir), threads), worker.ping, args.workdir)
    servicer = ProverServicer(task, pool.executor, workers, len(shard), args.allow_behaviours)
    if args.allow_behaviours:
        log.warning("EXPERIMENTS ONLY: this prover trains Byzantine behaviours when a request asks for one")
    log.info("task %s, shard %s (%d samples), %d test-set shard(s) of %d, %d prove worker(s)",
             task.task_id.hex()[:16], args.shard, len(shard), task.n_shards, task.shard_size, workers)

    def register(server: grpc.aio.Server) -> str:
        prover_pb2_grpc.add_ProverServicer_to_server(servicer, server)
        return prover_pb2.DESCRIPTOR.services_by_name["Prover"].full_name

    async def on_stop() -> None:
        pool.close()

    # a ProveRound request carries one global model plus a few small fields
    limits = {"/zkpot.v1.Prover/ProveRound": model_codec.MAX_MODEL_BYTES + 64 * 1024}
    await grpcutil.serve(args.listen, [register], on_stop=on_stop, request_limits=limits)

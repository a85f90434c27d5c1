"""Follow a ledger's rounds and export what the learning dashboard shows."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc

from zkpot import grpcutil, metrics
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2, ledger_pb2_grpc

log = logging.getLogger("zkpot.observer")

global_accuracy = metrics.gauge("zkpot_observer_global_accuracy",
                                "Float accuracy of the aggregated global model after a round (public test set)",
                                ["round"])
global_accuracy_holdout = metrics.gauge("zkpot_observer_global_accuracy_holdout",
                                        "Accuracy of the aggregated global model on the whole held-out split",
                                        ["round"])
accepted = metrics.gauge("zkpot_observer_round_accepted_participants",
                         "Submissions aggregated into the global model, per closed round", ["round"])
submitted = metrics.gauge("zkpot_observer_round_submissions", "Accepted SubmitProof transactions per round",
                          ["round"])
proven = metrics.gauge("zkpot_observer_proven_correct", "Proven correct count per participant and round",
                       ["round", "participant"])
leader_rank = metrics.gauge("zkpot_observer_leader_rank",
                            "Position in the current leader schedule (0 = first leader)", ["validator"])
leader_score = metrics.gauge("zkpot_observer_leader_score",
                             "Proven score that ranked a validator in the current schedule", ["validator"])
rounds_closed = metrics.gauge("zkpot_observer_rounds_closed", "FL rounds closed on the chain")


class Evaluator:
    """Float accuracy of a global model; torch and the task are loaded on first use."""

    def __init__(self, task_dir: Path) -> None:
        self.task_dir = task_dir
        self._task = None
        self._holdout = None

    def __call__(self, global_model: bytes) -> tuple[float, float]:
        from zkpot.zkp import data, model
        from zkpot.zkp.task import load_task

        if self._task is None:
            self._task = load_task(self.task_dir)
            self._holdout = data.held_out(int(self._task.params.get("seed", 7)))
        net = model.decode(global_model, self._task.arch)
        return model.float_accuracy(net, self._task.test_set), model.float_accuracy(net, self._holdout)


async def watch(ledger_target: str, genesis: Genesis, evaluate: Evaluator, poll_s: float = 1.0) -> None:
    seen: set[int] = set()
    async with grpcutil.channel(ledger_target) as ch:
        ledger = ledger_pb2_grpc.LedgerStub(ch)
        while True:
            try:
                await _poll(ledger, genesis, evaluate, seen)
            except grpc.aio.AioRpcError as exc:
                log.warning("ledger %s: %s", ledger_target, exc.details())
            await asyncio.sleep(poll_s)


async def _poll(ledger: ledger_pb2_grpc.LedgerStub, genesis: Genesis, evaluate: Evaluator, seen: set[int]) -> None:
    head = await ledger.Head(ledger_pb2.HeadRequest(), timeout=5)
    for r in range(1, head.current_round + 1):
        if r in seen:
            continue
        try:
            summary = await ledger.GetRound(ledger_pb2.GetRoundRequest(round=r), timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                break
            raise
        for s in summary.submissions:
            proven.labels(round=str(r), participant=genesis.name_of(s.participant)).set(s.claimed_correct)
        submitted.labels(round=str(r)).set(len(summary.submissions))
        if not summary.closed:
            break
        chunks = [c.data async for c in ledger.GetModel(
            ledger_pb2.GetModelRequest(cid=summary.next_global_model_cid), timeout=30)]
        acc, holdout = await asyncio.to_thread(evaluate, b"".join(chunks))
        global_accuracy.labels(round=str(r)).set(acc)
        global_accuracy_holdout.labels(round=str(r)).set(holdout)
        accepted.labels(round=str(r)).set(sum(1 for s in summary.submissions if s.aggregated))
        seen.add(r)
        rounds_closed.set(len(seen))
        log.info("round %d: global accuracy %.3f (held-out %.3f)", r, acc, holdout)
    schedule = await ledger.LeaderSchedule(ledger_pb2.LeaderScheduleRequest(), timeout=5)
    for rank, (key, score) in enumerate(zip(schedule.leaders, schedule.scores, strict=False)):
        leader_rank.labels(validator=genesis.name_of(key)).set(rank)
        leader_score.labels(validator=genesis.name_of(key)).set(score)

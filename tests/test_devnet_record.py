"""The devnet's per-round figures: a round is marked recorded only with its figures (CI once
printed a closed round with 0.0% global accuracy because the recorder was cancelled mid-fetch)."""
import asyncio
from types import SimpleNamespace

from zkpot.devnet import adapters, run
from zkpot.devnet.stats import RoundStats
from zkpot.v1 import ledger_pb2


class GatedLedger:
    """A ledger stub whose GetModel waits on a gate: the window in which the watcher was cancelled."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.model_requests = 0

    async def GetRound(self, req, timeout=None):
        return ledger_pb2.RoundSummary(round=req.round, closed=True, close_height=7, next_global_model_cid="cid")

    def GetModel(self, req, timeout=None):
        async def chunks():
            self.model_requests += 1
            await self.gate.wait()
            yield ledger_pb2.ModelChunk(data=b"model")
        return chunks()

    async def LeaderSchedule(self, req, timeout=None):
        return ledger_pb2.LeaderScheduleResponse(leaders=[b"v0"], scores=[5])

    async def GetBlocks(self, req, timeout=None):
        return ledger_pb2.GetBlocksResponse()


def _net() -> SimpleNamespace:
    return SimpleNamespace(
        rounds={1: RoundStats(round=1)},
        plan=SimpleNamespace(task_dir="unused"),
        genesis=SimpleNamespace(name_of=lambda k: k.decode(), validators=[b"v0"],
                                manifest=SimpleNamespace(min_correct=4)),
        progress=SimpleNamespace(global_accuracy=None, say=lambda msg: None),
    )


def test_cancelled_recording_leaves_the_round_unrecorded_then_records_it(monkeypatch) -> None:
    monkeypatch.setattr(adapters, "global_accuracy", lambda task_dir, model: (0.75, 0.7))
    net, ledger = _net(), GatedLedger()

    async def scenario() -> None:
        task = asyncio.create_task(run._record_closed_rounds(net, ledger))
        while ledger.model_requests == 0:
            await asyncio.sleep(0.01)
        # the round is closed on the ledger but its model is still in flight: a reader must not see it done
        assert not net.rounds[1].closed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not net.rounds[1].closed and net.rounds[1].summary is None
        ledger.gate.set()
        await run._record_closed_rounds(net, ledger)

    asyncio.run(scenario())
    stats = net.rounds[1]
    assert stats.closed and stats.summary.close_height == 7
    assert (stats.global_accuracy, stats.holdout_accuracy) == (0.75, 0.7)
    assert stats.next_leaders == ["v0"] and stats.next_scores == [5]

"""The participant's round driver against an in-test chain and prover (fakes of the two gRPC
peers; the real processes are attacked in test_participant_service.py and the devnet e2e test).

What must hold whatever the network does: one signed SubmitProof per round, sent as the same bytes
on every retry and after a restart; a refusal ends the round with its reason; a validator that is
down or cannot verify is failed over; a round that ends while proving is given up, not submitted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from chain_factory import make_genesis

from services.participant import rounds as rounds_mod
from services.participant.rounds import Options, RoundDriver
from services.participant.state import ParticipantState, StateDirError
from services.participant.validators import Endpoint
from zkpot import chain, model_codec, refusal
from zkpot.refusal import Refusal
from zkpot.v1 import consensus_pb2, ledger_pb2, prover_pb2, types_pb2

MODEL = b"global-model-bytes"
CID = model_codec.model_cid(MODEL)
OPEN = ledger_pb2.ROUND_PHASE_PROOFS  # every round opens in its proof phase, as the ledger records it


def _unavailable(details: str = "down") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeChain:
    """Rounds, committed transactions and admission, as the validators would show them."""

    def __init__(self, genesis, n_validators: int = 2) -> None:
        self.genesis = genesis
        self.endpoints = [Endpoint(f"v{i}:1", f"v{i}:2") for i in range(n_validators)]
        self.index = 0
        self.height = 1
        self.rounds = {1: ledger_pb2.RoundSummary(round=1, global_model_cid=CID, test_set_size=8, phase=OPEN)}
        self.committed: dict[bytes, tuple[types_pb2.Transaction, int]] = {}
        self.mempool: dict[bytes, types_pb2.Transaction] = {}
        self.down: set[int] = set()          # validator indexes whose consensus is unreachable
        self.refuse: dict[int, Refusal] = {}  # validator index -> admission refusal
        self.submissions: list[tuple[int, bytes]] = []  # (validator, tx id) of every SubmitTx
        self.moved = asyncio.Event()
        self.commit_on_submit = True
        self.failovers = 0

    # -- the driver's Validators interface
    @property
    def current(self) -> Endpoint:
        return self.endpoints[self.index]

    def ok(self) -> None:
        pass

    async def failover(self, why: str) -> None:
        self.failovers += 1
        self.index = (self.index + 1) % len(self.endpoints)

    async def head(self) -> ledger_pb2.HeadResponse:
        open_ = [r for r, s in self.rounds.items() if not s.closed]
        current = min(open_) if open_ else max(self.rounds) + 1
        return ledger_pb2.HeadResponse(height=self.height, chain_id=self.genesis.chain_id, current_round=current)

    async def get_round(self, r: int) -> ledger_pb2.RoundSummary | None:
        s = self.rounds.get(r)
        return None if s is None else ledger_pb2.RoundSummary.FromString(s.SerializeToString())

    async def get_tx(self, tx_id: bytes) -> ledger_pb2.GetTxResponse | None:
        if tx_id not in self.committed:
            return None
        tx, height = self.committed[tx_id]
        return ledger_pb2.GetTxResponse(tx=tx, height=height,
                                        result=types_pb2.TxResult(accepted=True, reason=refusal.ACCEPTED))

    async def get_model(self, cid: str) -> bytes:
        assert cid == CID
        return MODEL

    async def submit(self, tx: types_pb2.Transaction, timeout_s: float = 300) -> consensus_pb2.TxAdmission:
        tx_id = chain.tx_id(tx)
        self.submissions.append((self.index, tx_id))
        if self.index in self.down:
            raise _unavailable()
        if self.index in self.refuse:
            no = self.refuse[self.index]
            return consensus_pb2.TxAdmission(tx_id=tx_id, admitted=False, reason=no.reason, detail=no.detail)
        if tx_id in self.committed or tx_id in self.mempool:
            return consensus_pb2.TxAdmission(tx_id=tx_id, admitted=False, reason=refusal.DUPLICATE,
                                             detail="already in the mempool")
        self.mempool[tx_id] = tx
        if self.commit_on_submit:
            self.commit_mempool()
        return consensus_pb2.TxAdmission(tx_id=tx_id, admitted=True, reason=refusal.ACCEPTED)

    async def close(self) -> None:
        pass

    # -- the test's hands on the chain
    def block(self) -> None:
        self.height += 1
        moved, self.moved = self.moved, asyncio.Event()
        moved.set()

    def commit_mempool(self) -> None:
        for tx_id, tx in self.mempool.items():
            self.committed[tx_id] = (tx, self.height + 1)
            sp = tx.submit_proof
            self.rounds[sp.round].submissions.add(participant=sp.participant, tx_id=tx_id,
                                                  claimed_correct=sp.claimed_correct, aggregated=True)
        self.mempool.clear()
        self.block()

    def close_round(self, r: int) -> None:
        self.rounds[r].closed, self.rounds[r].phase = True, ledger_pb2.ROUND_PHASE_CLOSED
        self.rounds[r].phase = ledger_pb2.ROUND_PHASE_CLOSED
        if r + 1 <= self.genesis.manifest.rounds:
            self.rounds[r + 1] = ledger_pb2.RoundSummary(round=r + 1, global_model_cid=CID, test_set_size=8, phase=OPEN)
        self.block()


class FakeFollower:
    def __init__(self, fake: FakeChain) -> None:
        self.fake = fake

    @property
    def height(self) -> int:
        return self.fake.height

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def wait_beyond(self, height: int, timeout_s: float = 30.0) -> None:
        if self.fake.height > height:
            return
        try:
            await asyncio.wait_for(self.fake.moved.wait(), timeout_s)
        except TimeoutError:
            pass


class FakeProver:
    """ProveRound: a fixed result after `delay_s`; `fail` raises that many UNAVAILABLEs first."""

    def __init__(self, delay_s: float = 0.0, fail: int = 0) -> None:
        self.delay_s, self.fail, self.calls = delay_s, fail, 0

    def ProveRound(self, request: prover_pb2.ProveRoundRequest, timeout: float = 0):
        async def stream():
            self.calls += 1
            yield prover_pb2.ProveRoundProgress(stage="training")
            await asyncio.sleep(self.delay_s)
            if self.fail:
                self.fail -= 1
                raise _unavailable("prover died mid-proof")
            yield prover_pb2.ProveRoundProgress(result=prover_pb2.ProveRoundResult(
                proof=b"proof-" + request.round.to_bytes(2, "big") + bytes([self.calls]),
                model_commitment=b"c" * 64, claimed_correct=6, test_set_size=8, model_params=b"params"))
        return stream()


def driver(tmp_path: Path, fake: FakeChain, prover: FakeProver, behaviour: str = "honest") -> RoundDriver:
    fx = fake.genesis
    key = fake.key
    state = ParticipantState(tmp_path / "state", key.public, fx.task_id)
    d = RoundDriver(key, fx, state, fake, prover, "prover:1", Options(behaviour=behaviour))  # type: ignore[arg-type]
    d.follower = FakeFollower(fake)  # type: ignore[assignment]
    return d


@pytest.fixture
def fake() -> FakeChain:
    fx = make_genesis(n_validators=4, n_participants=2, rounds=2)
    f = FakeChain(fx.genesis)
    f.key = fx.participant_keys[0]  # type: ignore[attr-defined]
    return f


async def _until(cond, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def _mine(fake: FakeChain) -> list[types_pb2.Transaction]:
    return [tx for tx, _ in fake.committed.values() if tx.submit_proof.participant == fake.key.public]


def test_each_round_one_submission_then_finished(tmp_path: Path, fake: FakeChain) -> None:
    async def scenario() -> None:
        d = driver(tmp_path, fake, FakeProver())
        task = asyncio.create_task(d.run())
        await _until(lambda: len(_mine(fake)) == 1)
        fake.close_round(1)
        await _until(lambda: len(_mine(fake)) == 2)
        fake.close_round(2)
        await _until(lambda: d.finished)
        task.cancel()

    asyncio.run(scenario())
    state = ParticipantState(tmp_path / "state", fake.key.public, fake.genesis.task_id)
    assert [state.get(r).stage for r in (1, 2)] == ["done", "done"]
    assert {tx.submit_proof.round for tx in _mine(fake)} == {1, 2}
    assert all(state.get(r).aggregated for r in (1, 2))


def test_restart_resends_the_recorded_bytes_and_never_proves_again(tmp_path: Path, fake: FakeChain) -> None:
    """Killed after signing (the record is on disk, the mempool lost it): the restarted driver sends
    the same transaction id, and its prover is not asked again."""
    fake.commit_on_submit = False

    async def first_life() -> bytes:
        d = driver(tmp_path, fake, FakeProver())
        task = asyncio.create_task(d.run())
        await _until(lambda: len(fake.mempool) == 1)
        task.cancel()  # the process dies; its transaction was admitted but never committed
        await asyncio.gather(task, return_exceptions=True)
        (tx_id,) = fake.mempool
        fake.mempool.clear()  # and the validator holding it crashed too
        return tx_id

    async def second_life() -> FakeProver:
        prover = FakeProver()
        d = driver(tmp_path, fake, prover)
        fake.commit_on_submit = True
        task = asyncio.create_task(d.run())
        await _until(lambda: len(_mine(fake)) == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return prover

    first = asyncio.run(first_life())
    prover = asyncio.run(second_life())
    assert prover.calls == 0, "a restarted participant proved (and would sign) a second model for the round"
    assert [chain.tx_id(tx) for tx in _mine(fake)] == [first]


def test_refusal_ends_the_round_with_its_reason(tmp_path: Path, fake: FakeChain) -> None:
    fake.refuse = {0: Refusal(refusal.INVALID_PROOF, "no"), 1: Refusal(refusal.INVALID_PROOF, "no")}

    async def scenario() -> RoundDriver:
        d = driver(tmp_path, fake, FakeProver())
        task = asyncio.create_task(d.run())
        await _until(lambda: d.state.get(1) is not None and d.state.get(1).stage == "refused")
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return d

    d = asyncio.run(scenario())
    rec = d.state.get(1)
    assert rec.refusal == refusal.INVALID_PROOF and rec.reason == "invalid_proof: no" and not rec.admitted
    assert len(fake.submissions) == 1, "a final refusal was retried"


def test_down_or_unverifying_validators_are_failed_over(tmp_path: Path, fake: FakeChain) -> None:
    fake.endpoints.append(Endpoint("v2:1", "v2:2"))
    fake.down = {0}
    fake.refuse = {1: Refusal(refusal.VERIFIER_UNAVAILABLE, "Verify: UNAVAILABLE")}

    async def scenario() -> RoundDriver:
        d = driver(tmp_path, fake, FakeProver())
        task = asyncio.create_task(d.run())
        await _until(lambda: len(_mine(fake)) == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return d

    d = asyncio.run(scenario())
    assert [v for v, _ in fake.submissions] == [0, 1, 2]
    assert len({t for _, t in fake.submissions}) == 1, "fail-over sent different bytes"
    assert d.state.get(1).validator == "v2:1" and d.state.get(1).attempts == 3


def test_a_round_that_closes_while_proving_is_given_up(tmp_path: Path, fake: FakeChain) -> None:
    async def scenario() -> RoundDriver:
        d = driver(tmp_path, fake, FakeProver(delay_s=30))
        task = asyncio.create_task(d.run())
        await _until(lambda: d.phase == "proving")
        fake.close_round(1)
        await _until(lambda: d.state.get(1).stage == "late")
        await _until(lambda: d.round == 2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return d

    d = asyncio.run(scenario())
    assert d.state.get(1).reason.startswith("late") and not d.state.get(1).tx_id
    assert not fake.submissions, "a late proof was submitted"


def test_a_prover_that_dies_mid_proof_is_retried(tmp_path: Path, fake: FakeChain, monkeypatch) -> None:
    monkeypatch.setattr(rounds_mod, "PROVER_BACKOFF_S", (0.01, 0.01, 0.01))
    prover = FakeProver(fail=2)

    async def scenario() -> None:
        d = driver(tmp_path, fake, prover)
        task = asyncio.create_task(d.run())
        await _until(lambda: len(_mine(fake)) == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert prover.calls == 3


def test_state_dir_of_another_identity_or_damaged_is_refused(tmp_path: Path, fake: FakeChain) -> None:
    ParticipantState(tmp_path / "s", fake.key.public, fake.genesis.task_id)
    with pytest.raises(StateDirError, match="participant"):
        ParticipantState(tmp_path / "s", b"\x01" * 32, fake.genesis.task_id)
    with pytest.raises(StateDirError, match="task"):
        ParticipantState(tmp_path / "s", fake.key.public, b"\x02" * 32)
    (tmp_path / "s" / "rounds" / "1.json").write_text('{"round": 1, "txs": {"submit": "!!"}}')
    with pytest.raises(StateDirError, match="1.json"):
        ParticipantState(tmp_path / "s", fake.key.public, fake.genesis.task_id)


def test_experiment_behaviours_copy_and_silent(tmp_path: Path, fake: FakeChain) -> None:
    """copy: another participant's committed proof, re-signed as its own (the chain must refuse it;
    here the fake validator does, as the real verifier does); silent: never submits."""
    other = make_genesis(n_validators=4, n_participants=2, rounds=2).participant_keys[1]
    theirs = chain.sign_tx(other, types_pb2.Transaction(submit_proof=types_pb2.SubmitProof(
        task_id=fake.genesis.task_id, round=1, participant=other.public, claimed_correct=7, proof=b"p")))
    fake.mempool[chain.tx_id(theirs)] = theirs
    fake.commit_mempool()
    fake.refuse = {0: Refusal(refusal.INVALID_PROOF, "binding"), 1: Refusal(refusal.INVALID_PROOF, "binding")}

    async def scenario(behaviour: str, d_path: Path) -> RoundDriver:
        d = driver(d_path, fake, FakeProver(), behaviour=behaviour)
        task = asyncio.create_task(d.run())
        await _until(lambda: d.state.get(1) is not None and d.state.get(1).stage in ("refused", "skipped"))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return d

    copier = asyncio.run(scenario("copy", tmp_path / "copy"))
    rec = copier.state.get(1)
    assert rec.stage == "refused" and rec.refusal == refusal.INVALID_PROOF
    sent = copier.state.get(1).tx("submit")
    assert sent.submit_proof.participant == fake.key.public and sent.submit_proof.proof == b"p"
    n_sent = len(fake.submissions)
    silent = asyncio.run(scenario("silent", tmp_path / "silent"))
    assert silent.state.get(1).stage == "skipped" and len(fake.submissions) == n_sent


def test_an_unexpected_error_is_retried_not_a_crash(tmp_path: Path, fake: FakeChain, monkeypatch) -> None:
    """A surprise in a round (here: the model fetch fails once) is logged and the round picked up
    again from the chain; the driver does not die (a dead driver would be a crash loop)."""
    monkeypatch.setattr(rounds_mod, "ERROR_BACKOFF_S", 0.01)
    real, calls = fake.get_model, []

    async def flaky(cid: str) -> bytes:
        calls.append(cid)
        if len(calls) == 1:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")
        return await real(cid)

    fake.get_model = flaky  # type: ignore[method-assign]

    async def scenario() -> None:
        d = driver(tmp_path, fake, FakeProver())
        task = asyncio.create_task(d.run())
        await _until(lambda: len(_mine(fake)) == 1)
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert len(calls) == 2


def test_restarted_after_its_round_closed_it_settles_the_round_from_the_chain(tmp_path: Path, fake: FakeChain) -> None:
    """Killed once its transaction was out; the round closed while it was down. Restarted, it records
    the block its transaction was committed in (from the chain), not a round without a height."""
    fake.commit_on_submit = False

    async def first_life() -> None:
        d = driver(tmp_path, fake, FakeProver())
        task = asyncio.create_task(d.run())
        await _until(lambda: len(fake.mempool) == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fake.commit_mempool()  # the others commit it, and the round closes, while it is down
        fake.close_round(1)

    async def second_life() -> RoundDriver:
        fake.commit_on_submit = True
        d = driver(tmp_path, fake, FakeProver())
        task = asyncio.create_task(d.run())
        await _until(lambda: d.round == 2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return d

    asyncio.run(first_life())
    d = asyncio.run(second_life())
    rec = d.state.get(1)
    assert rec.stage == "done" and rec.height > 0 and rec.aggregated, rec

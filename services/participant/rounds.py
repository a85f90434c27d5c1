"""The round driver: one participant's part in every round of its task.

Per round: wait for it to open; fetch its global model by content id; ask the prover for a proof
(training included) while watching the round, so a round that closes meanwhile is given up, not
submitted late; build and sign the SubmitProof (zkpot.zkp.submission), record it durably, submit
it with fail-over, wait for inclusion; under secure aggregation mask and reveal; record the
outcome once the round closes. Every step re-reads the chain on each new block (the follower),
so a participant restarted mid-round continues from where the chain is, with what it recorded.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from zkpot import chain, model_codec, refusal
from zkpot.crypto import KeyPair
from zkpot.errors import StartupError
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2, prover_pb2, prover_pb2_grpc, types_pb2
from zkpot.zkp import submission

from . import masking
from . import metrics as m
from .secure_phases import SecurePhases
from .state import ParticipantState, RoundRecord
from .submitter import Submitter
from .validators import TRANSIENT, ChainFollower, Validators

log = logging.getLogger("zkpot.participant")
PHASE = ledger_pb2.RoundPhase
Summary = ledger_pb2.RoundSummary

# Experiments only (zkpot devnet --behaviour): training-time behaviours go to the prover (the proof
# stays honest about the poisoned model); the others change what this participant sends.
TRAINING_BEHAVIOURS = ("label_flip", "scaled", "random", "free_ride")
BEHAVIOURS = ("honest", *TRAINING_BEHAVIOURS, "copy", "silent", "drop_mask", "mask_cheat")

# A prover that is down (UNAVAILABLE: restarting, or killed mid-proof) is waited for as long as the
# round's proof phase lasts, with this backoff; other failures are retried len(...) times, then the round is skipped.
PROVER_BACKOFF_S = (1, 2, 5, 10, 20, 30)
FINAL_STAGES = ("done", "refused", "skipped", "late")
ERROR_BACKOFF_S = 5.0


class ProverMismatch(StartupError):
    """The prover serves another task than genesis names (its data was made for another task)."""


@dataclass
class Options:
    local_epochs: int = 0
    seed: int = 0                  # per-round training seed: seed + 10 * round
    behaviour: str = "honest"
    prove_timeout_s: float = 3600.0


class RoundDriver:
    def __init__(self, key: KeyPair, genesis: Genesis, state: ParticipantState, validators: Validators,
                 prover: prover_pb2_grpc.ProverStub, prover_target: str, options: Options) -> None:
        self.key, self.genesis, self.state = key, genesis, state
        self.validators, self.prover, self.prover_target = validators, prover, prover_target
        self.options = options
        self.follower = ChainFollower(validators)
        self.phase = "starting"
        self.round = 0
        self.finished = False
        self.secure = bool(genesis.manifest.secure_aggregation)
        # submitting and the secure-aggregation phases live in their own modules; they read this driver
        self.submitter = Submitter(self)
        self.secure_phases = SecurePhases(self, self.submitter)

    # ---- status ------------------------------------------------------------------------------

    def _phase(self, name: str) -> None:
        self.phase = name
        m.set_phase(name)

    def _log(self, r: int, event: str, **fields: object) -> None:
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        log.info("round=%d event=%s %s", r, event, extra)

    # ---- start-up ----------------------------------------------------------------------------

    async def check_prover(self, wait_s: float = 600.0) -> prover_pb2.ProverInfo:
        """The prover must serve this genesis's task; waits for it to come up (it loads its keys)."""
        deadline = time.monotonic() + wait_s
        said = 0.0
        while True:
            try:
                info = await self.prover.Info(prover_pb2.ProverInfoRequest(), timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT or time.monotonic() > deadline:
                    raise StartupError(f"prover at {self.prover_target}: {exc.code().name} {exc.details()}") from exc
                if time.monotonic() - said > 10:
                    said = time.monotonic()
                    log.info("event=waiting_for_prover prover=%s (%s)", self.prover_target, exc.code().name)
                await asyncio.sleep(1)
        if info.task_id != self.genesis.task_id:
            raise ProverMismatch(f"the prover at {self.prover_target} serves task {info.task_id.hex()[:16]}, but "
                                 f"genesis names task {self.genesis.task_id.hex()[:16]}: its data and keys were "
                                 "made for another task")
        return info

    async def check_chain(self) -> None:
        head = await self.validators.head()
        if head.chain_id and head.chain_id != self.genesis.chain_id:
            raise StartupError(f"validator {self.validators.current} runs chain {head.chain_id!r}, genesis says "
                               f"{self.genesis.chain_id!r}")

    # ---- main loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        follower = asyncio.create_task(self.follower.run(), name="chain-follower")
        try:
            await self._rounds()
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    async def _rounds(self) -> None:
        last = max(1, int(self.genesis.manifest.rounds))
        r = 1
        while True:
            head = await self.validators.head()
            current = int(head.current_round)
            for missed in range(r, min(current, last + 1)):  # rounds that closed before we got to them
                await self._record_missed(missed)
            if current > last:
                break
            r = current
            self.round = r
            m.current_round.set(r)
            try:
                await self.play(r)
            except (asyncio.CancelledError, StartupError):
                raise
            except Exception as exc:
                # say) must not become a crash loop: say it, wait, and pick the round up again from the chain
                m.errors.labels(kind=type(exc).__name__[:40]).inc()
                log.exception("round=%d event=error kind=%s: retrying in %ss", r, type(exc).__name__, ERROR_BACKOFF_S)
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            r += 1
        self.finished = True
        self._phase("finished")
        log.info("event=task_finished rounds=%d last_accepted_round=%d", last, self.state.last_accepted_round())
        await asyncio.Event().wait()  # stay up: status and metrics keep answering

    async def _record_missed(self, r: int) -> None:
        rec = self.state.get(r)
        if rec is None:
            rec = RoundRecord(round=r, stage="skipped", reason="not_running: the round closed before this "
                                                                 "participant followed it")
            self.state.save(rec)
            m.submissions.labels(outcome="skipped", reason="not_running").inc()
        elif rec.stage not in FINAL_STAGES:
            summary = await self.validators.get_round(r)
            if summary is not None and summary.closed:
                await self._close(rec, summary)

    async def wait_round(self, r: int, ok: Callable[[Summary | None], bool], timeout_s: float | None = None) -> Summary:
        """The round's summary once `ok` holds, re-read on each new block."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            seen = self.follower.height
            summary = await self.validators.get_round(r)
            if ok(summary):
                return summary  # type: ignore[return-value]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"round {r} did not reach the expected state in {timeout_s:.0f}s")
            await self.follower.wait_beyond(seen)

    @staticmethod
    def _proofs_open(s: Summary | None) -> bool:
        return s is not None and not s.closed and s.phase == PHASE.ROUND_PHASE_PROOFS

    async def play(self, r: int) -> None:
        self._phase("waiting")
        summary = await self.wait_round(r, lambda s: s is not None)
        rec = self.state.get(r)
        behaviour = self.options.behaviour
        if rec is None or (rec.stage == "proving" and "submit" not in rec.txs):
            if not self._proofs_open(summary):
                rec = self._final(RoundRecord(round=r), "late", "late: the round was past its proof phase when "
                                                                "this participant reached it")
            elif behaviour == "silent":
                rec = self._final(RoundRecord(round=r), "skipped", "silent: experiment behaviour")
            elif behaviour == "copy":
                rec = await self._copy(r)
            else:
                rec = await self._prove_and_sign(r, summary)
        if rec.stage in ("signed", "submitted"):
            tx = rec.tx("submit")
            assert tx is not None
            await self.submitter.submit_proof(rec, tx)
        if self.secure and behaviour not in ("silent", "drop_mask"):
            await self.secure_phases.run(r, rec)
        self._phase("waiting")
        summary = await self.wait_round(r, lambda s: s is not None and s.closed)
        await self._close(rec, summary)

    def _final(self, rec: RoundRecord, stage: str, reason: str, code: int = refusal.UNSPECIFIED) -> RoundRecord:
        """End the round's record. `code`: a validator's refusal (zkpot.v1.Reason) labels the metric;
        without one, `reason` is this participant's own "label: detail" sentence."""
        rec.stage, rec.reason, rec.refusal = stage, reason, code
        self.state.save(rec)
        m.submissions.labels(outcome=stage, reason=refusal.label(code) if code else m.label(reason)).inc()
        self._log(rec.round, stage, reason=repr(reason))
        return rec

    async def _close(self, rec: RoundRecord, summary: Summary) -> None:
        if rec.stage in ("signed", "submitted") and rec.tx_id and not rec.height:
            # restarted after the round closed (killed once its transaction was out): settle it from the chain
            got = await self.validators.get_tx(bytes.fromhex(rec.tx_id))
            if got is None:
                self._final(rec, "late", "late: the round closed before the transaction was included")
            else:
                self.submitter.settle(rec, got, 0.0)
        mine = [s for s in summary.submissions if s.participant == self.key.public]
        rec.aggregated = bool(mine and mine[0].aggregated)
        if rec.stage not in FINAL_STAGES:
            rec.stage = "done"
        self.state.save(rec)
        self._log(rec.round, "round_closed", aggregated=rec.aggregated, stage=rec.stage)

    # ---- proving -----------------------------------------------------------------------------

    async def _prove_and_sign(self, r: int, summary: Summary) -> RoundRecord:
        """Prove (retrying a prover that died) while the round's proof phase lasts; sign and record."""
        rec = RoundRecord(round=r, stage="proving")
        self.state.save(rec)
        m.rounds_joined.inc()
        model = await self.validators.get_model(summary.global_model_cid)
        if model_codec.model_cid(model) != summary.global_model_cid:
            raise RuntimeError(f"round {r}: the ledger's global model does not match its content id")
        request = prover_pb2.ProveRoundRequest(
            task_id=self.genesis.task_id, round=r, participant=self.key.public, global_model=model,
            local_epochs=self.options.local_epochs, seed=self.options.seed + 10 * r,
            behaviour=self.options.behaviour if self.options.behaviour in TRAINING_BEHAVIOURS else "")
        self._phase("proving")
        attempt = failures = 0
        while True:
            self._log(r, "proving", prover=self.prover_target, attempt=attempt + 1)
            t0 = time.monotonic()
            prove = asyncio.create_task(self._prove(request))
            closed = asyncio.create_task(self.wait_round(r, lambda s: not self._proofs_open(s)))
            done, _ = await asyncio.wait({prove, closed}, return_when=asyncio.FIRST_COMPLETED)
            if prove not in done:
                prove.cancel()
                await asyncio.gather(prove, return_exceptions=True)
                return self._final(rec, "late", "late: the round's proof phase ended while proving")
            closed.cancel()
            await asyncio.gather(closed, return_exceptions=True)
            try:
                result = prove.result()
                break
            except grpc.aio.AioRpcError as exc:
                m.prover_failures.labels(code=exc.code().name).inc()
                if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                    return self._final(rec, "skipped", f"prover_refused: {exc.details()}")
                down = exc.code() == grpc.StatusCode.UNAVAILABLE
                if not down and failures >= len(PROVER_BACKOFF_S):
                    return self._final(rec, "skipped", f"prover_failed: {exc.code().name} {exc.details()}")
                wait = PROVER_BACKOFF_S[min(attempt, len(PROVER_BACKOFF_S) - 1)]
                attempt += 1
                failures += 0 if down else 1
                log.warning("round=%d event=prover_failed code=%s details=%r retry_in=%ss", r, exc.code().name,
                            exc.details(), wait)
                await asyncio.sleep(wait)
        wall = time.monotonic() - t0
        m.proof_seconds.observe(wall)
        rec.claimed_correct, rec.test_set_size = result.claimed_correct, result.test_set_size
        rec.float_accuracy, rec.train_seconds = result.float_accuracy, result.train_seconds
        rec.compile_seconds, rec.witness_seconds = result.compile_seconds, result.witness_seconds
        rec.prove_seconds, rec.prover_wall_seconds = result.prove_seconds, wall
        seal = None
        if self.secure:
            if not result.committed_params:
                return self._final(rec, "skipped", "prover_failed: no committed parameters for a secure-aggregation "
                                                   "task (prover too old?)")
            dealt: dict[str, bytes] = {}

            def seal(sp: types_pb2.SubmitProof) -> None:
                keys, self_seed = masking.deal(self.key, self.genesis, sp)
                dealt["secret"], dealt["seed"] = keys.secret, self_seed

        tx = submission.round_tx(self.key, self.genesis.task_id, r, result, seal=seal)
        if self.secure:
            rec.mask_secret, rec.self_seed = dealt["secret"].hex(), dealt["seed"].hex()
            rec.committed_params = base64.b64encode(result.committed_params).decode()
        rec.tx_id = chain.tx_id(tx).hex()
        rec.set_tx("submit", tx)
        rec.stage = "signed"
        self.state.save(rec)  # before it is sent anywhere: a restart resends these bytes, never new ones
        self._log(r, "signed", tx=rec.tx_id[:16], claimed=f"{rec.claimed_correct}/{rec.test_set_size}",
                  prove_s=f"{wall:.1f}")
        return rec

    async def _prove(self, request: prover_pb2.ProveRoundRequest) -> prover_pb2.ProveRoundResult:
        result = None
        async for event in self.prover.ProveRound(request, timeout=self.options.prove_timeout_s):
            if event.WhichOneof("event") == "result":
                result = event.result
            else:
                log.debug("round=%d event=prover_stage stage=%s", request.round, event.stage)
        if result is None:
            raise grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "the prover ended the stream without a result")
        return result

    async def _copy(self, r: int) -> RoundRecord:
        """Experiments' copier: another participant's committed submission, re-signed as its own.
        The proof's binding to its real submitter must get it refused."""
        me = self.key.public
        summary = await self.wait_round(r, lambda s: not self._proofs_open(s) or any(
            x.participant != me for x in s.submissions))  # type: ignore[union-attr]
        others = [x for x in summary.submissions if x.participant != me]
        if not others:
            return self._final(RoundRecord(round=r), "skipped", "copy: nothing to copy before the proof phase ended")
        got = await self.validators.get_tx(others[0].tx_id)
        assert got is not None
        tx = types_pb2.Transaction()
        tx.CopyFrom(got.tx)
        tx.submit_proof.participant = me
        chain.sign_tx(self.key, tx)
        rec = RoundRecord(round=r, stage="signed", tx_id=chain.tx_id(tx).hex(),
                          claimed_correct=tx.submit_proof.claimed_correct)
        rec.set_tx("submit", tx)
        self.state.save(rec)
        return rec

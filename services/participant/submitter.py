"""Submission: send one participant's transaction to a validator until the chain includes it.

The same signed bytes every time: fail over on transport errors and on refusals another validator
may not give, retry later when told to, resend when admitted but not included for a while, and
record the committed SubmitProof's verdict (the round driver, services.participant.rounds, decides
what to send and when).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from zkpot import chain, refusal
from zkpot.v1 import ledger_pb2, types_pb2

from . import metrics as m
from .state import RoundRecord

if TYPE_CHECKING:  # rounds imports this module: a runtime import would be circular
    from .rounds import RoundDriver

log = logging.getLogger("zkpot.participant")
Summary = ledger_pb2.RoundSummary

RESUBMIT_AFTER_BLOCKS = 20    # admitted but not included after this many blocks: send the same bytes again


class Submitter:
    """Submits for one RoundDriver. It reads the driver's validators, follower and state on every use,
    not once here: they may be replaced after the driver is built (the tests swap in a fake follower)."""

    def __init__(self, driver: RoundDriver) -> None:
        self.driver = driver

    async def submit_proof(self, rec: RoundRecord, tx: types_pb2.Transaction) -> None:
        d = self.driver
        d._phase("submitting")
        outcome = await self.submit_until_included(rec.round, tx, rec, until=d._proofs_open)
        if outcome is None:
            return
        got, t_submit = outcome
        self.settle(rec, got, t_submit)

    def settle(self, rec: RoundRecord, got: ledger_pb2.GetTxResponse, t_submit: float) -> None:
        """Record the committed SubmitProof's block and the ledger's verdict."""
        d = self.driver
        rec.height = got.height
        rec.commit_seconds = time.monotonic() - t_submit if t_submit else 0.0
        if got.result.accepted:
            rec.stage = "committed"
            m.last_accepted_round.set(max(rec.round, d.state.last_accepted_round()))
            m.submissions.labels(outcome="committed", reason="").inc()
            d._log(rec.round, "committed", height=got.height, tx=rec.tx_id[:16])
        else:  # a valid proof the state rules refused (e.g. free-riding on the global model)
            rec.stage, rec.ledger_refusal = "refused", got.result.reason
            rec.ledger_reason = refusal.text(got.result.reason, got.result.detail)
            m.submissions.labels(outcome="ledger_refused", reason=refusal.label(got.result.reason)).inc()
            d._log(rec.round, "ledger_refused", height=got.height, reason=repr(rec.ledger_reason))
        d.state.save(rec)

    async def submit_until_included(self, r: int, tx: types_pb2.Transaction, rec: RoundRecord | None,
                                    until: Callable[[Summary | None], bool]
                                    ) -> tuple[ledger_pb2.GetTxResponse, float] | None:
        """Send `tx` (the same bytes every time) until it is committed: fail over on transport errors
        and on refusals another validator may not give, resend when it is not included for a while.
        Returns (its GetTx, when first sent), or None when it was refused or `until` stopped holding
        before it was committed (the rec, when given, then says why)."""
        d = self.driver
        tx_id = chain.tx_id(tx)
        t_first = 0.0
        while True:
            got = await d.validators.get_tx(tx_id)  # a restart after it went out: it may be in already
            if got is not None:
                return got, t_first
            summary = await d.validators.get_round(r)
            if not until(summary):
                if rec is not None:
                    d._final(rec, "late", "late: the round's phase ended before the transaction was included")
                return None
            t_send = time.monotonic()
            t_first = t_first or t_send
            try:
                admission = await d.validators.submit(tx)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # rate limited: not this validator's fault
                    m.attempts.labels(result="retry").inc()
                    await asyncio.sleep(1.0)
                    continue
                m.attempts.labels(result="unavailable").inc()
                if rec is not None:
                    rec.attempts += 1
                await d.validators.failover(f"SubmitTx: {exc.code().name} {exc.details()}")
                continue
            said = refusal.text(admission.reason, admission.detail)
            if rec is not None:
                rec.attempts += 1
                rec.admission_seconds = time.monotonic() - t_send
                rec.validator = str(d.validators.current)
            if admission.reason in (refusal.ACCEPTED, refusal.DUPLICATE):
                m.attempts.labels(result="admitted" if admission.reason == refusal.ACCEPTED else "duplicate").inc()
                if rec is not None and rec.stage == "signed":
                    rec.stage, rec.admitted = "submitted", True
                    d.state.save(rec)
                    d._log(r, "admitted", validator=d.validators.current, tx=tx_id.hex()[:16],
                           admission_s=f"{rec.admission_seconds:.2f}")
                got = await self.wait_included(r, tx_id, until)
                if got is not None:
                    return got, t_first
                continue  # not included after RESUBMIT_AFTER_BLOCKS, or its phase ended: re-check and resend
            if admission.reason in refusal.RETRY_ELSEWHERE:
                m.attempts.labels(result="retry").inc()
                await d.validators.failover(f"SubmitTx refused: {said}")
                continue
            if admission.reason in refusal.RETRY_LATER:
                m.attempts.labels(result="retry").inc()
                await asyncio.sleep(1.0)
                continue
            m.attempts.labels(result="refused").inc()
            if rec is not None:
                d._final(rec, "refused", said, admission.reason)
            else:
                log.warning("round=%d event=refused tx=%s reason=%r", r, tx_id.hex()[:16], said)
            return None

    async def wait_included(self, r: int, tx_id: bytes, until: Callable[[Summary | None], bool]
                            ) -> ledger_pb2.GetTxResponse | None:
        d = self.driver
        d._phase("including")
        start = d.follower.height
        while True:
            seen = d.follower.height
            got = await d.validators.get_tx(tx_id)
            if got is not None:
                return got
            if seen - start >= RESUBMIT_AFTER_BLOCKS or not until(await d.validators.get_round(r)):
                return None
            await d.follower.wait_beyond(seen)

"""The secure-aggregation phases of one participant's round: send its masked update, then its reveals.

After its SubmitProof is committed: as a member of the mask set, send the masked parameter vector
(MaskedUpdate) while the round is masking; as a holder of others' shares, send the reveals
(MaskReveal) while it is unmasking. The cryptography is services.participant.masking; sending is
services.participant.submitter.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from zkpot.v1 import ledger_pb2, types_pb2

from . import masking
from .state import RoundRecord
from .submitter import Submitter

if TYPE_CHECKING:  # rounds imports this module: a runtime import would be circular
    from .rounds import RoundDriver

PHASE = ledger_pb2.RoundPhase


class SecurePhases:
    """The masking and unmasking steps for one RoundDriver, read through it on every use (its state and
    follower may be replaced after it is built), sending through its Submitter."""

    def __init__(self, driver: RoundDriver, submitter: Submitter) -> None:
        self.driver, self.submitter = driver, submitter

    async def run(self, r: int, rec: RoundRecord) -> None:
        """Masking (as a member of the mask set) and unmasking (as a holder of others' shares)."""
        d = self.driver
        me = d.key.public
        state = None
        if rec.mask_secret and rec.committed_params:
            from zkpot import secagg

            vector = np.frombuffer(base64.b64decode(rec.committed_params), dtype=">i8").astype(np.int64)
            state = masking.MaskingRound(r, secagg.MaskKeys.from_secret(bytes.fromhex(rec.mask_secret)),
                                         bytes.fromhex(rec.self_seed), vector, rec.claimed_correct)
        d._phase("masking")
        summary = await d.wait_round(r, lambda s: s is not None and (s.closed or
                                                                     s.phase != PHASE.ROUND_PHASE_PROOFS))
        if state is not None and rec.stage == "committed" and summary.phase == PHASE.ROUND_PHASE_MASKING \
                and me in summary.mask_set:
            masked = state  # narrowed for the closure
            rec.masked_height = await self.send_recorded(
                rec, "masked", PHASE.ROUND_PHASE_MASKING,
                lambda: masking.masked_update_tx(d.key, d.genesis, masked, summary,
                                                 cheat=d.options.behaviour == "mask_cheat"))
            if rec.masked_height:
                d.state.save(rec)
                d._log(r, "masked", height=rec.masked_height)
        d._phase("unmasking")
        summary = await d.wait_round(r, lambda s: s is not None and (s.closed or
                                                                     s.phase == PHASE.ROUND_PHASE_UNMASKING))
        if summary.closed:
            return
        rec.reveal_height = await self.send_recorded(
            rec, "reveal", PHASE.ROUND_PHASE_UNMASKING,
            lambda: masking.reveal_tx(d.key, d.genesis, summary, state))
        if rec.reveal_height:
            d.state.save(rec)
            d._log(r, "revealed", height=rec.reveal_height)

    async def send_recorded(self, rec: RoundRecord, kind: str, phase: int,
                            build: Callable[[], types_pb2.Transaction | None]) -> int:
        """A phase's transaction: the recorded one, else built, recorded (before it is sent) and
        sent until included while the round stays in `phase`. Returns its block height (0: none)."""
        tx = rec.tx(kind)
        if tx is None:
            tx = build()
            if tx is None:  # nothing to send in this phase
                return 0
            rec.set_tx(kind, tx)
            self.driver.state.save(rec)
        got = await self.submitter.submit_until_included(rec.round, tx, None,
                                                         until=lambda s: s is not None and s.phase == phase)
        return got[0].height if got is not None else 0

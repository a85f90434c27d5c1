"""Giving up on a view: signing our timeout when the view timer runs out, counting the others'
timeouts into a timeout certificate (TC), and acting on a TC (the next view, or the fallback).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from zkpot import chain
from zkpot.v1 import consensus_pb2

from . import checks
from . import metrics as m

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("zkpot.consensus.viewchange")


class ViewChange:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._my_timeout: tuple[consensus_pb2.Timeout, float] | None = None  # last one signed, when
        self._echoed: dict[bytes, float] = {}  # peer -> when we last echoed our timeout to it

    async def on_expiry(self, generation: int) -> None:
        c = self.core
        async with c.lock:
            if c.fallback is not None and c.fallback.is_active():
                return  # no timeouts in the fallback (it resends instead)
            if not c.pacemaker.is_current(generation):
                # the view moved on (a QC or TC) while this handler waited for the lock: the timer
                # that ran out belonged to a view that is over, not to the one now current
                m.stale_timers.inc()
                return
            log.info("view %d timed out (leader %s)", c.view, c.genesis.name_of(c.leaders.leader(c.view)))
            await self.time_out(c.view)

    async def time_out(self, view: int) -> None:
        c = self.core
        if view <= c.sign_floor:
            return  # amnesic start: we may have signed in this view before; the others' TC moves us on
        if view > c.safety.highest_timeout_view:
            c.safety.highest_timeout_view = view
            c.safety.high_qc = c.high_qc
            await c.persist()  # never vote in a view after signing its timeout
        timeout = chain.make_timeout(c.key, view, c.high_qc if c.high_qc.votes else None)
        if c.last_tc is not None and c.last_tc.view >= c.high_qc.view and c.last_tc.view < view:
            # the TC that brought us here: a replica that missed it (lost timeouts) follows us
            # instead of waiting forever in the old view for timeouts nobody sends any more
            timeout.last_tc.CopyFrom(c.last_tc)
        if self._my_timeout is None or self._my_timeout[0].view != view:
            self._my_timeout = (timeout, c.rt.now())
        m.timeouts_sent.inc()
        c.network.broadcast_timeout(timeout)
        await self.on_timeout_locked(timeout)

    async def on_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        c = self.core
        await c.rt.offload(
            checks.check_timeout, timeout, c.validators, c.quorum, c.genesis_hash, c.coin_check
        )
        if c.fallback is not None:
            c.fallback.check_endorsed(timeout.high_qc)
            c.fallback.check_tc(timeout.last_tc)
        async with c.lock:
            await self.on_timeout_locked(timeout)

    async def on_timeout_locked(self, timeout: consensus_pb2.Timeout) -> None:
        c = self.core
        if timeout.HasField("high_qc"):
            c.process_qc(timeout.high_qc)
        if timeout.HasField("last_tc"):
            await self.process_tc(timeout.last_tc)
        self._echo_timeout(timeout)
        if timeout.view < c.view:
            return
        count, tc = c.timeouts.add(timeout)
        if tc is not None:
            await self.process_tc(tc)
        elif count >= c.f + 1 and timeout.view > c.safety.highest_timeout_view:
            # f+1 timeouts: at least one honest replica gave up on that view; join it
            if timeout.view > c.view:
                c.view = timeout.view
                m.view.set(c.view)
                m.view_changes.labels(cause="join").inc()
            await self.time_out(timeout.view)

    async def process_tc(self, tc: consensus_pb2.TimeoutCert) -> None:
        c = self.core
        if c.last_tc is None or tc.view > c.last_tc.view:
            c.last_tc = tc
        if c.fallback is not None:
            if tc.view + 1 > c.view or (tc.view + 1 == c.view and not c.fallback.is_active()):
                await c.fallback.enter(tc)  # instead of view tc.view + 1 (Ditto)
            return
        c.advance(tc.view + 1, "tc")

    def _echo_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        """A peer still timing out in a view we gave up on long ago missed our timeout or the TC
        that followed (lost messages): send it ours again, which carries our high QC and last TC.
        Only then (not when everyone times out together) and at most once per base timeout per
        peer, so this costs nothing on a healthy network and heals a lossy one within one RTT."""
        c = self.core
        mine = self._my_timeout
        sender = timeout.signature.signer
        if mine is None or sender == c.me or mine[0].view < timeout.view:
            return
        now = c.rt.now()
        if now - mine[1] < c.config.base_timeout_s / 2:
            return
        if now - self._echoed.get(sender, -1e9) < c.config.base_timeout_s:
            return
        self._echoed[sender] = now
        m.timeouts_sent.inc()
        c.network.send_timeout(sender, mine[0])

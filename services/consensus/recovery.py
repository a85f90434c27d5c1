"""Starting from what survived a crash: the ledger's committed tip, the leader-skip evidence
in recent blocks, and — when the safety file is gone — a signing floor learned from peers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from zkpot.v1 import consensus_pb2, ledger_pb2

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("zkpot.consensus.recovery")

LEADER_EVIDENCE_BLOCKS = 4096  # committed blocks re-read at start for the leader skip rule
STATUS_DEADLINE_S = 2.0  # peers' Status at an amnesic start
STATUS_RETRY_S = 0.5     # an amnesic replica asks again until a peer answers


class Recovery:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def recover_lost_safety_state(self) -> None:
        """No safety file: a fresh replica, or one whose data dir was lost or wiped. A wiped one
        may have voted or timed out in views it no longer remembers; signing again there could
        equivocate. When peers show the chain has moved on, this replica signs nothing in views up
        to a floor above every view it can have signed in: it signed in view w only after a QC or
        TC for w-1, whose 2f+1 signers include at least f honest peers, now in a view >= w-1. So
        floor = (highest view any peer reports) + 1 (safe when one of those answers; a peer that
        reports too high a view only keeps this replica silent longer). Votes and timeouts in
        views <= floor are refused; it follows the others' QCs and TCs until it is past it. Until
        a peer answers it signs nothing at all (runs in the background: at a genesis start every
        replica is in this state and they must be serving to answer each other)."""
        c = self.core
        answers: list[consensus_pb2.StatusResponse] = []
        while c.network.peers and not answers:
            answers = await self._peer_statuses()
            if not answers:
                await asyncio.sleep(STATUS_RETRY_S)
        async with c.lock:
            floor = 0
            # only once something is committed: at a genesis start views may already have moved on
            # by timeouts while replicas come up, and a floor there would only cost liveness
            if any(st.committed_height > 0 for st in answers):
                top = max(st.view for st in answers)
                floor = top + 1
                log.warning("no safety state but the network is at view %d: signing nothing up to view %d",
                            top, floor)
            c.safety.last_voted_view = max(c.safety.last_voted_view, floor)
            c.safety.highest_timeout_view = max(c.safety.highest_timeout_view, floor)
            await c.persist()  # from now on a restart is an ordinary one
            c.sign_floor = floor

    async def _peer_statuses(self) -> list[consensus_pb2.StatusResponse]:
        c = self.core
        async def one(key: bytes) -> consensus_pb2.StatusResponse | None:
            try:
                return await asyncio.wait_for(c.network.status(key), STATUS_DEADLINE_S)
            except (grpc.aio.AioRpcError, TimeoutError):
                return None

        got = await asyncio.gather(*(one(k) for k in c.network.peers))
        return [st for st in got if st is not None]

    async def replay_leader_evidence(self, height: int) -> None:
        """The leader skip rule reads committed blocks of the current epoch: re-read the recent
        ones from the ledger after a restart (an epoch is far shorter than this window)."""
        c = self.core
        h = max(1, height - LEADER_EVIDENCE_BLOCKS + 1)
        while h <= height:
            stored = await c.ledger.blocks(h, 256)
            if not stored:
                break
            for sb in stored:
                c.leaders.note_committed(sb.block)
            h = stored[-1].block.header.height + 1

    async def ledger_head(self, wait_s: float) -> ledger_pb2.HeadResponse:
        c = self.core
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return await c.ledger.head()
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ledger {c.ledger.target} unavailable: {exc.code().name}") from exc
                await asyncio.sleep(0.3)

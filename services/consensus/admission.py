"""Transaction admission: cheap refusals, signature (and proof) checks, the mempool, gossip and
re-gossip. Admission work runs in its own thread pool (Runtime.offload_bulk) and is shed past
the configured backlog, so it never delays the protocol's own checks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from zkpot import codec, refusal
from zkpot.refusal import Refusal
from zkpot.v1 import consensus_pb2, types_pb2

from . import checks
from . import metrics as m

if TYPE_CHECKING:
    from .core import Core

# transaction bodies only genesis participants may send (the ledger re-checks; this is a cheap filter)
PARTICIPANT_BODIES = ("submit_proof", "masked_update", "mask_reveal")
REGOSSIP_BATCH = 2000  # txs per re-gossip request


class Admission:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.admitting = 0  # transactions inside submit() now

    async def submit(self, txs: list[types_pb2.Transaction], gossip: bool) -> list[consensus_pb2.TxAdmission]:
        c = self.core
        if self.admitting and self.admitting + len(txs) > c.config.admission_backlog_txs:
            # shed load rather than queue it: a backlog of signature checks delays nothing but
            # itself (proposals have their own pool), yet it grows latency for every tx behind it
            m.rejected_txs.labels(reason=refusal.label(refusal.BUSY)).inc(len(txs))
            detail = (f"{self.admitting} transactions being admitted, at most "
                      f"{c.config.admission_backlog_txs}; retry shortly")
            return [consensus_pb2.TxAdmission(reason=refusal.BUSY, detail=detail) for _ in txs]
        self.admitting += len(txs)
        try:
            return await self._admit(txs, gossip)
        finally:
            self.admitting -= len(txs)

    async def _admit(self, txs: list[types_pb2.Transaction], gossip: bool) -> list[consensus_pb2.TxAdmission]:
        c = self.core
        ids = await c.rt.offload_bulk(checks.tx_ids, txs, c.mempool.known_id)  # re-gossiped copies: known
        results = [consensus_pb2.TxAdmission(tx_id=i) for i in ids]
        todo: list[int] = []
        seen: set[bytes] = set()
        sizes = [tx.ByteSize() for tx in txs]
        for k, (tx_id, tx) in enumerate(zip(ids, txs, strict=True)):
            size = sizes[k]
            reason = c.mempool.refusal(tx_id, size, tx.sender)
            if reason is None and tx_id in seen:
                reason = Refusal(refusal.DUPLICATE, "twice in this request")
            if reason is None and size > c.config.max_block_bytes:
                # it could never be proposed: refuse it now rather than hold and gossip it for ever
                reason = Refusal(refusal.TOO_LARGE,
                                 f"{size} bytes, over the block limit of {c.config.max_block_bytes} bytes")
            if reason is None and (extra := codec.unknown_fields(tx)):
                reason = Refusal(refusal.MALFORMED,
                                 f"unknown protobuf fields in {', '.join(extra[:3])} (not covered by the signature)")
            body = tx.WhichOneof("body")
            if reason is None and body is None:
                reason = Refusal(refusal.MALFORMED, "a transaction without a known body (no rule admits it)")
            if reason is None and body in PARTICIPANT_BODIES and tx.sender not in c.participants:
                # before the costly proof check: only genesis participants may submit proofs (and masks)
                reason = Refusal(refusal.UNKNOWN_SIGNER, f"{body} by a key that is not a genesis participant")
            if reason is None and body == "payload" and tx.sender not in c.members:
                # a payload changes no state: only genesis members may spend block space on one
                reason = Refusal(refusal.UNKNOWN_SIGNER, "payload by a key that is not a genesis member")
            seen.add(tx_id)
            if reason is None:
                todo.append(k)
            else:
                results[k].reason, results[k].detail = reason.reason, reason.detail
        # the only request in admission: its signature checks may take both workers (latency at light load)
        alone = self.admitting == len(txs)
        refusals = await c.checker.refusals([txs[k] for k in todo], [ids[k] for k in todo], bulk=True, split=alone)
        admitted: list[types_pb2.Transaction] = []
        for k, found in zip(todo, refusals, strict=True):
            reason = found or c.mempool.add(ids[k], txs[k], sizes[k])
            if reason is None:
                results[k].admitted, results[k].reason = True, refusal.ACCEPTED
                admitted.append(txs[k])
            else:
                results[k].reason, results[k].detail = reason.reason, reason.detail
        for r in results:
            if not r.admitted:
                m.rejected_txs.labels(reason=refusal.label(r.reason)).inc()
        m.admitted_txs.inc(len(admitted))
        self.mempool_metrics()
        if gossip and admitted:
            c.network.gossip(consensus_pb2.SubmitTxRequest(txs=admitted))
        return results

    async def regossip(self) -> None:
        """Gossip again the transactions that have waited a whole period: their first gossip may
        have been lost (partition) and this replica may not lead soon (or at all, if the leader
        skip rule passes it over), so without this they could sit here for ever. At most one
        block's worth of bytes per period, the least re-gossiped first: a pool of stale
        transactions costs the network a bounded rate, not its whole size every few seconds."""
        c = self.core
        period = max(2 * c.config.base_timeout_s, 4 * c.config.idle_block_s)
        waiting: set[bytes] = set()
        times: dict[bytes, int] = {}  # how often each waiting transaction was gossiped again
        while True:
            await asyncio.sleep(period)
            async with c.lock:
                pending = c.store.uncommitted_tx_ids(c.high_qc.block_hash)
                candidates = [(tx_id, tx) for tx_id, tx in c.mempool.items()
                              if tx_id in waiting and tx_id not in pending]
                waiting = {tx_id for tx_id, _ in c.mempool.items()}
            times = {tx_id: n for tx_id, n in times.items() if tx_id in waiting}
            candidates.sort(key=lambda item: times.get(item[0], 0))  # stable: oldest first among equals
            stale, budget = [], c.config.max_block_bytes
            for tx_id, tx in candidates:
                budget -= tx.ByteSize()
                if budget < 0:
                    break
                stale.append(tx)
                times[tx_id] = times.get(tx_id, 0) + 1
            for i in range(0, len(stale), REGOSSIP_BATCH):
                m.regossiped_txs.inc(len(stale[i : i + REGOSSIP_BATCH]))
                c.network.gossip(consensus_pb2.SubmitTxRequest(txs=stale[i : i + REGOSSIP_BATCH]))

    def mempool_metrics(self) -> None:
        c = self.core
        m.mempool_txs.set(len(c.mempool))
        m.mempool_bytes.set(c.mempool.bytes)

"""Forward catch-up: fetch committed blocks by height from one peer at a time.

The walk back through parents (synchronizer.py) suits a gap of a few blocks. A replica that was
down for a long time, or restarted with an empty ledger, instead asks ONE peer for the committed
blocks above its own committed tip, in batches capped by count and bytes, and appends only what
it can prove committed itself:

* every block passes the block checks (proposer signature, txs_root, a parent QC of 2f+1
  distinct genesis validators with valid signatures);
* block i+1 extends block i (parent_hash, height + 1) and the first extends our committed tip;
* the 2-chain rule on the fetched chain: block j is committed when block j+1 is certified
  (block j+2's parent QC, or the QC the peer sent with block j+1, verified) and
  view(j+1) == view(j) + 1; everything up to the highest such j is committed. The tail above it
  is left to the normal path (it is a few blocks the live replicas still hold in memory).

A peer that serves anything that fails these checks is counted and dropped for this round;
the next peer is asked (peers rotate, never all at once). Nothing a peer sends is appended
unless it is provably the committed chain, so a lying peer costs time, never safety.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from zkpot import chain
from zkpot.v1 import types_pb2

from . import metrics as m
from .checks import Rejected

log = logging.getLogger("zkpot.consensus.catchup")

BATCH_BLOCKS = 256           # blocks per request
BATCH_BYTES = 8 * 1024 * 1024  # asked-for response size (a peer always sends at least one block)
MAX_ROUNDS = 10_000          # requests per catch-up run (256 x 10k blocks: far beyond any outage)

# (peer, from_height, max_blocks, max_bytes) -> (blocks, qcs)
FetchRange = Callable[[bytes, int, int, int], Awaitable[tuple[list[types_pb2.Block], list[types_pb2.QuorumCert]]]]
ValidateBlock = Callable[[types_pb2.Block], tuple[bytes, list[bytes]]]
CheckQc = Callable[[types_pb2.QuorumCert], None]


@dataclass
class Committed:
    block: types_pb2.Block
    block_hash: bytes
    tx_ids: list[bytes]
    qc: types_pb2.QuorumCert  # certifies block (the ledger's commit proof)


def committed_prefix(
    blocks: Sequence[types_pb2.Block],
    qcs: Sequence[types_pb2.QuorumCert],
    tip_hash: bytes,
    tip_height: int,
    validate_block: ValidateBlock,
    check_qc: CheckQc,
) -> list[Committed]:
    """The part of `blocks` (oldest first, extending (tip_hash, tip_height)) that is provably
    committed. Raises Rejected if anything sent is invalid or does not link up."""
    checked: list[tuple[bytes, list[bytes]]] = []
    prev_hash, prev_height = tip_hash, tip_height
    for b in blocks:
        h, ids = validate_block(b)
        if b.header.height != prev_height + 1:
            raise Rejected("sync_linkage", f"height {b.header.height} does not follow {prev_height}")
        if b.header.parent_hash != prev_hash:
            raise Rejected("sync_linkage", f"block at height {b.header.height} does not extend the previous one")
        checked.append((h, ids))
        prev_hash, prev_height = h, b.header.height
    certs: list[types_pb2.QuorumCert | None] = [blocks[i + 1].header.parent_qc for i in range(len(blocks) - 1)]
    certs.append(None)
    if blocks and len(qcs) == len(blocks) and qcs[-1].votes:
        last, (h, _) = blocks[-1], checked[-1]
        qc = qcs[-1]
        if (qc.block_hash, qc.view, qc.height) != (h, last.header.view, last.header.height):
            raise Rejected("sync_bad_qc", "the last block's QC does not certify it")
        check_qc(qc)
        certs[-1] = qc
    top = -1  # highest index proven committed by the 2-chain rule
    for j in range(len(blocks) - 1):
        if certs[j + 1] is not None and blocks[j + 1].header.view == blocks[j].header.view + 1:
            top = j
    out = []
    for i in range(top + 1):
        cert = certs[i]
        assert cert is not None  # i < top + 1 <= len - 1: the child's parent QC
        out.append(Committed(blocks[i], checked[i][0], checked[i][1], cert))
    return out


class CatchUp:
    """Single-flight forward catch-up; `run()` returns how many blocks it delivered."""

    def __init__(
        self,
        fetch: FetchRange,
        peers: Sequence[bytes],
        tip: Callable[[], tuple[bytes, int]],
        validate_block: ValidateBlock,
        check_qc: CheckQc,
        deliver: Callable[[list[Committed]], Awaitable[None]],
        offload: Callable[..., Awaitable] | None = None,
    ) -> None:
        self._fetch = fetch
        self._peers = list(peers)
        self._tip = tip
        self._validate_block = validate_block
        self._check_qc = check_qc
        self._deliver = deliver
        self._offload = offload or asyncio.to_thread
        self._next_peer = 0
        self._lock = asyncio.Lock()
        self.running = False

    def _peer_order(self) -> list[bytes]:
        """All peers, starting with the one that served last (sticky on success, rotate on failure)."""
        k = self._next_peer % max(1, len(self._peers))
        return self._peers[k:] + self._peers[:k]

    async def run(self) -> int:
        if self._lock.locked():
            return 0  # one at a time: a burst of triggers costs one catch-up
        async with self._lock:
            self.running = True
            try:
                return await self._run()
            finally:
                self.running = False

    async def _run(self) -> int:
        total = 0
        for _ in range(MAX_ROUNDS):
            got = await self._one_batch()
            if got <= 0:
                break
            total += got
        if total:
            log.info("caught up %d committed blocks; height now %d", total, self._tip()[1])
        return total

    async def _one_batch(self) -> int:
        """Ask peers in turn until one serves a valid batch; delivered block count (0: nothing new)."""
        for peer in self._peer_order():
            self._next_peer = (self._peers.index(peer) + 1) % len(self._peers)  # if this one fails
            tip_hash, tip_height = self._tip()
            try:
                blocks, qcs = await self._fetch(peer, tip_height + 1, BATCH_BLOCKS, BATCH_BYTES)
            except grpc.aio.AioRpcError as exc:
                result = "not_found" if exc.code() == grpc.StatusCode.NOT_FOUND else exc.code().name.lower()
                m.catchup_requests.labels(result=result).inc()
                continue
            if not blocks:
                m.catchup_requests.labels(result="not_found").inc()
                continue
            if len(blocks) > BATCH_BLOCKS or (qcs and len(qcs) != len(blocks)):
                m.catchup_requests.labels(result="invalid").inc()
                m.catchup_blocks.labels(outcome="refused").inc(len(blocks))
                log.warning("catch-up: peer %s sent a malformed batch", peer[:4].hex())
                continue
            try:
                good = await self._offload(
                    committed_prefix, blocks, qcs, tip_hash, tip_height, self._validate_block, self._check_qc
                )
            except Rejected as exc:
                m.catchup_requests.labels(result="invalid").inc()
                m.catchup_blocks.labels(outcome="refused").inc(len(blocks))
                m.rejected.labels(reason=exc.reason).inc()
                log.warning("catch-up: refused blocks from peer %s: %s", peer[:4].hex(), exc)
                continue
            m.catchup_requests.labels(result="ok").inc()
            m.catchup_blocks.labels(outcome="committed").inc(len(good))
            m.catchup_blocks.labels(outcome="uncommitted_tail").inc(len(blocks) - len(good))
            if not good:
                continue  # this peer is within a block or two of us; another may be further ahead
            self._next_peer = self._peers.index(peer)  # it served: ask it for the next batch too
            await self._deliver(good)
            return len(good)
        return 0


def check_qc_for(validators: frozenset[bytes], quorum: int) -> CheckQc:
    def check(qc: types_pb2.QuorumCert) -> None:
        try:
            chain.check_qc(qc, validators, quorum)
        except chain.InvalidCertificate as exc:
            raise Rejected("sync_bad_qc", str(exc)) from exc

    return check

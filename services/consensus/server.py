"""The Consensus gRPC servicer and the wiring of one replica process."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from zkpot import grpcutil, refusal
from zkpot import metrics as zmetrics
from zkpot.coin import load_share, share_matches
from zkpot.crypto import KeyPair
from zkpot.errors import StartupError
from zkpot.genesis import Genesis
from zkpot.ratelimit import TokenBuckets
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc

from . import metrics as m
from .checks import Rejected
from .clients import LedgerClient, TxChecker
from .core import Config, Core
from .network import Network

log = logging.getLogger("zkpot.consensus.server")

MAX_TXS_PER_REQUEST = 10_000
MAX_FETCH_BLOCKS = 512
MAX_FETCH_BYTES = 16 * 1024 * 1024  # forward catch-up response (one block may exceed it)

# Per-peer transaction rates (tokens = transactions; a request larger than the burst never passes).
# Gossip from validators carries the whole network's load, so it gets a larger budget.
SUBMIT_TX_RATE, SUBMIT_TX_BURST = 10_000.0, 20_000.0
GOSSIP_TX_RATE, GOSSIP_TX_BURST = 50_000.0, 100_000.0

_SERVICE = "/zkpot.v1.Consensus/"
_ALL = "all"  # the one key of the replica-wide forgery budget
PROPOSAL_OVERHEAD_BYTES = 1024 * 1024
BAD_SIGNATURE_COST = 100  # rate-limit tokens a peer pays per transaction whose signature fails
# All peers together may make this replica fail this many signature checks per second (burst: one
# second's worth). Past it, a peer that never had a transaction admitted gets one transaction per
# request checked (ConsensusServicer._admit): per-peer buckets alone cannot stop a stranger who
# reconnects for a fresh bucket each time (in plaintext a peer is its address), and a connection
# becomes trusted only by a transaction admitted, i.e. validly signed by a genesis member (18.3).
FORGERY_BUDGET_PER_S = 500.0  # ~5 % of a core at ~100 us per check
TRUSTED_PEERS = 10_000  # peers remembered as having had a transaction admitted (LRU)
# ... and per transaction refused as one no rule admits (a stranger's, or malformed): cheap to
# refuse, but a peer sending nothing else is flooding, and pays for the requests it makes us parse
JUNK_COST = 10
_JUNK = frozenset({refusal.UNKNOWN_SIGNER, refusal.MALFORMED, refusal.TOO_LARGE})
# Checked before a SubmitTx/GossipTxs body is parsed: a caller whose bucket is empty is refused for
# the cost of reading its bytes, and every started BYTES_PER_TOKEN of a body costs one token up front
# (an honest batch of a few hundred payloads or one proof: 1 token; a 16 MiB junk body: 256).
BYTES_PER_TOKEN = 64 * 1024
# Methods whose honest requests are small get a cap far below the server-wide 64 MiB
# (Timeout carries a QC: ~100 bytes per validator signature).
REQUEST_LIMITS = {
    _SERVICE + "SendVote": 4 * 1024,
    _SERVICE + "StreamVotes": 4 * 1024,  # per message of the stream
    _SERVICE + "SendTimeout": 128 * 1024,
    _SERVICE + "SendCoinShare": 1024,
    _SERVICE + "Status": 1024,
    _SERVICE + "FetchBlocks": 1024,
}


class ConsensusServicer(consensus_pb2_grpc.ConsensusServicer):
    def __init__(
        self, core: Core, submit_limit: TokenBuckets | None = None, gossip_limit: TokenBuckets | None = None,
        forged_signatures_per_s: float = FORGERY_BUDGET_PER_S,
    ) -> None:
        self.core = core
        self.submit_limit = TokenBuckets(SUBMIT_TX_RATE, SUBMIT_TX_BURST) if submit_limit is None else submit_limit
        self.gossip_limit = TokenBuckets(GOSSIP_TX_RATE, GOSSIP_TX_BURST) if gossip_limit is None else gossip_limit
        self.forgeries = TokenBuckets(forged_signatures_per_s, forged_signatures_per_s, max_keys=1)
        self.trusted: OrderedDict[str, None] = OrderedDict()

    @staticmethod
    def _count_refusal(exc: Rejected, where: str) -> None:
        m.rejected.labels(reason=exc.reason).inc()
        log.info("rejected %s: %s", where, exc)

    async def _reject(self, context: grpc.aio.ServicerContext, exc: Rejected) -> None:
        self._count_refusal(exc, type(self).__name__)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _txs(
        self, request: consensus_pb2.SubmitTxRequest, context: grpc.aio.ServicerContext, limit: TokenBuckets
    ) -> None:
        if not request.txs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "txs is empty")
        if len(request.txs) > MAX_TXS_PER_REQUEST:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_TXS_PER_REQUEST} txs per request")
        peer = grpcutil.peer_id(context)
        if not limit.try_take(peer, len(request.txs) - 1):  # the first was paid before parsing (gate)
            m.rejected.labels(reason="rate_limited").inc()
            wait = limit.retry_after(peer, len(request.txs))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"rate limited: {peer} is over {limit.rate:.0f} txs/s (retry in {wait:.2f}s)")

    async def SubmitTx(
        self, request: consensus_pb2.SubmitTxRequest, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.SubmitTxResponse:
        await self._txs(request, context, self.submit_limit)
        results = await self._admit(list(request.txs), context, self.submit_limit, gossip=True)
        return consensus_pb2.SubmitTxResponse(results=results)

    async def GossipTxs(
        self, request: consensus_pb2.SubmitTxRequest, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.Ack:
        await self._txs(request, context, self.gossip_limit)
        await self._admit(list(request.txs), context, self.gossip_limit, gossip=False)
        return consensus_pb2.Ack()

    async def _admit(self, txs: list, context: grpc.aio.ServicerContext, limit: TokenBuckets,
                     gossip: bool) -> list[consensus_pb2.TxAdmission]:
        """While forged signatures exceed the replica-wide budget, a peer that never had a
        transaction admitted gets ONE transaction of its request checked (the rest: busy): a
        forger then costs at most one failed check per request however often it reconnects, and
        an honest newcomer still gets in with its first transaction and is trusted from then on."""
        shed: list = []
        if len(txs) > 1 and grpcutil.peer_id(context) not in self.trusted and self.forgeries.retry_after(_ALL) > 0:
            txs, shed = txs[:1], txs[1:]
            m.rejected_txs.labels(reason=refusal.label(refusal.BUSY)).inc(len(shed))
        results = await self.core.admission.submit(txs, gossip=gossip)
        self._charge_forgeries(context, limit, results)
        busy = (f"forged signatures are arriving; a peer without an admitted transaction "
                f"gets one checked per request (retry in {self.forgeries.retry_after(_ALL):.2f}s)")
        return results + [consensus_pb2.TxAdmission(reason=refusal.BUSY, detail=busy) for _ in shed]

    def gate(self, limit_name: str) -> grpcutil.Gate:
        """The pre-parse check of SubmitTx (limit_name "submit") or GossipTxs ("gossip")."""

        def check(context: grpc.aio.ServicerContext, size: int) -> str | None:
            limit = self.submit_limit if limit_name == "submit" else self.gossip_limit
            peer = grpcutil.peer_id(context)
            # one token per request (an empty one too: nothing is free) plus its size; _txs then takes
            # one per transaction after the first
            if limit.try_take(peer, 1 + size // BYTES_PER_TOKEN):
                return None
            m.rejected.labels(reason="rate_limited").inc()
            return f"rate limited: {peer} is over {limit.rate:.0f} txs/s (retry in {limit.retry_after(peer):.2f}s)"

        return check

    def _charge_forgeries(self, context: grpc.aio.ServicerContext, limit: TokenBuckets,
                          results: list[consensus_pb2.TxAdmission]) -> None:
        """A signature that fails to verify cost this replica an ed25519 check and bought nothing:
        the peer pays BAD_SIGNATURE_COST tokens for it, so a peer forging signatures (under a
        member's key, which passes every cheaper check) is slowed to rate / BAD_SIGNATURE_COST of
        them per second instead of the full transaction rate; junk pays JUNK_COST (issue 18.3,
        bench/flood.py)."""
        peer = grpcutil.peer_id(context)
        forged = sum(1 for r in results if r.reason == refusal.BAD_SIGNATURE)
        cost = forged * BAD_SIGNATURE_COST + JUNK_COST * sum(1 for r in results if r.reason in _JUNK)
        if cost:
            limit.charge(peer, cost)
        if forged:
            self.forgeries.charge(_ALL, forged)
        if any(r.admitted for r in results):
            self.trusted[peer] = None  # proved it holds a member's key (or relays one's transactions)
            self.trusted.move_to_end(peer)
            while len(self.trusted) > TRUSTED_PEERS:
                self.trusted.popitem(last=False)

    async def Propose(
        self, request: consensus_pb2.Proposal, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.Ack:
        if not request.HasField("block"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "proposal without block")
        rejected = await asyncio.shield(self.core.process_proposal(request))
        if rejected is not None:  # already counted and logged by the core
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(rejected))
        return consensus_pb2.Ack()

    async def SendVote(
        self, request: consensus_pb2.Vote, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.Ack:
        try:
            await self.core.on_vote(request)
        except Rejected as exc:
            await self._reject(context, exc)
        return consensus_pb2.Ack()

    async def StreamVotes(
        self, request_iterator: AsyncIterator[consensus_pb2.Vote], context: grpc.aio.ServicerContext
    ) -> consensus_pb2.Ack:
        """A peer's votes, in order: each handled as SendVote handles it. A refused vote is counted
        and skipped (as a refused SendVote leaves the peer's channel usable): the stream goes on."""
        async for vote in request_iterator:
            try:
                await self.core.on_vote(vote)
            except Rejected as exc:
                self._count_refusal(exc, "a vote on StreamVotes")
            except Exception:  # a bug must not cost the peer's later votes (a unary call loses one)
                log.exception("a vote on StreamVotes failed")
        return consensus_pb2.Ack()

    async def SendTimeout(
        self, request: consensus_pb2.Timeout, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.Ack:
        try:
            await self.core.on_timeout(request)
        except Rejected as exc:
            await self._reject(context, exc)
        return consensus_pb2.Ack()

    async def SendCoinShare(
        self, request: consensus_pb2.CoinShare, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.Ack:
        try:
            await self.core.on_coin_share(request)
        except Rejected as exc:
            await self._reject(context, exc)
        return consensus_pb2.Ack()

    async def FetchBlocks(
        self, request: consensus_pb2.FetchBlocksRequest, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.FetchBlocksResponse:
        limit = min(request.max_blocks or 64, MAX_FETCH_BLOCKS)
        if not request.block_hash and request.from_height:
            max_bytes = min(request.max_bytes or MAX_FETCH_BYTES, MAX_FETCH_BYTES)
            blocks, qcs = await self.core.helper.fetch_range(request.from_height, limit, max_bytes)
            if not blocks:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no committed block at height {request.from_height}")
            return consensus_pb2.FetchBlocksResponse(blocks=blocks, qcs=qcs)
        if request.from_height:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "set block_hash or from_height, not both")
        if len(request.block_hash) != 32:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "block_hash must be 32 bytes (or empty with from_height >= 1)")
        blocks = await self.core.helper.fetch_blocks(request.block_hash, limit)
        if not blocks:
            await context.abort(grpc.StatusCode.NOT_FOUND, "block unknown to this replica")
        return consensus_pb2.FetchBlocksResponse(blocks=blocks)

    async def Status(
        self, request: consensus_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> consensus_pb2.StatusResponse:
        return self.core.status()


@dataclass(frozen=True)
class ServeArgs:
    genesis: Path
    key: Path
    node: str
    listen: str
    ledger: str
    verifier: str | None
    peers: list[tuple[str, str]]  # (name, target)
    metrics_port: int | None
    config: Config
    submit_tx_rate: float = SUBMIT_TX_RATE    # per peer, txs/s (SubmitTx)
    submit_tx_burst: float = SUBMIT_TX_BURST
    gossip_tx_rate: float = GOSSIP_TX_RATE    # per peer, txs/s (GossipTxs)
    forged_signatures_per_s: float = FORGERY_BUDGET_PER_S  # all peers together
    coin_share: Path | None = None  # this validator's share of the fallback's coin (genesis deals one)


def peer_map(genesis: Genesis, me: bytes, peers: list[tuple[str, str]]) -> dict[bytes, tuple[str, str]]:
    by_name = {v.name: v.public_key for v in genesis.validators}
    out: dict[bytes, tuple[str, str]] = {}
    for name, target in peers:
        if name not in by_name:
            raise ValueError(f"peer {name!r} is not a genesis validator ({', '.join(sorted(by_name))})")
        if by_name[name] != me:
            out[by_name[name]] = (name, target)
    return out


async def serve(args: ServeArgs) -> None:
    genesis = Genesis.load(args.genesis)
    key = KeyPair.load(args.key)
    zmetrics.init("consensus", args.node, args.metrics_port)
    ledger = LedgerClient(args.ledger)
    network = Network(peer_map(genesis, key.public, args.peers))
    checker = TxChecker(args.verifier)
    share = None
    if genesis.coin is not None:
        if args.coin_share is None:
            raise StartupError("genesis deals a common coin (the asynchronous fallback): pass --coin-share FILE")
        share = load_share(args.coin_share)
        order = [v.public_key for v in genesis.validators]
        index = order.index(key.public) if key.public in order else -1
        if not share_matches(genesis.coin, index, share):
            raise StartupError(f"coin share {args.coin_share}: not the share genesis lists for this validator's key")
    core = Core(args.config, genesis, key, ledger, network, checker, coin_share=share)
    await core.start()

    async def on_stop() -> None:
        await core.stop()
        await network.close()
        await ledger.close()
        await checker.close()

    servicer = ConsensusServicer(
        core,
        TokenBuckets(args.submit_tx_rate, args.submit_tx_burst),  # a request over the burst never passes
        TokenBuckets(args.gossip_tx_rate, max(GOSSIP_TX_BURST, args.gossip_tx_rate)),
        args.forged_signatures_per_s,
    )

    def register(server: grpc.aio.Server) -> str:
        consensus_pb2_grpc.add_ConsensusServicer_to_server(servicer, server)
        return consensus_pb2.DESCRIPTOR.services_by_name["Consensus"].full_name

    # a proposal holds at most max_block_bytes of transactions plus header, QC and TC
    # transactions arrive in batches of at most one block's worth: a larger request (or a single
    # transaction over the block limit) could never be committed, so it is refused before parsing
    cap = args.config.max_block_bytes + PROPOSAL_OVERHEAD_BYTES
    limits = {**REQUEST_LIMITS, _SERVICE + "Propose": cap, _SERVICE + "SubmitTx": cap, _SERVICE + "GossipTxs": cap}
    gates = {_SERVICE + "SubmitTx": servicer.gate("submit"), _SERVICE + "GossipTxs": servicer.gate("gossip")}
    await grpcutil.serve(args.listen, [register], on_stop=on_stop, request_limits=limits, max_receive_bytes=cap,
                         gates=gates)

"""Replica-to-replica sends: one grpc.aio channel per peer, fire-and-forget with deadlines.

A send never blocks the caller (the core loop): it is a task whose failure is logged and
counted. Channels reconnect quickly so a restarted peer is back within a second or two.

Votes, the most frequent message (every replica to every replica, every view), travel on one
long-lived StreamVotes stream per peer: a unary call costs ~3x the CPU of a stream message
(bench/peer_transport.py), about half of an idle view's CPU went to such calls. A peer's queue holds
at most VOTE_QUEUE votes; past that the oldest is dropped (a vote for a past view is worthless, and
a peer that is paused or gone must not grow it). A broken stream is reopened; a peer that does not
serve StreamVotes (an older version) gets unary SendVote calls instead.

Transaction gossip travels on its own connection per peer, and at most GOSSIP_INFLIGHT_BYTES of
it is in flight to a peer at a time (more is dropped: gossip is best-effort, the mempool's
re-gossip and the leaders' proposals carry transactions anyway). So bulk transactions never
queue votes, proposals and timeouts behind them in one HTTP/2 connection's flow control, and a
flood cannot pile up unbounded send tasks (issue 18.3).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from zkpot import grpcutil
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc

from . import metrics as m

log = logging.getLogger("zkpot.consensus.network")

SEND_DEADLINE_S = 5.0
VOTE_QUEUE = 256  # votes waiting for a peer's stream (a few views' worth even under the fallback)
VOTE_STREAM_RETRY_S = 0.1  # pause before reopening a broken vote stream
GOSSIP_INFLIGHT_BYTES = 16 * 1024 * 1024
FETCH_DEADLINE_S = 10.0
CHANNEL_OPTIONS = grpcutil.FAST_RECONNECT_OPTIONS


@dataclass
class Peer:
    name: str
    key: bytes
    target: str
    channel: grpc.aio.Channel
    stub: consensus_pb2_grpc.ConsensusStub
    gossip_channel: grpc.aio.Channel
    gossip_stub: consensus_pb2_grpc.ConsensusStub
    gossip_inflight: int = 0
    votes: asyncio.Queue[consensus_pb2.Vote | None] | None = None  # its StreamVotes queue (opened by the first vote)
    unary_votes: bool = False  # the peer does not serve StreamVotes: one SendVote per vote


def parse_peer(spec: str) -> tuple[str, str]:
    """'NAME@HOST:PORT' -> (name, target)."""
    name, sep, target = spec.partition("@")
    if not sep or not name or ":" not in target:
        raise ValueError(f"peer {spec!r} is not NAME@HOST:PORT")
    return name, target


class Network:
    def __init__(self, peers: dict[bytes, tuple[str, str]]) -> None:
        """`peers`: validator key -> (name, target), without this replica."""
        self.peers: dict[bytes, Peer] = {}
        for key, (name, target) in peers.items():
            ch = grpcutil.channel(target, options=CHANNEL_OPTIONS)  # mutual TLS when configured
            # a second connection for bulk gossip (a local subchannel pool: not shared with `ch`)
            gch = grpcutil.channel(target, options=[*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)])
            self.peers[key] = Peer(name, key, target, ch, consensus_pb2_grpc.ConsensusStub(ch), gch,
                                   consensus_pb2_grpc.ConsensusStub(gch))
        self._tasks: set[asyncio.Task] = set()

    def _fire(self, rpc: str, peer: Peer, call: Callable[[], Awaitable[object]]) -> None:
        async def run() -> None:
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                m.send_failures.labels(rpc=rpc).inc()
                log.debug("%s to %s failed: %s", rpc, peer.name, exc.code().name)
            except Exception:  # never let a send kill the loop
                m.send_failures.labels(rpc=rpc).inc()
                log.exception("%s to %s failed", rpc, peer.name)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def broadcast_vote(self, vote: consensus_pb2.Vote) -> None:
        for peer in self.peers.values():
            if peer.unary_votes:
                self._send_vote_unary(peer, vote)
                continue
            if peer.votes is None:
                peer.votes = asyncio.Queue(maxsize=VOTE_QUEUE)
                task = asyncio.get_running_loop().create_task(self._stream_votes(peer, peer.votes))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if peer.votes.full():
                peer.votes.get_nowait()
                m.send_failures.labels(rpc="StreamVotes").inc()
            peer.votes.put_nowait(vote)

    def _send_vote_unary(self, peer: Peer, vote: consensus_pb2.Vote) -> None:
        self._fire("SendVote", peer, lambda: peer.stub.SendVote(vote, timeout=SEND_DEADLINE_S))

    async def _stream_votes(self, peer: Peer, queue: asyncio.Queue[consensus_pb2.Vote | None]) -> None:
        """Keep one StreamVotes call open to `peer` while there are votes for it. Written with the
        call's own write(), not a request iterator: once a call has failed nothing of it is left
        waiting on the queue (an iterator's reader could take a vote from the next call's share)."""
        while True:
            vote = await queue.get()  # a stream is opened when there is a vote to send
            if vote is None:
                continue  # an earlier call's end, seen after it
            # what this call took from the queue: resent as SendVote calls if the peer turns out not
            # to serve StreamVotes (it refuses at once, but writes may have gone out before)
            taken: deque[consensus_pb2.Vote] = deque(maxlen=VOTE_QUEUE)
            call = peer.stub.StreamVotes()
            ended = asyncio.ensure_future(call)
            # the peer may end the call while the queue is empty: a None in the queue says so
            ended.add_done_callback(lambda _: queue.full() or queue.put_nowait(None))
            try:
                while vote is not None:
                    taken.append(vote)
                    await call.write(vote)
                    vote = await queue.get()
                await ended  # its error, if any; a call the peer closed cleanly is reopened
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                m.send_failures.labels(rpc="StreamVotes").inc()
                # a write that finds the call over fails with INTERNAL ("execute_batch"): the
                # call's own status says why it ended
                await asyncio.wait((ended,), timeout=1.0)
                final = ended.exception() if ended.done() and not ended.cancelled() else exc
                code = final.code() if isinstance(final, grpc.aio.AioRpcError) else grpc.StatusCode.UNKNOWN
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("%s does not serve StreamVotes: its votes go as SendVote calls", peer.name)
                    peer.unary_votes = True
                    for v in [*taken, *(queue.get_nowait() for _ in range(queue.qsize()))]:
                        if v is not None:
                            self._send_vote_unary(peer, v)
                    return
                log.debug("StreamVotes to %s ended: %s", peer.name, code.name)
            except Exception:  # never let a send kill the loop; the stream is reopened
                m.send_failures.labels(rpc="StreamVotes").inc()
                log.exception("StreamVotes to %s failed", peer.name)
            finally:
                call.cancel()
                ended.cancel()
            await asyncio.sleep(VOTE_STREAM_RETRY_S)

    def broadcast_proposal(self, proposal: consensus_pb2.Proposal) -> None:
        for peer in self.peers.values():
            self._fire("Propose", peer, lambda p=peer: p.stub.Propose(proposal, timeout=SEND_DEADLINE_S))

    def broadcast_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        for peer in self.peers.values():
            self._fire("SendTimeout", peer, lambda p=peer: p.stub.SendTimeout(timeout, timeout=SEND_DEADLINE_S))

    def broadcast_coin_share(self, share: consensus_pb2.CoinShare) -> None:
        for peer in self.peers.values():
            self._fire("SendCoinShare", peer, lambda p=peer: p.stub.SendCoinShare(share, timeout=SEND_DEADLINE_S))

    def send_timeout(self, key: bytes, timeout: consensus_pb2.Timeout) -> None:
        peer = self.peers.get(key)
        if peer is not None:
            self._fire("SendTimeout", peer, lambda: peer.stub.SendTimeout(timeout, timeout=SEND_DEADLINE_S))

    def gossip(self, req: consensus_pb2.SubmitTxRequest) -> None:
        size = req.ByteSize()
        for peer in self.peers.values():
            if peer.gossip_inflight + size > GOSSIP_INFLIGHT_BYTES and peer.gossip_inflight:
                m.gossip_dropped.inc(len(req.txs))
                continue
            peer.gossip_inflight += size

            async def send(p: Peer = peer) -> None:
                try:
                    await p.gossip_stub.GossipTxs(req, timeout=SEND_DEADLINE_S * 6)
                finally:
                    p.gossip_inflight -= size

            self._fire("GossipTxs", peer, send)

    async def fetch_blocks(self, key: bytes, block_hash: bytes, max_blocks: int) -> list:
        peer = self.peers[key]
        resp = await peer.stub.FetchBlocks(
            consensus_pb2.FetchBlocksRequest(block_hash=block_hash, max_blocks=max_blocks), timeout=FETCH_DEADLINE_S
        )
        return list(resp.blocks)

    async def fetch_range(
        self, key: bytes, from_height: int, max_blocks: int, max_bytes: int
    ) -> tuple[list, list]:
        """Committed blocks from `from_height` upward, with their QCs (forward catch-up)."""
        peer = self.peers[key]
        resp = await peer.stub.FetchBlocks(
            consensus_pb2.FetchBlocksRequest(from_height=from_height, max_blocks=max_blocks, max_bytes=max_bytes),
            timeout=FETCH_DEADLINE_S,
        )
        return list(resp.blocks), list(resp.qcs)

    async def status(self, key: bytes) -> consensus_pb2.StatusResponse:
        return await self.peers[key].stub.Status(consensus_pb2.StatusRequest(), timeout=SEND_DEADLINE_S)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for peer in self.peers.values():
            await peer.channel.close()
            await peer.gossip_channel.close()

"""The sending side of StreamVotes (services/consensus/network.py), against real grpc.aio servers:
a peer's votes arrive on one stream, in order; a peer that does not serve StreamVotes (an older
version) gets them as SendVote calls; a peer that restarts gets the votes sent after it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from services.consensus.network import Network
from zkpot.crypto import KeyPair
from zkpot.ports import free_port
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc

KEY = KeyPair.from_seed(b"\x05" * 32)


class Recorder(consensus_pb2_grpc.ConsensusServicer):
    """A peer that records the votes it gets and how; `streams=False`: an older version without StreamVotes."""

    def __init__(self, streams: bool) -> None:
        self.got: list[tuple[str, int]] = []
        self.streams = streams

    async def SendVote(self, request: consensus_pb2.Vote, context: grpc.aio.ServicerContext) -> consensus_pb2.Ack:
        self.got.append(("unary", request.view))
        return consensus_pb2.Ack()

    async def StreamVotes(
        self, request_iterator: AsyncIterator[consensus_pb2.Vote], context: grpc.aio.ServicerContext
    ) -> consensus_pb2.Ack:
        async for vote in request_iterator:
            self.got.append(("stream", vote.view))
        return consensus_pb2.Ack()


async def _serve(recorder: Recorder, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    if recorder.streams:
        consensus_pb2_grpc.add_ConsensusServicer_to_server(recorder, server)
    else:  # an older replica: SendVote is served, StreamVotes is not there at all
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("zkpot.v1.Consensus", {
            "SendVote": grpc.unary_unary_rpc_method_handler(
                recorder.SendVote, consensus_pb2.Vote.FromString, consensus_pb2.Ack.SerializeToString),
        }),))  # fmt: skip
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _vote(view: int) -> consensus_pb2.Vote:
    return consensus_pb2.Vote(block_hash=bytes([view % 256]) * 32, view=view, height=view)


@pytest.mark.parametrize("streams", [True, False], ids=["stream", "older_peer"])
def test_votes_reach_a_peer_in_order(streams: bool) -> None:
    async def main() -> None:
        port = free_port()
        recorder = Recorder(streams)
        server = await _serve(recorder, port)
        net = Network({KEY.public: ("peer", f"127.0.0.1:{port}")})
        try:
            for view in range(1, 51):
                net.broadcast_vote(_vote(view))
            await _until(lambda: len(recorder.got) == 50)
            kinds = {kind for kind, _ in recorder.got}
            if streams:
                assert kinds == {"stream"} and [v for _, v in recorder.got] == list(range(1, 51))
            else:  # every vote, the first included (it opened the refused stream), as SendVote calls
                assert kinds == {"unary"} and sorted(v for _, v in recorder.got) == list(range(1, 51))
        finally:
            await net.close()
            await server.stop(None)

    asyncio.run(main())


def test_a_restarted_peer_gets_the_votes_sent_after_it_is_back() -> None:
    async def main() -> None:
        port = free_port()
        first = Recorder(True)
        server = await _serve(first, port)
        net = Network({KEY.public: ("peer", f"127.0.0.1:{port}")})
        try:
            net.broadcast_vote(_vote(1))
            await _until(lambda: first.got == [("stream", 1)])
            await server.stop(None)  # the peer goes away with the stream open
            again = Recorder(True)
            server = await _serve(again, port)
            view = 2
            # votes sent while the stream breaks and reopens may be lost, as unary sends to a
            # restarting peer are; the ones after it must arrive
            while not again.got:
                net.broadcast_vote(_vote(view))
                view += 1
                await asyncio.sleep(0.05)
            last = view
            net.broadcast_vote(_vote(last))
            await _until(lambda: again.got[-1] == ("stream", last))
        finally:
            await net.close()
            await server.stop(None)

    asyncio.run(main())

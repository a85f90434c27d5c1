"""What a replica's peer messages cost in grpc.aio: a unary call each, or one long-lived stream (issue 22).

A replica sends and receives ~10 small messages per view (its vote to every peer, the proposal, the
append), each a unary call today. This bench times, between two real processes on this machine,
the CPU (client + server, from /proc) per 300-byte message sent as unary calls three at a time (as
a vote goes to three peers) against the same messages written to one client stream, alternating
the two arms. The handlers do nothing, so the figures are the transport's own cost.

    python bench/peer_transport.py [--messages 5000] [--rounds 2]

Ends with one JSON line: stream_vs_unary is the stream's CPU per message over the unary call's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_stats import process_cpu_s

MESSAGE = os.urandom(300)  # about a vote with its signature


def _same(b: bytes) -> bytes:
    return b


async def serve() -> None:
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        async for _ in requests:
            pass
        return b""

    handler = grpc.method_handlers_generic_handler("zkpot.bench.Peer", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, _same, _same),
        "Stream": grpc.stream_unary_rpc_method_handler(stream, _same, _same),
    })  # fmt: skip
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def measure(port: int, server_pid: int, messages: int, rounds: int) -> dict[str, float]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    unary = channel.unary_unary("/zkpot.bench.Peer/Unary", _same, _same)
    stream = channel.stream_unary("/zkpot.bench.Peer/Stream", _same, _same)

    async def by_unary() -> None:
        for _ in range(messages // 3):
            await asyncio.gather(*(unary(MESSAGE, timeout=10) for _ in range(3)))

    async def by_stream() -> None:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(messages // 3 * 3):
                yield MESSAGE

        await stream(body(), timeout=120)

    cpu = {"unary": 0.0, "stream": 0.0}
    for _ in range(rounds):
        for arm, run in (("unary", by_unary), ("stream", by_stream)):
            client0, server0 = time.process_time(), process_cpu_s(server_pid)
            await run()
            cpu[arm] += time.process_time() - client0 + process_cpu_s(server_pid) - server0
    await channel.close()
    sent = rounds * (messages // 3 * 3)
    return {f"{arm}_cpu_us_per_msg": round(1e6 * s / sent, 1) for arm, s in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5_000, help="messages per arm and round")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two arms")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: the server process
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        fig = asyncio.run(measure(port, server.pid, args.messages, args.rounds))
    finally:
        server.kill()
        server.wait()
    fig["stream_vs_unary"] = round(fig["stream_cpu_us_per_msg"] / fig["unary_cpu_us_per_msg"], 3)
    print(f"unary call: {fig['unary_cpu_us_per_msg']:.0f} us of CPU per message (client + server); "
          f"one stream: {fig['stream_cpu_us_per_msg']:.0f} us = {fig['stream_vs_unary']:.2f}x", file=sys.stderr)
    print(json.dumps({"bench": "peer_transport", "messages": args.messages, "rounds": args.rounds, **fig}))


if __name__ == "__main__":
    main()

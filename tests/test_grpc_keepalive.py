"""A long call that streams nothing must survive its client's keepalive pings.

Found running examples/breast-cancer on the devnet: a participant's ProveRound (six shard proofs,
145 s) failed UNAVAILABLE 'Too many pings' and was proven again from the start, because gRPC's
server default accepts one ping per 5 min while no data flows, and our clients ping every 30 s.
Scaled down here (client pings every 0.5 s, calls of 8 s) against a real server process: with
gRPC's default server options the call is cut (at ~4 s), with zkpot's (grpcutil.SERVER_OPTIONS,
scaled by the same rule) it completes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest

from zkpot.grpcutil import server_keepalive_options
from zkpot.ports import free_port

PING_MS = 500
SERVER = r'''
import asyncio, json, sys
import grpc

async def main(port, options):
    async def slow(request, context):
        await asyncio.sleep(float(sys.argv[3]))  # a long computation, nothing sent meanwhile
        return b"done"
    handler = grpc.method_handlers_generic_handler("test.Slow", {
        "Call": grpc.unary_unary_rpc_method_handler(slow)})
    server = grpc.aio.server(options=[tuple(o) for o in options])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()

asyncio.run(main(int(sys.argv[1]), json.loads(sys.argv[2])))
'''


def _call_through(options: list[tuple[str, int]], seconds: float = 8.0) -> bytes:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), json.dumps(options), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        client_options = [("grpc.keepalive_time_ms", PING_MS), ("grpc.http2.max_pings_without_data", 0),
                          ("grpc.keepalive_permit_without_calls", 1)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=client_options) as ch:
            call = ch.unary_unary("/test.Slow/Call")
            t0 = time.monotonic()
            out = call(b"x", timeout=30)
            assert time.monotonic() - t0 >= seconds - 0.5
            return out
    finally:
        proc.kill()
        proc.wait()


def test_grpcs_default_server_cuts_a_long_call_under_client_pings() -> None:
    """The control: what happened to the participant's ProveRound."""
    with pytest.raises(grpc.RpcError) as err:
        _call_through([])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "ping" in (err.value.details() or "").lower()


def test_zkpots_server_options_keep_a_long_call_alive() -> None:
    assert _call_through(server_keepalive_options(PING_MS)) == b"done"

"""gRPC conventions shared by every service: limits, health, reflection, shutdown, channels."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

# Proofs with their models are large; set limits on purpose rather than by default (4 MiB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]

log = logging.getLogger("zkpot.grpc")

Registrar = Callable[[grpc.aio.Server], str]  # adds a servicer, returns its full service name


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


async def serve(
    listen: str,
    registrars: Sequence[Registrar],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    grace_s: float = 3.0,
) -> None:
    """Run a grpc.aio server with health + reflection until SIGTERM/SIGINT, then stop gracefully."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    names = [register(server) for register in registrars]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {listen}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s", ", ".join(names), listen)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace_s)
    if on_stop is not None:
        await on_stop()


async def wait_healthy(target: str, timeout_s: float = 60.0, service: str = "") -> None:
    """Poll the standard health service until SERVING (raises TimeoutError)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{target} not healthy after {timeout_s:.0f}s")
            await asyncio.sleep(0.2)


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """Abort an RPC with a clear status (raises)."""
    await context.abort(code, message)

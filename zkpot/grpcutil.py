"""gRPC conventions shared by every service: limits, health, reflection, shutdown, channels."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from zkpot.tls import ENV_TLS_DIR, TlsMaterial

# Proofs with their models are large; set limits on purpose rather than by default (4 MiB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
KEEPALIVE_MS = 30_000  # clients ping an idle connection this often (dead peers show within a minute)
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
]


def server_keepalive_options(client_keepalive_ms: int = KEEPALIVE_MS) -> list[tuple[str, int]]:
    """What a server must accept of its clients' keepalive pings. gRPC's server default takes one ping
    per 5 min while no data flows and sends GOAWAY "too_many_pings" after 2 early ones, so a call
    that streams nothing for ~90 s under 30 s client pings was cut (measured: a participant's
    ProveRound of 145 s, six shard proofs, failed UNAVAILABLE 'Too many pings' and was proven
    again from the start; tests/test_shared.py reproduces it with gRPC's defaults)."""
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", client_keepalive_ms * 4 // 5),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
# For a peer that is expected back soon (a restarted replica or ledger): reconnect within ~0.2-2 s
# instead of gRPC's default backoff (1 s growing to 120 s)
FAST_RECONNECT_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# For a server that is starting (wait_healthy): with the default backoff the channel sits out 1, 1.6,
# 2.6 ... s between attempts, so a server that came up after 20 s was seen 4.8 s late (35 s: 3.9 s;
# a devnet's verifiers take 25-35 s), and each stage of a devnet's start-up waits on the one before.
# An attempt on a port nobody listens on yet is cheap: try every 0.2-0.5 s (seen 0.4-0.5 s late)
STARTING_SERVER_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 500),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    *server_keepalive_options(),
]

log = logging.getLogger("zkpot.grpc")

Registrar = Callable[[grpc.aio.Server], str]  # adds a servicer, returns its full service name


# Process-wide TLS material: set once at start-up (configure_tls) from --tls-dir / $ZKPOT_TLS_DIR.
# None: plaintext (the devnet default). Set: every server requires client certificates from the
# same CA (mutual TLS) and every channel() presents this node's certificate.
_tls: TlsMaterial | None = None
# Optional plaintext listener with the health service only (Kubernetes' gRPC probes cannot present
# a client certificate): set from --health-listen / $ZKPOT_HEALTH_LISTEN.
_health_listen: str | None = None
ENV_HEALTH_LISTEN = "ZKPOT_HEALTH_LISTEN"


def configure_health_listen(listen: str | None) -> None:
    """Also serve the health service alone, in plaintext, on `listen` (None: not)."""
    global _health_listen
    _health_listen = listen or None


def configure_tls(directory: Path | str | None) -> TlsMaterial | None:
    """Turn mutual TLS on for this process (None or "": off). Returns the loaded material."""
    global _tls
    _tls = TlsMaterial.load(Path(directory)) if directory else None
    if _tls is not None:
        log.info("mutual TLS on (%s, CN=%s)", directory, _tls.common_name())
    return _tls


def channel_credentials() -> grpc.ChannelCredentials | None:
    """This process's mutual-TLS client credentials (None: plaintext), for a synchronous channel."""
    return _tls.channel_credentials() if _tls is not None else None


def add_tls_args(parser: argparse.ArgumentParser) -> None:
    """--tls-dir on a command that serves or calls gRPC (zkpot.cli applies it before the command runs)."""
    parser.add_argument(
        "--tls-dir", type=Path, default=os.environ.get(ENV_TLS_DIR) or None,
        help=f"mutual TLS: directory with tls.crt, tls.key, ca.crt (`zkpot tls issue`; default ${ENV_TLS_DIR}; "
             "unset: plaintext)",
    )
    parser.add_argument(
        "--health-listen", default=os.environ.get(ENV_HEALTH_LISTEN) or None, metavar="HOST:PORT",
        help="servers: also serve the gRPC health service alone, in plaintext, here (probes that cannot do mTLS; "
             f"default ${ENV_HEALTH_LISTEN})",
    )


def channel(
    target: str, options: Sequence[tuple[str, object]] | None = None, tls: TlsMaterial | None = None
) -> grpc.aio.Channel:
    """A client channel: TLS with this node's certificate when configured (or given), else plaintext."""
    opts = list(CHANNEL_OPTIONS if options is None else options)
    material = tls or _tls
    if material is not None:
        return grpc.aio.secure_channel(target, material.channel_credentials(), options=opts)
    return grpc.aio.insecure_channel(target, options=opts)


def peer_id(context: grpc.aio.ServicerContext) -> str:
    """Who is calling: the TLS identity (certificate CN) when mutual TLS is on, else the peer address.

    Without TLS the address includes the client's port, so a client that reconnects gets a new
    identity: per-peer limits are only as strong as the transport's authentication.
    """
    try:
        auth = context.auth_context()
    except Exception:
        auth = {}
    cn = auth.get("x509_common_name") if auth else None
    if cn:
        return "tls:" + cn[0].decode(errors="replace")
    return context.peer() or "unknown"


def admin_refusal(context: grpc.aio.ServicerContext, admins: frozenset[str]) -> str | None:
    """Why the caller may not use an admin RPC (None: it may).

    With mutual TLS the caller's certificate CN must be one of `admins` (a participant's or another
    organisation's certificate is not enough); in plaintext there is no identity, so only callers
    on this host (loopback) are admitted."""
    who = peer_id(context)
    if who.startswith("tls:"):
        return None if who[4:] in admins else f"{who} is not an admin of this service (admins: {sorted(admins)})"
    if who.startswith(("ipv4:127.", "ipv6:[::1]", "unix:")):
        return None
    return f"{who}: admin RPCs over plaintext are served to loopback callers only"


class _Refused:
    """Stands in for a request that must not reach the handler (too large, unparsable)."""

    __slots__ = ("code", "message")

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message


class _Raw:
    """A gated request's bytes, parsed only after its gate passed (RequestGuard `gates`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


# A pre-parse gate: (call context, request bytes) -> why it is refused (RESOURCE_EXHAUSTED), or None.
Gate = Callable[[grpc.aio.ServicerContext, int], "str | None"]


class RequestRefused(Exception):
    """Raised by a guarded request stream at its first refused message. The guard turns it into the
    call's status in the handler's own task (aborting from another task races the handler's sends)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RequestGuard(grpc.aio.ServerInterceptor):
    """Checks every unary request body before a handler sees it.

    - Size: per-method caps on the raw bytes, checked before parsing. The server-wide limit
      (MAX_MESSAGE_BYTES) has to admit proofs; methods whose honest requests are small (votes,
      status, heads) get a much lower cap so a stranger cannot make the server parse megabytes
      where a few hundred bytes are expected. Over the cap: RESOURCE_EXHAUSTED.
    - Parsing: grpc.aio answers an unparsable body with UNKNOWN and logs a traceback per request
      (a free way to flood logs); here it is INVALID_ARGUMENT with one debug line.
    - Gates (unary methods): a per-caller check that runs before the body is parsed (e.g. a
      rate limit), so a caller over its budget costs the server only the transport's read.
    """

    def __init__(self, limits: Mapping[str, int] | None = None, gates: Mapping[str, Gate] | None = None) -> None:
        self.limits = dict(limits or {})
        self.gates = dict(gates or {})
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, details):  # noqa: ANN001, ANN201 - grpc signature
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None:
            return handler
        wrapped = self._wrap(method, handler)
        if len(self._wrapped) < 1024:  # handlers are static per method; bound the cache anyway
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        limit = self.limits.get(method)
        deserialize = handler.request_deserializer

        def checked(raw: bytes) -> object:
            if limit is not None and len(raw) > limit:
                return _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{method}: request of {len(raw)} bytes exceeds this method's {limit}")
            if deserialize is None:
                return raw
            try:
                return deserialize(raw)
            except Exception as exc:
                log.debug("unparsable request to %s: %s", method, exc)
                return _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{method}: request does not parse: {exc}")

        if handler.request_streaming:
            return self._wrap_request_stream(handler, checked)
        gate = self.gates.get(method)
        if gate is not None and not handler.response_streaming:
            return self._wrap_gated(method, handler, limit, gate)
        if handler.response_streaming:
            inner_stream = handler.unary_stream
            if inspect.isasyncgenfunction(inner_stream):  # yields its responses

                async def stream_behavior(request, context):  # noqa: ANN001
                    if isinstance(request, _Refused):
                        await context.abort(request.code, request.message)
                    async for item in inner_stream(request, context):
                        yield item

            elif inspect.iscoroutinefunction(inner_stream):  # writes with context.write (e.g. Health.Watch)

                async def stream_behavior(request, context):  # noqa: ANN001
                    if isinstance(request, _Refused):
                        await context.abort(request.code, request.message)
                    await inner_stream(request, context)

            else:
                return handler  # a synchronous generator: leave it to grpc's own handling
            return grpc.unary_stream_rpc_method_handler(stream_behavior, checked, handler.response_serializer)
        inner = handler.unary_unary

        async def behavior(request, context):  # noqa: ANN001
            if isinstance(request, _Refused):
                await context.abort(request.code, request.message)
            result = inner(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(behavior, checked, handler.response_serializer)

    @staticmethod
    def _wrap_gated(method: str, handler: grpc.RpcMethodHandler, limit: int | None, gate: Gate
                    ) -> grpc.RpcMethodHandler:
        """Unary: size cap, then the gate, then parsing (in that order: each is dearer than the last)."""
        deserialize, inner = handler.request_deserializer, handler.unary_unary

        def raw(data: bytes) -> object:
            if limit is not None and len(data) > limit:
                return _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{method}: request of {len(data)} bytes exceeds this method's {limit}")
            return _Raw(data)

        async def behavior(request, context):  # noqa: ANN001
            if isinstance(request, _Refused):
                await context.abort(request.code, request.message)
            refusal = gate(context, len(request.data))
            if refusal is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            try:
                parsed = deserialize(request.data) if deserialize is not None else request.data
            except Exception as exc:
                log.debug("unparsable request to %s: %s", method, exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method}: request does not parse: {exc}")
            result = inner(parsed, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(behavior, raw, handler.response_serializer)

    @staticmethod
    def _wrap_request_stream(handler: grpc.RpcMethodHandler, checked: Callable[[bytes], object]
                             ) -> grpc.RpcMethodHandler:
        """Client streams: the handler's request iterator raises RequestRefused at the first refused
        message, and the call ends with that message's status.
        (A handler that reads with context.read() instead of iterating is left unguarded.)"""

        async def guarded(requests):  # noqa: ANN001
            async for item in requests:
                if isinstance(item, _Refused):
                    raise RequestRefused(item.code, item.message)
                yield item

        if handler.response_streaming:
            inner = handler.stream_stream
            if not inspect.isasyncgenfunction(inner):
                return handler

            async def bidi(requests, context):  # noqa: ANN001
                try:
                    async for item in inner(guarded(requests), context):
                        yield item
                except RequestRefused as exc:
                    await context.abort(exc.code, exc.message)

            return grpc.stream_stream_rpc_method_handler(bidi, checked, handler.response_serializer)
        inner_unary = handler.stream_unary
        if not inspect.iscoroutinefunction(inner_unary):
            return handler

        async def client_stream(requests, context):  # noqa: ANN001
            try:
                return await inner_unary(guarded(requests), context)
            except RequestRefused as exc:
                await context.abort(exc.code, exc.message)

        return grpc.stream_unary_rpc_method_handler(client_stream, checked, handler.response_serializer)


async def serve(
    listen: str,
    registrars: Sequence[Registrar],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    grace_s: float = 3.0,
    request_limits: Mapping[str, int] | None = None,
    max_receive_bytes: int = MAX_MESSAGE_BYTES,
    gates: Mapping[str, Gate] | None = None,
) -> None:
    """Run a grpc.aio server with health + reflection until SIGTERM/SIGINT, then stop gracefully.

    `request_limits`: full method name ("/zkpot.v1.Consensus/SendVote") -> max request bytes,
    checked on the received bytes before parsing; `gates`: full method name -> a per-caller check run
    before parsing (RequestGuard). `max_receive_bytes`: the transport's own cap,
    enforced on a message's length prefix, before its bytes are read at all (a service whose
    largest honest request is well below MAX_MESSAGE_BYTES should lower it).
    With TLS configured (configure_tls) the port requires client certificates (mutual TLS).
    """
    options = [o for o in SERVER_OPTIONS if o[0] != "grpc.max_receive_message_length"]
    options.append(("grpc.max_receive_message_length", max_receive_bytes))
    server = grpc.aio.server(options=options, interceptors=[RequestGuard(request_limits, gates)])
    names = [register(server) for register in registrars]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if _tls is not None:
        port = server.add_secure_port(listen, _tls.server_credentials())
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {listen}")
    probe_server = None
    if _health_listen:
        probe_server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[RequestGuard()])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probe_server)
        if probe_server.add_insecure_port(_health_listen) == 0:
            raise RuntimeError(f"cannot listen on {_health_listen}")
        await probe_server.start()
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s%s%s", ", ".join(names), listen, " (mutual TLS)" if _tls is not None else "",
             f", health only on {_health_listen}" if probe_server is not None else "")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace_s)
    if probe_server is not None:
        await probe_server.stop(0)
    if on_stop is not None:
        await on_stop()


async def wait_healthy(target: str, timeout_s: float = 60.0, service: str = "") -> None:
    """Poll the standard health service until SERVING (raises TimeoutError)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with channel(target, options=STARTING_SERVER_OPTIONS) as ch:
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

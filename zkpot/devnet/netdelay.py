"""An asynchronous network adversary for real replica processes: a loopback delay line per link.

Every ordered pair (replica a -> replica b) gets its own listening port that forwards to b's real
consensus port; replica a is told (``--peer=b@127.0.0.1:PORT``) to reach b there. Replica a's
messages to b (proposals, votes, timeouts, coin shares: RPCs a makes on b's server) therefore
cross that link in the client -> server direction, and the adversary holds each chunk of them
until ``arrival + delay[a]``, in order, never dropping one: an asynchronous network (every
message arrives, when the adversary likes), not a lossy one. Responses (b -> a on a's channel)
pass at once. ``LeaderDelay`` is the classic attack on partially synchronous HotStuff: it asks
every replica which view it is in and who leads it (``Consensus.Status``) and slows that leader
past the view timer, following the leader as views change.

Run in a background thread with its own event loop, so a test drives it from plain code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence

import grpc

from zkpot.v1 import consensus_pb2, consensus_pb2_grpc

CHUNK = 64 * 1024


class DelayProxy:
    """Links between n replicas; ``ports[a][b]`` is where replica a reaches replica b."""

    def __init__(self, targets: Sequence[str], ports: Sequence[Sequence[int]]) -> None:
        self.targets = list(targets)
        self.ports = [list(row) for row in ports]
        self.delay = [0.0] * len(targets)  # seconds added to everything replica i sends
        # every chunk is held at least this long; whether its sender is slowed is decided at the end
        # of it, so an adversary that learns of a new leader within `base` still catches its proposal
        self.base = 0.0
        self.chunks = [0] * len(targets)   # chunks forwarded per sender (to see that links carry traffic)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -------------------------------------------------------------------------------- control

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("delay proxy did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_delay(self, sender: int, seconds: float) -> None:
        self.delay[sender] = seconds  # a float store: atomic under the GIL; read per chunk

    def peer_flags(self, names: Sequence[str], a: int) -> list[str]:
        """Replica a's --peer flags: every other replica through a's links."""
        return [f"--peer={names[b]}@127.0.0.1:{self.ports[a][b]}" for b in range(len(names)) if b != a]

    # -------------------------------------------------------------------------------- the loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._listen())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        for server in self._servers:
            server.close()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _listen(self) -> None:
        for a, row in enumerate(self.ports):
            for b, port in enumerate(row):
                if a == b:
                    continue
                server = await asyncio.start_server(
                    lambda r, w, a=a, b=b: self._link(a, b, r, w), "127.0.0.1", port, reuse_address=True)
                self._servers.append(server)

    async def _link(self, a: int, b: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, port = self.targets[b].rsplit(":", 1)
        try:
            server_r, server_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read_a() -> None:  # a -> b: stamped with its arrival time
            while data := await client_r.read(CHUNK):
                queue.put_nowait((time.monotonic(), data))
            queue.put_nowait((0.0, b""))

        async def release_a() -> None:  # in arrival order, never before its time
            while True:
                arrived, data = await queue.get()
                if not data:
                    server_w.write_eof()
                    return
                for hold in (lambda: self.base, lambda: max(self.base, self.delay[a])):  # decided late
                    wait = arrived + hold() - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                self.chunks[a] += 1
                server_w.write(data)
                await server_w.drain()

        async def pipe_b() -> None:  # b -> a (responses): undelayed
            while data := await server_r.read(CHUNK):
                client_w.write(data)
                await client_w.drain()
            client_w.write_eof()

        tasks = [asyncio.ensure_future(t) for t in (read_a(), release_a(), pipe_b())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            for w in (client_w, server_w):
                w.close()


class LeaderDelay:
    """Slows whoever leads the highest view any replica is in by `delay` seconds (longer than the
    longest view timer), everyone else by `base` (the time the adversary needs to learn of a new
    leader: it polls the replicas' Status every `period` seconds)."""

    def __init__(self, proxy: DelayProxy, targets: Sequence[str], keys: Sequence[bytes], delay: float,
                 period: float = 0.02, base: float = 0.1,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.proxy = proxy
        self.credentials = credentials  # mutual TLS to ask the replicas (None: plaintext)
        self.base = base  # every message's delay while attacking (the leader's: `delay`)
        self.targets = list(targets)
        self.index = {k: i for i, k in enumerate(keys)}
        self.delay = delay
        self.period = period
        self.active = threading.Event()
        self.targeted: dict[int, int] = {}  # replica -> times it became the target
        self.failed_polls = 0  # Status calls that failed (all of them: the adversary is blind)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-delay", daemon=True)

    def start(self) -> LeaderDelay:
        self.proxy.base = self.base
        self.active.set()
        self._thread.start()
        return self

    def pause(self) -> None:
        """The network turns timely: every delay back to zero (the thread keeps watching)."""
        self.active.clear()
        self.proxy.base = 0.0
        for i in range(len(self.targets)):
            self.proxy.set_delay(i, 0.0)

    def resume(self) -> None:
        self.proxy.base = self.base
        self.active.set()

    def stop(self) -> None:
        self.pause()
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        channels = [grpc.secure_channel(t, self.credentials) if self.credentials is not None
                    else grpc.insecure_channel(t) for t in self.targets]
        stubs = [consensus_pb2_grpc.ConsensusStub(c) for c in channels]
        current: int | None = None
        try:
            while not self._stop.is_set():
                if self.active.is_set():
                    best: tuple[int, bytes] | None = None
                    for stub in stubs:
                        try:
                            st = stub.Status(consensus_pb2.StatusRequest(), timeout=0.5)
                        except grpc.RpcError:
                            self.failed_polls += 1
                            continue
                        if best is None or st.view > best[0]:
                            best = (st.view, st.leader)
                    leader = self.index.get(best[1]) if best is not None else None
                    if leader is not None and self.active.is_set():
                        for i in range(len(self.targets)):
                            self.proxy.set_delay(i, self.delay if i == leader else 0.0)
                        if leader != current:
                            self.targeted[leader] = self.targeted.get(leader, 0) + 1
                            current = leader
                self._stop.wait(self.period)
        finally:
            for c in channels:
                c.close()

"""Choosing loopback ports that stay free until a server binds them.

A port taken from the kernel with bind(0) comes from the ephemeral range, which every outgoing
connection also draws its local port from: between choosing it and a server binding it, a gRPC
client may take it ("Address already in use"). Ports chosen here come from below the ephemeral
range, where only explicit binders go.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux default when unknown)."""
    try:
        lo, hi = (int(x) for x in _RANGE_FILE.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def ports_in_use(ports: list[int], host: str = "127.0.0.1") -> list[int]:
    """Ports a server could not listen on now. Binds the way the gRPC servers do (SO_REUSEADDR), so
    a port in TIME-WAIT after the previous run is free, and a port someone listens on is busy."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def _single_port_span() -> tuple[int, int]:
    """Where free_port draws from: the top of the non-ephemeral space, clear of devnet bases
    (free_base_port uses the bottom)."""
    eph_lo, eph_hi = ephemeral_range()
    if eph_lo > 24000:
        return 20000, eph_lo
    return eph_hi + 1, min(65535, eph_hi + 1 + 8000)


# One sequence per process: two calls in one process never return the same port, even before
# either is bound. The start differs per process so concurrent processes rarely meet.
_next = itertools.count(random.Random(os.getpid()).randrange(0, 1 << 16))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, outside the ephemeral range."""
    lo, hi = _single_port_span()
    for _ in range(hi - lo):
        port = lo + next(_next) % (hi - lo)
        if not ports_in_use([port], host):
            return port
    raise RuntimeError(f"no free port between {lo} and {hi}")


def base_port_span() -> tuple[int, int]:
    """Where free_base_port draws devnet port plans (1000 ports each) from."""
    eph_lo, eph_hi = ephemeral_range()
    if eph_lo > 24000:
        return 10000, 20000
    return eph_hi + 9001, min(65000, eph_hi + 9001 + 10000)

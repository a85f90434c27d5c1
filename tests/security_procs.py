"""Real service processes for the security tests: start, health-check (plain or mutual TLS), stop.

Light on imports (no torch/ezkl) so the consensus and ledger security tests start quickly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ledger_process import REPO, free_port

from zkpot.grpcutil import CHANNEL_OPTIONS
from zkpot.tls import TlsMaterial


def sync_channel(target: str, tls: TlsMaterial | None = None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, tls.channel_credentials(), options=CHANNEL_OPTIONS)


def healthy(target: str, tls: TlsMaterial | None = None, timeout_s: float = 2.0) -> bool:
    with sync_channel(target, tls) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class Service:
    """One `python -m zkpot.cli ...` process listening on `port`."""

    name: str
    args: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    tls: TlsMaterial | None = None  # what the test's own health checks present
    proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Service:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "zkpot.cli", *self.args], cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        return self

    def wait_healthy(self, timeout_s: float = 90.0) -> Service:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if healthy(self.target, self.tls, 1.0):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout_s}s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"{self.name} exited ({code}):\n{self.tail()}")

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def stop_all(services: list[Service], timeout_s: float = 15.0) -> None:
    """SIGTERM every service at once, then wait for each (graceful shutdowns overlap)."""
    for s in services:
        if s.alive():
            assert s.proc is not None
            s.proc.send_signal(signal.SIGTERM)
    for s in services:
        s.stop(timeout_s)


def ledger_service(d: Path, genesis: Path, extra: list[str] | None = None, tls: TlsMaterial | None = None) -> Service:
    s = Service("ledger", [], d / "ledger.log", tls=tls)
    s.args = ["ledger", "serve", "--data-dir", str(d / "ledger-db"), "--genesis", str(genesis), "--listen", s.target,
              "--metrics-port", str(s.metrics_port), "--node", d.name, *(extra or [])]
    return s


def consensus_service(d: Path, genesis: Path, key: Path, node: str, ledger: str, extra: list[str] | None = None,
                      tls: TlsMaterial | None = None) -> Service:
    s = Service("consensus", [], d / "consensus.log", tls=tls)
    s.args = ["consensus", "serve", "--genesis", str(genesis), "--key", str(key), "--node", node,
              "--listen", s.target, "--ledger", ledger, "--data-dir", str(d / "safety"),
              "--metrics-port", str(s.metrics_port), "--idle-block-ms", "200", "--base-timeout-ms", "400",
              "--max-timeout-ms", "2000", *(extra or [])]
    return s


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of a Prometheus series from a service's /metrics (0 when absent)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0

"""Start `zkpot ledger serve` as a real process for tests (and stop or kill it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from zkpot.grpcutil import CHANNEL_OPTIONS
from zkpot.ports import free_port
from zkpot.v1 import ledger_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


@dataclass
class LedgerProcess:
    data_dir: Path
    genesis_path: Path
    port: int
    metrics_port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    channel: grpc.Channel | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LedgerProcess:
        cmd = [
            sys.executable, "-m", "zkpot.cli", "ledger", "serve",
            "--data-dir", str(self.data_dir), "--genesis", str(self.genesis_path),
            "--listen", self.target, "--metrics-port", str(self.metrics_port), "--node", "test",
        ]  # fmt: skip
        self._close_channel()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ledger exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status == 1:
                    return self
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"ledger not healthy:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def stub(self) -> ledger_pb2_grpc.LedgerStub:
        assert self.channel is not None
        return ledger_pb2_grpc.LedgerStub(self.channel)

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_channel()

    def stop(self) -> int:
        self._close_channel()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def ledger_process(tmp: Path, genesis_path: Path) -> LedgerProcess:
    return LedgerProcess(tmp / "ledger-db", genesis_path, free_port(), free_port(), tmp / "ledger.log")

"""Child processes of the devnet: start, log to files, stop cleanly (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the orchestrator dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """Owns every service process; `stop()` leaves none behind."""

    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "zkpot.cli", *args]
        child = Child(name, argv, self.log_dir / f"{name}.log")
        log = open(child.log_path, "ab")  # noqa: SIM115 - handed to the child
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "ZKPOT_METRICS_ADDR": "127.0.0.1", **(env or {})}
        # own session: a terminal Ctrl-C reaches only the orchestrator, which stops children in order
        child.popen = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        log.close()
        self.children[name] = child
        return child

    def start_binary(self, name: str, argv: list[str]) -> Child:
        """A non-zkpot program (Prometheus), under the same lifecycle as the services."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(name, argv, self.log_dir / f"{name}.log")
        with open(child.log_path, "ab") as log:
            child.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, preexec_fn=_die_with_parent)
        self.children[name] = child
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.children.values() if c.popen is not None and not c.alive]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.children[name]
        if child.alive and child.popen is not None:
            child.popen.send_signal(sig)
            child.popen.wait(10)

    def stop(self, grace_s: float = 8.0) -> None:
        live = [c for c in self.children.values() if c.alive]
        for c in live:
            try:
                c.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for c in live:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                c.popen.wait(remaining)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                c.popen.kill()  # type: ignore[union-attr]
                c.popen.wait(5)  # type: ignore[union-attr]

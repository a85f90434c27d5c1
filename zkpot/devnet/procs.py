"""Child processes of the devnet: start, log to files, stop cleanly (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from zkpot import lifetime


def _die_with_parent() -> None:
    lifetime.die_with_parent(signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    env: dict[str, str] | None = None
    restarts: int = 0
    died_at: float | None = None  # monotonic time its death was noticed (None: alive or never started)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# what the last ProcessGroup.stop() of this process left alive (None: nothing stopped yet)
last_survivors: list[int] | None = None


def stopped_message() -> str:
    """What to tell the user after a stop, checked rather than assumed."""
    if last_survivors is None:
        return "no service process had started"
    if not last_survivors:
        return "every service process was stopped (checked: no process of their process groups is alive)"
    return f"{len(last_survivors)} process(es) of the devnet are still alive after SIGKILL: pids {last_survivors}"


@dataclass
class ProcessGroup:
    """Owns every service process; `stop()` leaves none behind."""

    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)

    events: list[dict] = field(default_factory=list)  # deaths and restarts, for the report

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "zkpot.cli", *args]
        child = Child(name, argv, self.log_dir / f"{name}.log",
                      env={**os.environ, "PYTHONUNBUFFERED": "1", "ZKPOT_METRICS_ADDR": "127.0.0.1",
                           lifetime.PARENT_ENV: str(os.getpid()), **(env or {})})
        self._spawn(child)
        self.children[name] = child
        return child

    def _spawn(self, child: Child) -> None:
        log = open(child.log_path, "ab")
        # own session: a terminal Ctrl-C reaches only the orchestrator, which stops children in order;
        # no preexec_fn: the child sets its parent-death signal itself (lifetime.die_with_parent_from_env)
        child.popen = subprocess.Popen(
            child.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child.env,
            start_new_session=True,
        )
        log.close()

    def supervise(self, now: float, max_restarts: int = 5) -> list[Child]:
        """What a supervisor does, once per tick: note each newly dead zkpot service and restart it
        after a backoff (1, 2, 4 ... 30 s); returns the children that died more than `max_restarts`
        times (a crash loop: the caller gives up)."""
        gave_up = []
        for child in self.children.values():
            if child.popen is None or child.alive or child.argv[:3] != [sys.executable, "-m", "zkpot.cli"]:
                continue
            if child.died_at is None:
                child.died_at = now
                self.events.append({"service": child.name, "event": "died", "exit_code": child.popen.returncode,
                                    "at": now})
            if child.restarts >= max_restarts:
                gave_up.append(child)
            elif now - child.died_at >= min(30.0, 2.0**child.restarts):
                child.restarts += 1
                self._spawn(child)
                self.events.append({"service": child.name, "event": "restarted", "attempt": child.restarts,
                                    "at": now, "down_s": round(now - child.died_at, 1)})
                child.died_at = None
        return gave_up

    def down(self) -> list[Child]:
        """Services dead now (waiting for their restart)."""
        return [c for c in self.children.values() if c.popen is not None and not c.alive]

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

    def stop(self, grace_s: float = 8.0) -> list[int]:
        """SIGTERM every child's whole process group (a prover's worker processes included), then
        SIGKILL what is left after `grace_s`; returns the pids still alive after that (none, unless
        something refuses even SIGKILL): callers say "stopped" only when it is true."""
        started = [c for c in self.children.values() if c.popen is not None]
        groups = {c.popen.pid for c in started}  # type: ignore[union-attr] # start_new_session: pgid == pid
        lifetime.kill_groups(groups, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in started:
            try:
                c.popen.wait(max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
        while lifetime.group_members(groups) and time.monotonic() < deadline:
            time.sleep(0.1)  # workers finishing their own shutdown
        lifetime.kill_groups(groups, signal.SIGKILL)
        for c in started:
            try:
                c.popen.wait(5)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
        end = time.monotonic() + 5
        while (left := lifetime.group_members(groups)) and time.monotonic() < end:
            time.sleep(0.1)
        global last_survivors
        last_survivors = left
        return left

"""Live progress line for the devnet (redrawn in place on a terminal, a line per change otherwise)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class Progress:
    rounds: int
    participants: int
    started: float = field(default_factory=time.monotonic)
    round: int = 0
    submitted: int = 0
    verified: int = 0
    rejected: int = 0
    leader: str = "-"
    height: int = 0
    view: int = 0
    global_accuracy: float | None = None
    stage: str = "starting"
    _last: str = ""
    _last_key: tuple = ()
    _last_print: float = 0.0

    def line(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        acc = "-" if self.global_accuracy is None else f"{100 * self.global_accuracy:.1f}%"
        return (
            f"[{elapsed // 60:02d}:{elapsed % 60:02d}] round {self.round}/{self.rounds} | "
            f"proofs submitted {self.submitted}/{self.participants} verified {self.verified} "
            f"rejected {self.rejected} | leader {self.leader} | height {self.height} view {self.view} | "
            f"global acc {acc} | {self.stage}"
        )

    def draw(self, force: bool = False) -> None:
        text = self.line()
        if sys.stdout.isatty():
            sys.stdout.write("\r\x1b[2K" + text)
            sys.stdout.flush()
        else:
            # not a terminal (CI, a log file): a line when something a reader cares about changes,
            # or every 15 s, not at every block
            key = (self.round, self.submitted, self.verified, self.rejected, self.stage, self.global_accuracy)
            now = time.monotonic()
            if force or key != self._last_key or now - self._last_print >= 15:
                print(text, flush=True)
                self._last_key, self._last_print = key, now
        self._last = text

    def say(self, message: str) -> None:
        """A permanent line above the progress line."""
        if sys.stdout.isatty():
            sys.stdout.write("\r\x1b[2K")
        print(message, flush=True)
        if sys.stdout.isatty():
            self.draw()

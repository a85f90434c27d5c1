"""Safety state that must survive a crash, and the voting rule that reads it.

The state is written to one small file (temp file, fsync, rename, fsync of the directory) before
a vote or timeout leaves the replica, so a restarted replica never signs twice in a view.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from zkpot.durable import write_atomic
from zkpot.v1 import types_pb2

STATE_FILE = "safety.json"


@dataclass
class SafetyState:
    last_voted_view: int = 0
    highest_timeout_view: int = 0
    high_qc: types_pb2.QuorumCert = field(default_factory=types_pb2.QuorumCert)
    # the asynchronous fallback (fallback.py): the TC view of the last one entered, the
    # [height, owner] pairs voted for in it, and per owner the height-1 QC its height-2 block
    # (which we voted for) extends, serialized
    fallback_view: int = 0
    fallback_votes: list[list] = field(default_factory=list)
    fallback_locks: dict[bytes, bytes] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "last_voted_view": self.last_voted_view,
                "highest_timeout_view": self.highest_timeout_view,
                "high_qc": base64.b64encode(self.high_qc.SerializeToString()).decode(),
                "fallback_view": self.fallback_view,
                "fallback_votes": [[h, o.hex()] for h, o in self.fallback_votes],
                "fallback_locks": {o.hex(): base64.b64encode(q).decode() for o, q in self.fallback_locks.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SafetyState:
        data = json.loads(text)
        return cls(
            last_voted_view=int(data["last_voted_view"]),
            highest_timeout_view=int(data["highest_timeout_view"]),
            high_qc=types_pb2.QuorumCert.FromString(base64.b64decode(data["high_qc"])),
            fallback_view=int(data.get("fallback_view", 0)),
            fallback_votes=[[int(h), bytes.fromhex(o)] for h, o in data.get("fallback_votes", [])],
            fallback_locks={bytes.fromhex(o): base64.b64decode(q) for o, q in data.get("fallback_locks", {}).items()},
        )


class SafetyStore:
    """Durable home of SafetyState in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / STATE_FILE

    def exists(self) -> bool:
        """False for a fresh replica, or one whose data dir was lost (see Core's amnesic start)."""
        return self.path.exists()

    def load(self) -> SafetyState:
        if not self.path.exists():
            return SafetyState()
        return SafetyState.from_json(self.path.read_text())

    def save(self, state: SafetyState) -> None:
        write_atomic(self.path, state.to_json().encode())


def vote_refusal(
    state: SafetyState, view: int, parent_qc_view: int, tc_view: int | None, tc_high_qc_view: int,
    coin_view: int | None = None, high_qc_view: int = 0,
) -> str | None:
    """Why this replica must not vote for a block in `view` (None: it may).

    `tc_view`/`tc_high_qc_view`: the proposal's timeout certificate (None if it carries none) and
    the highest QC view named inside it. `coin_view`: the fallback whose coin the proposal carries
    (the first fast view after it, coin_view + 3, extends a QC ranking at least as high as ours:
    `high_qc_view`, which includes the elected chain's QCs we hold).
    """
    if view <= state.last_voted_view:
        return f"already voted in view {state.last_voted_view}"
    if view <= state.highest_timeout_view:
        return f"timed out in view {state.highest_timeout_view}"
    if parent_qc_view >= view:
        return "parent QC is not older than the block"
    if view == parent_qc_view + 1:
        return None
    if coin_view is not None and tc_view is None:
        if view != coin_view + 3:
            return f"the coin is of fallback {coin_view}, not of {view - 3}"
        if parent_qc_view < high_qc_view:
            return f"parent QC view {parent_qc_view} is below our high QC's {high_qc_view} after fallback {coin_view}"
        return None
    if tc_view is None:
        return "view does not follow the parent QC and no TC is carried"
    if tc_view + 1 != view:
        return f"TC is for view {tc_view}, not {view - 1}"
    if parent_qc_view < tc_high_qc_view:
        return f"parent QC view {parent_qc_view} is below the TC's highest QC view {tc_high_qc_view}"
    return None

"""Process lifetimes: children that die with their parent, and finding what is left of a group."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child (before exec, or first thing in a worker): receive `sig` when the parent dies,
    even by SIGKILL (Linux; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


PARENT_ENV = "ZKPOT_DIE_WITH_PARENT"  # a zkpot child's parent pid: it dies with that process


def die_with_parent_from_env() -> None:
    """First thing in a zkpot process a supervisor started: the child-side PDEATHSIG. Setting it
    here, after exec, instead of in a preexec_fn keeps the fork free of Python code (a preexec_fn
    runs in the forked copy of a multi-threaded parent — gRPC's threads, the devnet's delay line —
    and can die or deadlock there); a parent that died before this line is noticed by its pid."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit():
        return
    die_with_parent(signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit(f"parent {parent} is gone")


def group_members(pgids: set[int]) -> list[int]:
    """Live processes whose process group is one of `pgids` (Linux /proc; zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) in pgids:
            found.append(int(entry.name))
    return found


def kill_groups(pgids: set[int], sig: int) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

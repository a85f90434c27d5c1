"""Run a command as its own process group and, on timeout, kill the whole group.

`subprocess.run(timeout=...)` kills only the direct child: the services, pool workers and
resource trackers it started lived on after a timed-out test (issue 20.4). Timeouts here are
generous ceilings against hangs, not speed checks: speed lives in bench/."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


def run_tree(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    with subprocess.Popen(cmd, start_new_session=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
        finally:
            if proc.poll() is None:   # interrupted (Ctrl-C, pytest timeout): leave nothing behind
                kill_tree(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group: the child and everything it started
    except ProcessLookupError:
        pass
    proc.wait()

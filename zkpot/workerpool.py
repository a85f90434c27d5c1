"""Worker processes for CPU-heavy service work (proving, verifying), shared by the services.

Spawned, never forked: a fork of a process running gRPC threads is unsafe. Every worker is
started (imports, task loaded) before the caller reports SERVING, and the pool owns a scratch
directory that goes away with it. Workers never outlive the service: each asks the kernel for
SIGKILL when its parent dies (even by SIGKILL), and close() terminates workers still running a
job (a proof can take minutes; ProcessPoolExecutor.shutdown alone would leave them running,
then orphaned: issue 19.2).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import signal
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from zkpot import lifetime


@dataclass
class WorkerPool:
    executor: ProcessPoolExecutor
    workdir: Path
    size: int

    def close(self, grace_s: float = 5.0) -> None:
        workers = list((getattr(self.executor, "_processes", None) or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for proc in workers:  # a running job is abandoned: the service is stopping
            if proc.is_alive():
                proc.terminate()
        for proc in workers:
            proc.join(grace_s)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _init_worker(initializer: Callable[..., None], *initargs: object) -> None:
    lifetime.die_with_parent(signal.SIGKILL)
    initializer(*initargs)


async def start(
    size: int,
    prefix: str,
    initializer: Callable[..., None],
    initargs: Callable[[Path], tuple],
    ping: Callable[[], object],
    base_dir: Path | None = None,
) -> WorkerPool:
    """`size` workers, each run `initializer(*initargs(workdir))`, all answered one `ping`."""
    size = max(1, size)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir))
    executor = ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(initializer, *initargs(workdir)))
    pool = WorkerPool(executor, workdir, size)
    try:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(executor, ping) for _ in range(size)))
    except BaseException:
        pool.close()
        raise
    return pool

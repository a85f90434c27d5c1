"""Worker processes for CPU-heavy service work (proving, verifying), shared by the services.

Spawned, never forked: a fork of a process running gRPC threads is unsafe. Every worker is
started (imports, task loaded) before the caller reports SERVING, and the pool owns a scratch
directory that goes away with it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WorkerPool:
    executor: ProcessPoolExecutor
    workdir: Path
    size: int

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


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
                                   initializer=initializer, initargs=initargs(workdir))
    pool = WorkerPool(executor, workdir, size)
    try:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(executor, ping) for _ in range(size)))
    except BaseException:
        pool.close()
        raise
    return pool

"""`zkpot observer serve`: learning metrics from one ledger, on --metrics-port."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from zkpot import serve_args


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="observer_command", required=True)
    s = sub.add_parser("serve", help="watch a ledger and export learning metrics")
    s.add_argument("--ledger", required=True, help="ledger HOST:PORT to read")
    s.add_argument("--genesis", type=Path, required=True)
    s.add_argument("--task-dir", type=Path, required=True, help="the task (for its public test set)")
    s.add_argument("--poll-s", type=float, default=1.0)
    serve_args.add(s, node="observer", grpc_server=False, metrics_required=True)
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from zkpot import log, metrics
    from zkpot.genesis import Genesis

    from .watcher import Evaluator, watch

    log.setup("observer", args.node, args.log_level)
    metrics.init("observer", args.node, args.metrics_port)
    genesis = Genesis.load(args.genesis)

    async def main() -> None:
        task = asyncio.create_task(watch(args.ledger, genesis, Evaluator(args.task_dir), args.poll_s))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return 0

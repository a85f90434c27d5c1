"""`zkpot verifier serve`: a validator's proof verifier."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from zkpot import log as zlog
from zkpot import serve_args


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="verifier_command", required=True)
    s = sub.add_parser("serve", help="run the Verifier gRPC service")
    s.add_argument("--task-dir", type=Path, required=True, help="task directory (zkpot task create)")
    s.add_argument("--genesis", type=Path, required=True, help="genesis file (its task id must match)")
    s.add_argument("--workers", type=int, default=1, help="verification worker processes")
    s.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: system temp)")
    serve_args.add(s)
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServeArgs, serve

    zlog.setup("verifier", args.node, args.log_level)
    asyncio.run(serve(ServeArgs(task_dir=args.task_dir, genesis=args.genesis, listen=args.listen, node=args.node,
                                metrics_port=args.metrics_port or None, workers=args.workers,
                                workdir=args.workdir)))
    return 0

"""`zkpot prover serve`: a participant's prover (trains on its private shard, proves accuracy)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from zkpot import log as zlog
from zkpot import serve_args


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="prover_command", required=True)
    s = sub.add_parser("serve", help="run the Prover gRPC service")
    s.add_argument("--task-dir", type=Path, required=True, help="task directory (zkpot task create)")
    s.add_argument("--shard", type=Path, required=True, help="this participant's private shard (.npz)")
    s.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: system temp)")
    s.add_argument("--prove-workers", type=int, default=2,
                   help="worker processes; the task's test-set shards are proven in parallel across them")
    s.add_argument("--allow-behaviours", action="store_true",
                   help="EXPERIMENTS ONLY: train a Byzantine behaviour when ProveRound asks for one")
    serve_args.add(s)
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServeArgs, serve

    zlog.setup("prover", args.node, args.log_level)
    asyncio.run(serve(ServeArgs(task_dir=args.task_dir, shard=args.shard, listen=args.listen, node=args.node,
                                metrics_port=args.metrics_port or None, workdir=args.workdir,
                                prove_workers=args.prove_workers, allow_behaviours=args.allow_behaviours)))
    return 0

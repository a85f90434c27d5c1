"""`zkpot participant run`: one participant identity's federated-learning client."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from zkpot import log as zlog
from zkpot import serve_args


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="participant_command", required=True)
    s = sub.add_parser("run", aliases=["serve"], help="follow the chain and take part in every round")
    s.add_argument("--key", type=Path, required=True, help="this participant's key (zkpot keys new)")
    s.add_argument("--genesis", type=Path, required=True, help="the chain's genesis.json")
    s.add_argument("--validator", action="append", required=True, metavar="CONSENSUS_ADDR,LEDGER_ADDR",
                   help="a validator's consensus and ledger addresses; repeat for fail-over (first: preferred)")
    s.add_argument("--prover", required=True, metavar="HOST:PORT", help="this participant's prover")
    s.add_argument("--data-dir", type=Path, required=True,
                   help="durable state: what it signed for which round, its secure-aggregation secrets")
    s.add_argument("--local-epochs", type=int, default=0, help="local training epochs (0: prover default)")
    s.add_argument("--seed", type=int, default=0, help="training seed base (round r trains with seed + 10 r)")
    s.add_argument("--behaviour", default="honest",
                   help="EXPERIMENTS ONLY: act as a Byzantine participant (zkpot devnet --behaviour)")
    serve_args.add(s, listen_help="Participant status service + health")
    s.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from zkpot.errors import StartupError

    from .rounds import BEHAVIOURS, Options
    from .server import ServeArgs, serve
    from .validators import parse_endpoint

    zlog.setup("participant", args.node, args.log_level)
    try:
        endpoints = [parse_endpoint(v) for v in args.validator]
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    if args.behaviour not in BEHAVIOURS:
        raise StartupError(f"--behaviour must be one of {', '.join(BEHAVIOURS)}")
    if not 0 <= args.local_epochs <= 1000:
        raise StartupError("--local-epochs must be 0..1000")
    asyncio.run(serve(ServeArgs(
        key=args.key, genesis=args.genesis, validators=endpoints, prover=args.prover, data_dir=args.data_dir,
        listen=args.listen, node=args.node, metrics_port=args.metrics_port or None,
        options=Options(local_epochs=args.local_epochs, seed=args.seed, behaviour=args.behaviour))))
    return 0

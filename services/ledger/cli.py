"""`zkpot ledger`: run the ledger service, back it up, restore and verify it; the queries
(head, block, tx, ...) are services/ledger/query_cli.py.

  zkpot ledger serve --data-dir DIR --genesis FILE --listen HOST:PORT [--metrics-port P] [--node NAME]
  zkpot ledger head|block|tx|task|round|scores|schedule|model (--target HOST:PORT | --data-dir DIR) ...
  zkpot ledger backup (--target HOST:PORT | --data-dir DIR) --out DIR [--genesis FILE]
  zkpot ledger restore --from DIR --data-dir DIR --genesis FILE [--force]
  zkpot ledger verify --data-dir DIR [--genesis FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from zkpot import grpcutil, serve_args
from zkpot import log as zlog
from zkpot import metrics as zmetrics
from zkpot.v1 import ledger_pb2, ledger_pb2_grpc

from . import query_cli

if TYPE_CHECKING:
    from services.ledger.backup import ChainSummary
    from zkpot.genesis import Genesis


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", required=True)

    serve = sub.add_parser("serve", help="run the ledger service")
    serve.add_argument("--data-dir", type=Path, required=True, help="RocksDB directory (created on first start)")
    serve.add_argument("--genesis", type=Path, required=True, help="genesis JSON file")
    serve.add_argument("--admin", action="append", default=[], metavar="NAME",
                       help="TLS certificate name allowed to call admin RPCs (Backup); repeatable. Default: "
                            "--node only. Without TLS, admin RPCs are served to loopback callers only")
    serve.add_argument("--task-dir", type=Path, help="the task's artefacts (vk, settings, SRS): required for a "
                       "secure-aggregation task, whose aggregates are checked against the proofs' commitments")
    serve_args.add(serve, listen="127.0.0.1:7300", node="ledger")
    serve.set_defaults(func=_serve)

    query_cli.register(sub)

    bak = sub.add_parser("backup", help="checkpoint a ledger (online through its service, or offline)")
    src = bak.add_mutually_exclusive_group(required=True)
    src.add_argument("--target", help="running ledger HOST:PORT (online: appends go on)")
    src.add_argument("--data-dir", type=Path, help="a stopped ledger's RocksDB directory (offline)")
    bak.add_argument("--out", type=Path, required=True, help="backup directory to create (must be absent or empty)")
    bak.add_argument("--genesis", type=Path, help="genesis JSON file: also check the backup is of this chain")
    bak.add_argument("--timeout", type=float, default=600.0, help="online: seconds for the whole transfer")
    grpcutil.add_tls_args(bak)
    bak.set_defaults(func=_backup)
    res = sub.add_parser("restore", help="install a backup as a (stopped) ledger's data directory")
    res.add_argument("--from", dest="src", type=Path, required=True, help="backup directory")
    res.add_argument("--data-dir", type=Path, required=True, help="ledger RocksDB directory to (re)create")
    res.add_argument("--genesis", type=Path, required=True, help="genesis JSON file the backup must match")
    res.add_argument("--force", action="store_true", help="replace a non-empty data directory")
    res.set_defaults(func=_restore)
    ver = sub.add_parser("verify", help="check a stored chain (data dir or backup) without modifying it")
    ver.add_argument("--data-dir", type=Path, required=True)
    ver.add_argument("--genesis", type=Path, help="genesis JSON file the chain must match")
    ver.set_defaults(func=_verify)


# -- serve ---------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from services.ledger.ledger import GenesisMismatch, Ledger
    from services.ledger.server import REQUEST_LIMITS, LedgerServicer, registrar
    from services.ledger.state import GenesisError
    from zkpot.errors import StartupError
    from zkpot.genesis import Genesis

    zlog.setup("ledger", args.node, args.log_level)
    log = logging.getLogger("zkpot.ledger")
    genesis = Genesis.load(args.genesis)
    try:
        ledger = Ledger(args.data_dir, genesis, _commitments(args.task_dir, genesis))
    except (GenesisMismatch, GenesisError) as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:  # RocksDB/OS: read-only mount, no space, permissions, a held lock
        raise StartupError(f"cannot open the ledger at {args.data_dir}: {type(exc).__name__}: {exc}") from exc
    zmetrics.init("ledger", args.node, args.metrics_port)
    log.info("ledger %s at height %d, chain %s", args.data_dir, ledger.head.height, genesis.chain_id)

    async def main() -> None:
        servicer = LedgerServicer(ledger, admins=frozenset(args.admin or [args.node]))

        await grpcutil.serve(args.listen, [registrar(servicer)], on_stop=servicer.close,
                             request_limits=REQUEST_LIMITS)

    asyncio.run(main())
    return 0


def _commitments(task_dir: Path | None, genesis: Genesis):
    """The task's commitment scheme for secure aggregation (None for plain tasks or without --task-dir;
    the state machine refuses a secure task without it)."""
    from services.ledger.state import GenesisError

    if task_dir is None or not genesis.manifest.secure_aggregation:
        return None
    from services.ledger.task_commitments import TaskCommitments
    from zkpot.zkp.task import TaskError, load_task

    try:
        task = load_task(task_dir)
    except (TaskError, OSError) as exc:
        raise GenesisError(f"--task-dir {task_dir}: {exc}") from exc
    if task.task_id != genesis.task_id:
        raise GenesisError(f"--task-dir {task_dir} holds task {task.task_id.hex()[:16]}, not this chain's "
                           f"{genesis.task_id.hex()[:16]}")
    return TaskCommitments(task)


# -- backup / restore ----------------------------------------------------------------------------


def _print_chain(what: str, s: ChainSummary) -> None:
    print(f"{what}: {s.blocks} blocks, head {s.height} {s.block_hash.hex()}, state root {s.state_root.hex()}")


def _backup(args: argparse.Namespace) -> int:
    from services.ledger import backup

    genesis = query_cli.load_genesis(args.genesis)
    try:
        if args.data_dir is not None:
            summary = backup.backup_offline(args.data_dir, args.out, genesis)
        else:

            async def go() -> ChainSummary:
                async with grpcutil.channel(args.target) as ch:
                    stream = ledger_pb2_grpc.LedgerStub(ch).Backup(ledger_pb2.BackupRequest(), timeout=args.timeout)
                    return await backup.receive_backup(stream, args.out, genesis)

            summary = asyncio.run(go())
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    _print_chain(f"backup {args.out} verified", summary)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from services.ledger import backup

    try:
        summary = backup.restore(args.src, args.data_dir, query_cli.load_genesis(args.genesis), force=args.force)
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_chain(f"restored {args.data_dir} from {args.src}", summary)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from services.ledger import backup

    try:
        summary = backup.verify_chain(args.data_dir, query_cli.load_genesis(args.genesis))
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_chain(f"{args.data_dir} verified", summary)
    return 0

"""`zkpot ledger head|block|tx|task|round|scores|schedule|model`: query a running ledger over
gRPC, or a stopped one's RocksDB directory (answered by the service's own code, read-only)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from zkpot import chain, crypto, grpcutil, refusal, schedule
from zkpot.codec import content_id
from zkpot.v1 import ledger_pb2, ledger_pb2_grpc

if TYPE_CHECKING:
    from zkpot.genesis import Genesis

CALL_TIMEOUT_S = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    """The query subcommands, beside `serve`, `backup`, `restore` and `verify`."""

    def client(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--target", default="127.0.0.1:7300", help="a running ledger's address HOST:PORT")
        p.add_argument("--data-dir", type=Path, help="query a stopped ledger's RocksDB directory instead (opened "
                       "read-only; e.g. devnet-data/nodes/v0/ledger)")
        p.add_argument("--genesis", type=Path, help="genesis JSON: names members (p0, v1) beside their keys; with "
                       "--data-dir, default: the nearest genesis.json above it (a devnet's)")
        grpcutil.add_tls_args(p)
        return p

    client("head", "show the newest block and the open round").set_defaults(func=_run(_head))
    blk = client("block", "show one block")
    key = blk.add_mutually_exclusive_group(required=True)
    key.add_argument("--height", type=int)
    key.add_argument("--hash", type=bytes.fromhex, help="block hash (hex)")
    blk.set_defaults(func=_run(_block))
    tx = client("tx", "show one transaction and its result")
    tx.add_argument("tx_id", type=bytes.fromhex, help="transaction id (hex)")
    tx.set_defaults(func=_run(_tx))
    client("task", "show the chain's task manifest").set_defaults(func=_run(_task))
    rnd = client("round", "show an FL round's submissions and models")
    rnd.add_argument("--round", type=int, default=0, help="round number (0: the open/last round)")
    rnd.set_defaults(func=_run(_round))
    sco = client("scores", "show the proven scores of an FL round")
    sco.add_argument("--round", type=int, default=0, help="round number (0: the open/last round)")
    sco.set_defaults(func=_run(_scores))
    client("schedule", "show the leader schedule").set_defaults(func=_run(_schedule))
    mdl = client("model", "download a model by content id")
    mdl.add_argument("cid")
    mdl.add_argument("--out", type=Path, required=True, help="file to write")
    mdl.set_defaults(func=_run(_model))


Command = Callable[[ledger_pb2_grpc.LedgerStub, argparse.Namespace], Awaitable[int]]


def _find_genesis(data_dir: Path) -> Path | None:
    for parent in [data_dir, *data_dir.resolve().parents]:
        if (parent / "genesis.json").is_file():
            return parent / "genesis.json"
    return None


def _open_stopped(args: argparse.Namespace) -> Genesis:
    """The genesis for a --data-dir query; refuses clearly when there is none or the ledger runs."""
    from services.ledger.backup import lock_held
    from zkpot.errors import StartupError
    from zkpot.genesis import Genesis

    if not (args.data_dir / "CURRENT").exists():
        raise StartupError(f"{args.data_dir} is not a ledger's RocksDB directory")
    path = args.genesis or _find_genesis(args.data_dir)
    if path is None:
        raise StartupError(f"no genesis.json above {args.data_dir}: pass --genesis FILE")
    if lock_held(args.data_dir):  # a read-only open beside a writer could read a torn state: ask the server
        raise StartupError(f"{args.data_dir} is in use by a running ledger: query it with --target HOST:PORT")
    return Genesis.load(path)


def load_genesis(path: Path | None) -> Genesis | None:
    from zkpot.genesis import Genesis

    return None if path is None else Genesis.load(path)


def _run(cmd: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        args.names = _names(load_genesis(args.genesis) if args.data_dir is None else _open_stopped(args))

        async def go() -> int:
            if args.data_dir is None:
                async with grpcutil.channel(args.target) as ch:
                    return await cmd(ledger_pb2_grpc.LedgerStub(ch), args)
            return await _query_stopped(cmd, args)

        try:
            return asyncio.run(go())
        except grpc.aio.AioRpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1

    return run


async def _query_stopped(cmd: Command, args: argparse.Namespace) -> int:
    """The same query, answered by the ledger service's own code over a read-only open of the
    stopped ledger, served in this process on a private unix socket."""
    import tempfile

    from services.ledger.ledger import GenesisMismatch, Ledger
    from services.ledger.server import LedgerServicer, registrar
    from zkpot.errors import StartupError
    from zkpot.genesis import Genesis

    genesis = Genesis.load(args.genesis or _find_genesis(args.data_dir))
    try:
        ledger = Ledger(args.data_dir, genesis, read_only=True)
    except GenesisMismatch as exc:
        raise StartupError(str(exc)) from exc
    servicer = LedgerServicer(ledger)
    server = grpc.aio.server()
    registrar(servicer)(server)
    with tempfile.TemporaryDirectory(prefix="zkpot-ledger-query-") as tmp:
        address = f"unix://{tmp}/ledger.sock"
        server.add_insecure_port(address)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as ch:
                return await cmd(ledger_pb2_grpc.LedgerStub(ch), args)
        finally:
            await server.stop(1.0)
            ledger.close()


def _names(genesis: Genesis | None) -> dict[bytes, str]:
    if genesis is None:
        return {}
    return {m.public_key: m.name for m in (*genesis.validators, *genesis.participants)}


def _who(args: argparse.Namespace, key: bytes) -> str:
    """A member as "p0 (1a2b3c4d)" when genesis names it, else its short key."""
    name = getattr(args, "names", {}).get(key)
    return f"{name} ({crypto.short(key)})" if name else crypto.short(key)


async def _head(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    h = await stub.Head(ledger_pb2.HeadRequest(), timeout=CALL_TIMEOUT_S)
    print(f"chain         {h.chain_id}")
    print(f"height        {h.height}")
    print(f"block hash    {h.block_hash.hex()}")
    print(f"view          {h.view}")
    print(f"state root    {h.state_root.hex()}")
    task = await stub.GetTask(ledger_pb2.GetTaskRequest(), timeout=CALL_TIMEOUT_S)
    rounds = task.manifest.rounds
    if rounds and h.current_round > rounds:
        print(f"rounds        finished: all {rounds} rounds closed")
    else:
        print(f"current round {h.current_round} of {rounds}")
    return 0


async def _block(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    req = (
        ledger_pb2.GetBlockRequest(height=args.height)
        if args.height is not None
        else ledger_pb2.GetBlockRequest(block_hash=args.hash)
    )
    sb = await stub.GetBlock(req, timeout=CALL_TIMEOUT_S)
    hdr = sb.block.header
    when = datetime.fromtimestamp(hdr.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
    print(f"block {hdr.height}  hash {sb.block_hash.hex()}")
    print(f"  view {hdr.view}  proposer {_who(args, hdr.proposer)}  time {when}")
    print(f"  parent {hdr.parent_hash.hex()}  state root {sb.state_root.hex()}")
    print(f"  qc: {len(sb.qc.votes)} votes  parent qc: {len(hdr.parent_qc.votes)} votes")
    print(f"  {len(sb.block.txs)} transactions")
    for tx, res in zip(sb.block.txs, sb.results, strict=False):
        kind = tx.WhichOneof("body") or "unknown"
        extra = ""
        if kind == "submit_proof":
            sp = tx.submit_proof
            extra = f" round {sp.round} participant {_who(args, sp.participant)} correct {sp.claimed_correct}"
        verdict = "accepted" if res.accepted else f"REJECTED: {refusal.text(res.reason, res.detail)}"
        print(f"    {res.tx_id.hex()} {kind}{extra} -> {verdict}")  # in full: `zkpot ledger tx` takes it
    return 0


async def _tx(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    r = await stub.GetTx(ledger_pb2.GetTxRequest(tx_id=args.tx_id), timeout=CALL_TIMEOUT_S)
    kind = r.tx.WhichOneof("body") or "unknown"
    print(f"tx {r.result.tx_id.hex()} ({kind}) in block {r.height}")
    print(f"  sender {_who(args, r.tx.sender)} {r.tx.sender.hex()}  nonce {r.tx.nonce}")
    if kind == "submit_proof":
        sp = r.tx.submit_proof
        print(f"  round {sp.round}  claimed correct {sp.claimed_correct}  model {sp.model_cid}")
        proof_bytes = len(sp.proof) + sum(len(s.proof) for s in sp.shards)
        shards = f" in {len(sp.shards)} shard proofs" if sp.shards else ""
        print(f"  proof {proof_bytes} bytes{shards}  model {len(sp.model_params)} bytes")
    print(f"  {'accepted' if r.result.accepted else 'REJECTED: ' + refusal.text(r.result.reason, r.result.detail)}")
    return 0


async def _task(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    t = await stub.GetTask(ledger_pb2.GetTaskRequest(), timeout=CALL_TIMEOUT_S)
    m = t.manifest
    print(f"task {t.task_id.hex()}  {m.name} ({m.architecture})")
    print(f"  rounds {m.rounds}  min correct {m.min_correct}/{m.test_set_size}", end="")
    print(f"  deadline {m.round_deadline_blocks} blocks")
    for name in sorted(m.artefacts):
        print(f"  {name:14} {m.artefacts[name]}")
    return 0


async def _round(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    s = await stub.GetRound(ledger_pb2.GetRoundRequest(round=args.round), timeout=CALL_TIMEOUT_S)
    state = f"closed at height {s.close_height}" if s.closed else "open"
    print(f"round {s.round}: opened at height {s.open_height}, {state}")
    print(f"  global model  {s.global_model_cid}")
    if s.closed:
        print(f"  next model    {s.next_global_model_cid}  ({s.aggregation_rule})")
    print(f"  {len(s.submissions)} submissions")
    for sub in s.submissions:
        mark = "aggregated" if sub.aggregated else ""
        print(
            f"    {_who(args, sub.participant)} correct {sub.claimed_correct}/{s.test_set_size} "
            f"height {sub.height} model {sub.model_cid} {mark}"
        )
    return 0


async def _scores(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    s = await stub.GetScores(ledger_pb2.GetScoresRequest(round=args.round), timeout=CALL_TIMEOUT_S)
    state = "closed" if s.closed else "open"
    print(f"round {s.round} ({state}): {len(s.scores)} proven scores, min correct {s.min_correct}/{s.test_set_size}")
    for e in s.scores:
        mark = " aggregated" if e.aggregated else ""
        op = f" validator {_who(args, e.validator)}" if e.validator else ""
        print(f"  {_who(args, e.participant)} {e.proven_correct}/{s.test_set_size} height {e.height}{op}{mark}")
    return 0


async def _schedule(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    """The ranking and each validator's share of the epoch's views (zkpot.schedule.view_shares:
    who leads, and how often, by proven score)."""
    s = await stub.LeaderSchedule(ledger_pb2.LeaderScheduleRequest(), timeout=CALL_TIMEOUT_S)
    task = await stub.GetTask(ledger_pb2.GetTaskRequest(), timeout=CALL_TIMEOUT_S)
    f = chain.max_faulty(len(s.leaders))

    def show(leaders: list[bytes], scores: list[int]) -> None:
        shares = schedule.view_shares(leaders, scores, task.manifest.min_correct, f)
        for i, key in enumerate(leaders):
            name = args.names.get(key, "")
            score = f"  score {scores[i]}" if len(scores) == len(leaders) else ""
            print(f"  {i}. {name + ' ' if name else ''}{key.hex()}{score}  leads {shares[key]:.0%} of views")

    print(f"epoch {s.epoch}, from view {s.activation_view}:")
    show(list(s.leaders), list(s.scores))
    if s.previous_leaders:
        print(f"before view {s.activation_view} (from view {s.previous_activation_view}):")
        show(list(s.previous_leaders), list(s.previous_scores))
    return 0


async def _model(stub: ledger_pb2_grpc.LedgerStub, args: argparse.Namespace) -> int:
    data = bytearray()
    async for chunk in stub.GetModel(ledger_pb2.GetModelRequest(cid=args.cid), timeout=60.0):
        data += chunk.data
    if content_id(bytes(data)) != args.cid:
        print(f"error: received bytes do not match {args.cid}", file=sys.stderr)
        return 1
    args.out.write_bytes(bytes(data))
    print(f"wrote {len(data)} bytes to {args.out}")
    return 0

"""`zkpot consensus`: run a replica, ask its status, submit payload transactions."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from zkpot import chain, grpcutil, refusal, serve_args
from zkpot import log as zlog
from zkpot.crypto import KeyPair
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc, types_pb2

MIN_TIMEOUT_MS = 50


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="consensus_command", required=True)
    s = sub.add_parser("serve", help="run a HotStuff (2-chain) replica")
    s.add_argument("--genesis", type=Path, required=True)
    s.add_argument("--key", type=Path, required=True, help="this validator's key file")
    s.add_argument("--ledger", required=True, help="local ledger service HOST:PORT")
    s.add_argument("--verifier", default=None,
                   help="local verifier HOST:PORT (without it, submit_proof transactions are refused)")
    s.add_argument("--peer", action="append", default=[], metavar="NAME@HOST:PORT", help="repeatable")
    s.add_argument("--peers-file", type=Path, help="one NAME@HOST:PORT per line")
    s.add_argument("--data-dir", type=Path, required=True, help="safety state directory")
    s.add_argument("--coin-share", type=Path, default=None,
                   help="this validator's share of the common coin (required when genesis deals one)")
    s.add_argument("--min-block-interval-ms", type=int, default=20)
    s.add_argument("--idle-block-ms", type=int, default=1000)
    s.add_argument("--base-timeout-ms", type=int, default=1000)
    s.add_argument("--max-timeout-ms", type=int, default=30_000)
    s.add_argument("--max-block-txs", type=int, default=2000)
    s.add_argument("--max-block-bytes", type=int, default=8 * 1024 * 1024)
    s.add_argument("--admission-backlog-txs", type=int, default=4000,
                   help="transactions in admission (signature checks) past which new ones are refused as busy")
    s.add_argument("--mempool-max-txs", type=int, default=50_000)
    s.add_argument("--mempool-max-bytes", type=int, default=256 * 1024 * 1024)
    s.add_argument("--mempool-max-per-sender", type=int, default=None,
                   help="mempool quota per submitter key (default: a quarter of --mempool-max-txs)")
    s.add_argument("--mempool-max-bytes-per-sender", type=int, default=None,
                   help="mempool byte quota per submitter key (default: a quarter of --mempool-max-bytes)")
    s.add_argument("--forged-signatures-per-s", type=float, default=500.0,
                   help="failed signature checks per second, all peers together, past which peers without "
                        "an admitted transaction are refused until the budget refills")
    s.add_argument("--peer-tx-rate", type=float, default=10_000.0,
                   help="SubmitTx transactions/s allowed per peer (TLS identity, else address)")
    s.add_argument("--peer-tx-burst", type=float, default=20_000.0, help="per-peer SubmitTx burst")
    s.add_argument("--gossip-tx-rate", type=float, default=50_000.0, help="GossipTxs transactions/s per peer")
    serve_args.add(s, node_help="this validator's name in the genesis file")
    s.set_defaults(func=_serve)

    st = sub.add_parser("status", help="print a replica's status")
    st.add_argument("--target", required=True)
    grpcutil.add_tls_args(st)
    st.set_defaults(func=_status)

    sb = sub.add_parser("submit", help="sign and submit payload transactions (smoke tests)")
    sb.add_argument("--target", required=True)
    sb.add_argument("--key", type=Path, required=True)
    sb.add_argument("--payload-hex", action="append", required=True, help="repeatable")
    grpcutil.add_tls_args(sb)
    sb.set_defaults(func=_submit)


def _serve(args: argparse.Namespace) -> int:
    from .config import Config
    from .network import parse_peer
    from .server import ServeArgs, serve

    zlog.setup("consensus", args.node, args.log_level)
    specs = list(args.peer)
    if args.peers_file:
        specs += [ln.strip() for ln in args.peers_file.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    positive = (("--idle-block-ms", args.idle_block_ms), ("--base-timeout-ms", args.base_timeout_ms),
                ("--max-block-txs", args.max_block_txs), ("--max-block-bytes", args.max_block_bytes),
                ("--mempool-max-txs", args.mempool_max_txs), ("--admission-backlog-txs", args.admission_backlog_txs))
    for name, value in positive:
        if value <= 0:
            raise SystemExit(f"{name} must be positive")
    for name, value in (("--base-timeout-ms", args.base_timeout_ms), ("--max-timeout-ms", args.max_timeout_ms)):
        if value < MIN_TIMEOUT_MS:
            # a view needs a proposal, 2f+1 signed votes and an fsync: below this no view can ever
            # complete and replicas only time out (1 ms: 28,000 timeouts, no commit, issue 19.6)
            raise SystemExit(f"{name} {value} is below {MIN_TIMEOUT_MS} ms: no view could complete in time")
    config = Config(
        data_dir=args.data_dir,
        min_block_interval_s=max(0, args.min_block_interval_ms) / 1000,
        idle_block_s=args.idle_block_ms / 1000,
        base_timeout_s=args.base_timeout_ms / 1000,
        max_timeout_s=max(args.max_timeout_ms, args.base_timeout_ms) / 1000,
        max_block_txs=args.max_block_txs,
        max_block_bytes=args.max_block_bytes,
        admission_backlog_txs=args.admission_backlog_txs,
        mempool_max_txs=args.mempool_max_txs,
        mempool_max_bytes=args.mempool_max_bytes,
        mempool_max_per_sender=(args.mempool_max_per_sender if args.mempool_max_per_sender is not None
                                else max(1, args.mempool_max_txs // 4)),
        mempool_max_bytes_per_sender=(args.mempool_max_bytes_per_sender if args.mempool_max_bytes_per_sender is not None
                                      else max(1, args.mempool_max_bytes // 4)),
    )
    if min(args.peer_tx_rate, args.peer_tx_burst, args.gossip_tx_rate, args.forged_signatures_per_s) <= 0:
        raise SystemExit("--peer-tx-rate, --peer-tx-burst, --gossip-tx-rate and --forged-signatures-per-s "
                         "must be positive")
    asyncio.run(serve(ServeArgs(
        genesis=args.genesis, key=args.key, node=args.node, listen=args.listen, ledger=args.ledger,
        verifier=args.verifier, peers=[parse_peer(s) for s in specs], metrics_port=args.metrics_port or None,
        config=config, submit_tx_rate=args.peer_tx_rate, submit_tx_burst=args.peer_tx_burst,
        gossip_tx_rate=args.gossip_tx_rate, forged_signatures_per_s=args.forged_signatures_per_s,
        coin_share=args.coin_share,
    )))
    return 0


def _status(args: argparse.Namespace) -> int:
    async def run() -> consensus_pb2.StatusResponse:
        async with grpcutil.channel(args.target) as ch:
            return await consensus_pb2_grpc.ConsensusStub(ch).Status(consensus_pb2.StatusRequest(), timeout=10)

    st = asyncio.run(run())
    print(f"node {st.node.hex()}\nview {st.view}\ncommitted_height {st.committed_height}\nleader {st.leader.hex()}\n"
          f"mempool_size {st.mempool_size}\nhigh_qc_view {st.high_qc_view}\nlast_voted_view {st.last_voted_view}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    key = KeyPair.load(args.key)
    base = time.time_ns()
    txs = [chain.sign_tx(key, types_pb2.Transaction(payload=bytes.fromhex(p), nonce=base + i))
           for i, p in enumerate(args.payload_hex)]

    async def run() -> consensus_pb2.SubmitTxResponse:
        async with grpcutil.channel(args.target) as ch:
            stub = consensus_pb2_grpc.ConsensusStub(ch)
            return await stub.SubmitTx(consensus_pb2.SubmitTxRequest(txs=txs), timeout=60)

    resp = asyncio.run(run())
    for r in resp.results:
        print(f"{r.tx_id.hex()} {'admitted' if r.admitted else 'refused: ' + refusal.text(r.reason, r.detail)}")
    return 0 if all(r.admitted for r in resp.results) else 1

"""A replica's per-transaction CPU, stage by stage, in process (issue 22).

Each stage of the path a transaction takes through a consensus replica is timed on the same 2,000
signed 256-byte payload transactions (one full block), single-threaded, best of several passes,
and printed in microseconds per transaction and as a share of one ed25519 verification measured
in the same run (the signature ceiling's unit: every replica must pay that one per transaction).

    python bench/txpath.py [--txs 2000] [--repeat 5]

Stages: parsing a SubmitTx/Proposal (upb), the canonical tx id (encode + SHA-256), the unknown-
field scan, the mempool's known-id lookup a proposal's copy takes instead of the id (signature
lookup + message equality), the merkle root of a block's ids, and the admission and proposal
checks as the replica runs them (TxChecker with its caches, Admission without gRPC). Ends with
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from consensus import make_txs, verify_rate  # noqa: E402

from services.consensus import checks  # noqa: E402
from services.consensus.clients import TxChecker  # noqa: E402
from services.consensus.mempool import Mempool  # noqa: E402
from zkpot import chain, codec  # noqa: E402
from zkpot.v1 import consensus_pb2, types_pb2  # noqa: E402


def best_us_per_tx(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--txs", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, rep = args.txs, args.repeat

    txs, ids = make_txs(n, 5)
    wire = consensus_pb2.SubmitTxRequest(txs=txs).SerializeToString()
    arrived = list(consensus_pb2.SubmitTxRequest.FromString(wire).txs)  # a proposal's copies, as parsed
    pool = Mempool(max_txs=n * 2, max_bytes=1 << 30)
    for tx_id, tx in zip(ids, txs, strict=True):
        pool.add(tx_id, tx)

    async def checked_again() -> None:  # a proposal's check: every signature already verified here
        checker = TxChecker(None)
        await checker.refusals(txs, ids)
        t0 = time.perf_counter()
        await checker.refusals(arrived, ids)
        figures["proposal_tx_checks_cached"] = (time.perf_counter() - t0) / n * 1e6

    verify_us = 1e6 / verify_rate()
    figures: dict[str, float] = {
        "parse": best_us_per_tx(lambda: consensus_pb2.SubmitTxRequest.FromString(wire), n, rep),
        "tx_id": best_us_per_tx(lambda: [chain.tx_id(tx) for tx in arrived], n, rep),
        "known_id": best_us_per_tx(lambda: [pool.known_id(tx) for tx in arrived], n, rep),
        "unknown_field_scan": best_us_per_tx(lambda: [codec.unknown_fields(tx) for tx in arrived], n, rep),
        "merkle_root": best_us_per_tx(lambda: codec.merkle_root(ids), n, rep),
        "byte_size": best_us_per_tx(lambda: [tx.ByteSize() for tx in arrived], n, rep),
        "signature_verify": verify_us,
    }
    block = types_pb2.Block(header=types_pb2.BlockHeader(txs_root=codec.merkle_root(ids)), txs=arrived)
    figures["block_ids_recomputed"] = best_us_per_tx(lambda: checks.tx_ids(block.txs), n, rep)
    figures["block_ids_known"] = best_us_per_tx(lambda: checks.tx_ids(block.txs, pool.known_id), n, rep)
    asyncio.run(checked_again())
    assert checks.tx_ids(block.txs, pool.known_id) == ids

    print(f"{n} transactions of 256-byte payloads; one ed25519 verify = {verify_us:.1f} us (the unit below)")
    for stage, us in figures.items():
        print(f"  {stage:28s} {us:7.2f} us/tx  {us / verify_us:5.2f} verifies")
    saved = figures["block_ids_recomputed"] - figures["block_ids_known"]
    print(f"a proposal's ids from the mempool: {saved:.1f} us/tx saved per replica "
          f"({saved * n / 1000:.1f} ms per {n}-tx block)")
    out = {"bench": "txpath", "txs": n, "verify_us": round(verify_us, 2),
           **{f"{k}_us": round(v, 2) for k, v in figures.items() if k != "signature_verify"},
           **{f"{k}_vs_verify": round(v / verify_us, 3) for k, v in figures.items() if k != "signature_verify"}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

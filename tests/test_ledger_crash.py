"""kill -9 the ledger during sustained appends, restart it, and check nothing is lost or torn."""

from __future__ import annotations

import os
import random
import signal
import threading

import grpc
from chain_factory import ChainBuilder, make_genesis
from ledger_process import ledger_process

from services.ledger.ledger import Ledger
from zkpot import chain
from zkpot.v1 import ledger_pb2

KILLS = 5


def _txs(fx, height: int) -> list:
    txs = [fx.payload(os.urandom(512)) for _ in range(8)]
    if height % 4 == 0:  # some state changes too: submissions that close rounds by deadline
        txs.append(fx.submit(height % 3, 1 + height // 12, 10 + height % 7))
    return txs


def test_kill9_during_appends_keeps_a_consistent_head(tmp_path):
    rnd = random.Random(1234)
    fx = make_genesis(n_participants=3, rounds=20, min_correct=12, deadline_blocks=12)
    genesis_path = tmp_path / "genesis.json"
    fx.genesis.save(genesis_path)
    b = ChainBuilder(fx)
    lp = ledger_process(tmp_path, genesis_path).start()
    pending = b.next_block(_txs(fx, 1))
    acked = 0
    outcomes: list[int] = []  # per kill: 1 if the in-flight block had landed, else 0
    try:
        for _ in range(KILLS):
            killer = threading.Timer(rnd.uniform(0.3, 1.2), lambda pid=lp.proc.pid: os.kill(pid, signal.SIGKILL))
            killer.start()
            while True:  # sustained appends until the process dies under us
                try:
                    resp = lp.stub.Append(pending, timeout=10)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    break
                assert resp.height == b.height + 1
                b.accept(pending)
                acked = b.height
                pending = b.next_block(_txs(fx, b.height + 1))
            killer.join()
            lp.proc.wait()
            lp.start()
            head = lp.stub.Head(ledger_pb2.HeadRequest(), timeout=5)
            # the head is the last acknowledged block, or the one in flight if its batch landed
            assert head.height in (acked, acked + 1), (head.height, acked)
            outcomes.append(head.height - acked)
            if head.height == acked + 1:
                assert head.block_hash == chain.block_hash(pending.block.header)
            # resending the in-flight block is safe either way (no-op or append)
            resp = lp.stub.Append(pending, timeout=10)
            assert resp.height == acked + 1
            b.accept(pending)
            acked = b.height
            pending = b.next_block(_txs(fx, b.height + 1))

        assert acked > 20, f"only {acked} blocks appended"
        # every block reads back byte-identical to what was sent
        got: list[ledger_pb2.StoredBlock] = []
        while len(got) < acked + 1:
            page = lp.stub.GetBlocks(ledger_pb2.GetBlocksRequest(from_height=len(got), limit=100), timeout=10)
            got.extend(page.blocks)
        assert len(got) == acked + 1
        for sent, stored in zip(b.blocks, got[1:], strict=True):
            assert stored.block.SerializeToString(deterministic=True) == sent.block.SerializeToString(
                deterministic=True
            )
            assert stored.qc == sent.qc
        server_head = lp.stub.Head(ledger_pb2.HeadRequest(), timeout=5)
    finally:
        lp.stop()
    # a replica that never crashed computes the same state roots
    replay = Ledger(tmp_path / "replay", fx.genesis)
    try:
        roots = [replay.append(req).state_root for req in b.blocks]
    finally:
        replay.close()
    assert roots == [sb.state_root for sb in got[1:]]
    assert server_head.state_root == roots[-1] and server_head.height == acked
    print(f"{KILLS} kills, {acked} blocks appended, in-flight block had landed: {outcomes}")

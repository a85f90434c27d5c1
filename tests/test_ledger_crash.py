"""kill -9 the ledger during sustained appends, many times at random moments; after each kill
reopen its RocksDB directory and check nothing is lost, torn or half-visible.

Half of the rounds append one block at a time (Append), half stream them with several in flight
(AppendStream). After each kill: every acknowledged block is there, nothing beyond the blocks sent,
and the killed ledger's whole database (blocks, indexes, state, blobs, meta) equals an in-process
replica that executed exactly the blocks up to the reopened head: so no block, index or state
entry of a partial write is visible, every earlier block is byte-identical, and the first block
that did not land left no trace.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import grpc
from chain_factory import ChainBuilder, Fixture, make_genesis
from ledger_process import ledger_process

from services.ledger import state as st
from services.ledger.ledger import Ledger
from services.ledger.store import COLUMN_FAMILIES, Store, block_index_key, tx_index_key
from zkpot import chain
from zkpot.codec import u64_key
from zkpot.v1 import ledger_pb2

KILLS = 8
WINDOW = 12  # AppendStream rounds: blocks sent beyond the last acknowledged one


def _txs(fx: Fixture, height: int) -> list:
    # every block changes state: one accepted submission (a round closes every 3 blocks, so
    # aggregates and schedules are written too) beside opaque payloads
    sub = fx.submit(height % 3, (height - 1) // 3 + 1, 8 + height % 9)
    return [sub, *(fx.payload(os.urandom(512)) for _ in range(6))]


def _dump(store: Store) -> dict[str, dict[bytes, bytes]]:
    return {cf: dict(store.items(cf)) for cf in COLUMN_FAMILIES}


def _assert_absent(db: dict[str, dict[bytes, bytes]], req: ledger_pb2.AppendRequest) -> None:
    """Spelled out for the in-flight block (the full comparison implies it)."""
    hdr = req.block.header
    assert u64_key(hdr.height) not in db["blocks"]
    assert block_index_key(chain.block_hash(hdr)) not in db["index"]
    for tx in req.block.txs:
        assert tx_index_key(chain.tx_id(tx)) not in db["index"]
    sp = req.block.txs[0].submit_proof
    assert st.score_key(sp.round, sp.participant) not in db["state"]
    assert sp.model_cid.encode() not in db["blobs"]


def test_kill9_during_appends_keeps_a_consistent_head(tmp_path):
    rnd = random.Random(1234)
    fx = make_genesis(n_participants=3, rounds=10_000, min_correct=12, deadline_blocks=3)
    genesis_path = tmp_path / "genesis.json"
    fx.genesis.save(genesis_path)
    b = ChainBuilder(fx)
    built: list[ledger_pb2.AppendRequest] = []  # built[h - 1] is the block at height h
    build_lock = threading.Lock()  # the streaming RPC pulls blocks from its own thread

    def block(h: int) -> ledger_pb2.AppendRequest:
        with build_lock:
            while len(built) < h:
                built.append(b.extend(_txs(fx, len(built) + 1)))
            return built[h - 1]

    replica = Ledger(tmp_path / "replica", fx.genesis)
    lp = ledger_process(tmp_path, genesis_path).start()
    durable = 0  # the replica holds exactly the blocks up to here
    outcomes: list[str] = []
    try:
        for k in range(KILLS):
            streaming = k % 2 == 1  # odd rounds: AppendStream, several blocks in flight
            delay = rnd.uniform(0.1, 0.4) if streaming else rnd.uniform(0.1, 0.7)
            killer = threading.Timer(delay, lambda pid=lp.proc.pid: os.kill(pid, signal.SIGKILL))
            acked = sent = durable
            round_over = threading.Event()  # stops this round's request stream (its own thread)
            killer.start()
            try:  # sustained appends until the process dies under us
                if streaming:

                    def requests(h: int, over: threading.Event):
                        nonlocal sent
                        while not over.is_set():
                            while h - acked > WINDOW and not over.is_set():  # noqa: B023 - live count
                                time.sleep(0.001)  # bounded: gRPC would buffer hundreds
                            req = block(h)
                            sent = h
                            yield req
                            h += 1

                    for resp in lp.stub.AppendStream(requests(durable + 1, round_over), timeout=30):
                        assert resp.height == acked + 1 and all(r.accepted for r in resp.results)
                        acked = resp.height
                else:
                    while True:
                        sent = acked + 1
                        resp = lp.stub.Append(block(sent), timeout=10)
                        assert resp.height == sent and all(r.accepted for r in resp.results)
                        acked = sent
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), exc
            killer.join()
            lp.proc.wait()
            round_over.set()

            store = Store(lp.data_dir)  # reopens (WAL recovery) without error
            try:
                head = store.head_height()
                killed = _dump(store)
            finally:
                store.close()
            # every acknowledged block survived; nothing beyond what was sent exists
            assert head is not None and acked <= head <= sent, (acked, head, sent)
            outcomes.append(f"{'stream' if streaming else 'unary'}:+{head - acked}/{sent - acked}")
            for h in range(durable + 1, head + 1):
                replica.append(block(h))
            durable = head
            if sent > head:
                _assert_absent(killed, block(head + 1))
            assert killed == _dump(replica.store), "killed ledger differs from the replica"

            lp.start()
            # resending is safe: the head again is a no-op, the next block appends
            assert lp.stub.Append(block(head), timeout=10).already_present == (head > 0)
            resp = lp.stub.Append(block(head + 1), timeout=10)
            replica.append(block(head + 1))
            durable = head + 1
            assert (resp.height, resp.state_root) == (durable, replica.head.state_root)

        assert durable > 30, f"only {durable} blocks appended"
        server_head = lp.stub.Head(ledger_pb2.HeadRequest(), timeout=5)
        assert (server_head.height, server_head.state_root) == (durable, replica.head.state_root)
    finally:
        lp.stop()
        replica.close()
    print(f"{KILLS} kills, {durable} blocks; landed beyond the acknowledged / sent unacknowledged: {outcomes}")


def test_group_commit_writes_every_block_or_none(tmp_path):
    """Blocks prepared while a synced write runs go to disk together, in ONE batch: a failing
    write leaves none of them (and drops what was prepared on top), a good one all of them."""
    fx = make_genesis(n_participants=3, rounds=10_000, min_correct=12, deadline_blocks=3)
    b = ChainBuilder(fx)
    reqs = [b.extend(_txs(fx, h)) for h in range(1, 5)]
    led = Ledger(tmp_path / "db", fx.genesis)
    try:
        group = [led.prepare(r) for r in reqs[:3]]
        real = led.store.commit_group

        def failing(commits, extra_meta=None):
            raise OSError("disk full")

        led.store.commit_group = failing  # type: ignore[method-assign]
        try:
            led.commit_group(group)
        except OSError:
            pass
        else:
            raise AssertionError("the failed write was not reported")
        assert led.head.height == 0 and led.store.block_bytes(1) is None and led.store.head_height() in (0, None)
        led.store.commit_group = real  # type: ignore[method-assign]
        group = [led.prepare(r) for r in reqs[:3]]  # dropped with the failure: prepared again
        led.commit_group(group[:2])
        assert led.head.height == 2
        led.commit_group(group[2:])
        led.append(reqs[3])
        assert led.head.height == 4
        assert all(led.stored_block(h).block == reqs[h - 1].block for h in (1, 2, 3, 4))
    finally:
        led.close()

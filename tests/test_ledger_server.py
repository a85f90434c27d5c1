"""The ledger service as a real process over gRPC: appends, refusals, queries, streams, CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from chain_factory import ChainBuilder, make_genesis, make_qc, resign
from ledger_process import REPO, LedgerProcess, ledger_process

from zkpot import chain, schedule
from zkpot.codec import content_id
from zkpot.v1 import ledger_pb2


class Net:
    def __init__(self, tmp) -> None:
        self.fx = make_genesis(n_participants=3, rounds=3, min_correct=10, deadline_blocks=50)
        self.genesis_path = tmp / "genesis.json"
        self.fx.genesis.save(self.genesis_path)
        self.b = ChainBuilder(self.fx)
        self.lp: LedgerProcess = ledger_process(tmp, self.genesis_path).start()

    @property
    def stub(self):
        return self.lp.stub

    def append(self, txs=None) -> ledger_pb2.AppendResponse:
        req = self.b.next_block(txs)
        resp = self.stub.Append(req, timeout=10)
        self.b.accept(req)
        return resp

    def head(self) -> ledger_pb2.HeadResponse:
        return self.stub.Head(ledger_pb2.HeadRequest(), timeout=5)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    n = Net(tmp_path_factory.mktemp("ledger-server"))
    yield n
    assert n.lp.stop() == 0  # graceful SIGTERM shutdown


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value.code(), exc.value.details()


def test_append_and_query_chain(net):
    fx = net.fx
    h0 = net.head()
    assert (h0.height, h0.chain_id, h0.current_round) == (0, "zkpot-test", 1)
    sub0 = fx.submit(0, 1, 20)
    r1 = net.append([sub0, fx.payload()])
    assert r1.height == 1 and not r1.already_present and all(r.accepted for r in r1.results)
    net.append([fx.submit(1, 1, 14), fx.submit(2, 1, 3)])  # closes round 1
    head = net.head()
    assert head.height == 2 and head.current_round == 2 and head.view == net.b.view
    # GetBlock by height and by hash, byte-identical to what was sent
    by_h = net.stub.GetBlock(ledger_pb2.GetBlockRequest(height=1), timeout=5)
    by_hash = net.stub.GetBlock(ledger_pb2.GetBlockRequest(block_hash=by_h.block_hash), timeout=5)
    assert by_h == by_hash and by_h.block == net.b.blocks[0].block and by_h.qc == net.b.blocks[0].qc
    assert by_h.state_root == r1.state_root
    # GetBlocks
    blocks = net.stub.GetBlocks(ledger_pb2.GetBlocksRequest(from_height=0, limit=2), timeout=5).blocks
    assert [sb.block.header.height for sb in blocks] == [0, 1]
    # GetTx
    tx = net.stub.GetTx(ledger_pb2.GetTxRequest(tx_id=chain.tx_id(sub0)), timeout=5)
    assert tx.height == 1 and tx.tx == sub0 and tx.result.accepted
    # GetTask / GetRound / LeaderSchedule
    assert net.stub.GetTask(ledger_pb2.GetTaskRequest(), timeout=5).task_id == fx.task_id
    rnd = net.stub.GetRound(ledger_pb2.GetRoundRequest(round=1), timeout=5)
    assert rnd.closed and rnd.close_height == 2 and len(rnd.submissions) == 3
    assert [s.aggregated for s in rnd.submissions] == [True, True, False]
    assert net.stub.GetRound(ledger_pb2.GetRoundRequest(), timeout=5).round == 2  # 0: the open round
    sched = net.stub.LeaderSchedule(ledger_pb2.LeaderScheduleRequest(), timeout=5)
    assert sched.epoch == 1 and sched.activation_view == net.b.view + schedule.ACTIVATION_LAG
    assert sched.leaders[0] == fx.validator_keys[0].public  # 20 correct
    # GetModel streams in chunks and reassembles to the content id
    cid = rnd.next_global_model_cid
    chunks = list(net.stub.GetModel(ledger_pb2.GetModelRequest(cid=cid, chunk_size=1000), timeout=5))
    data = b"".join(c.data for c in chunks)
    assert len(chunks) > 1 and content_id(data) == cid and chunks[0].total_size == len(data)


def test_scores_query(net):
    fx = net.fx
    s = net.stub.GetScores(ledger_pb2.GetScoresRequest(round=1), timeout=5)
    assert (s.round, s.closed, s.min_correct, s.test_set_size) == (1, True, 10, 32)
    got = [(e.participant, e.proven_correct, e.aggregated, e.validator, e.height) for e in s.scores]
    keys = [k.public for k in fx.participant_keys]
    vals = [k.public for k in fx.validator_keys]
    assert got == [(keys[0], 20, True, vals[0], 1), (keys[1], 14, True, vals[1], 2), (keys[2], 3, False, vals[2], 2)]
    open_round = net.stub.GetScores(ledger_pb2.GetScoresRequest(), timeout=5)  # 0: the open round
    assert open_round.round == net.head().current_round and not open_round.closed
    code, msg = _code(lambda: net.stub.GetScores(ledger_pb2.GetScoresRequest(round=99), timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND and "has not opened" in msg


def test_not_found_and_invalid_queries(net):
    nf, inv = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    s = net.stub
    assert _code(lambda: list(s.GetModel(ledger_pb2.GetModelRequest(cid=content_id(b"nope")), timeout=5)))[0] == nf
    assert _code(lambda: list(s.GetModel(ledger_pb2.GetModelRequest(cid="bogus"), timeout=5)))[0] == inv
    assert _code(lambda: list(s.GetModel(ledger_pb2.GetModelRequest(cid=""), timeout=5)))[0] == inv
    assert _code(lambda: s.GetBlock(ledger_pb2.GetBlockRequest(height=10_000), timeout=5))[0] == nf
    assert _code(lambda: s.GetBlock(ledger_pb2.GetBlockRequest(block_hash=b"x"), timeout=5))[0] == inv
    assert _code(lambda: s.GetBlock(ledger_pb2.GetBlockRequest(), timeout=5))[0] == inv
    assert _code(lambda: s.GetTx(ledger_pb2.GetTxRequest(tx_id=b"\x01" * 32), timeout=5))[0] == nf
    assert _code(lambda: s.GetTx(ledger_pb2.GetTxRequest(tx_id=b"\x01"), timeout=5))[0] == inv
    assert _code(lambda: s.GetRound(ledger_pb2.GetRoundRequest(round=99), timeout=5))[0] == nf
    assert _code(lambda: s.GetTask(ledger_pb2.GetTaskRequest(task_id=b"\x02" * 32), timeout=5))[0] == nf


def test_reappend_is_noop_and_conflict_refused(net):
    head = net.head()
    first = net.b.blocks[0]
    resp = net.stub.Append(first, timeout=5)
    assert resp.already_present and resp.height == 1
    # a different, properly certified block at a taken height
    other = net.b.next_block([net.fx.payload(b"fork")])
    other.block.header.height = 1
    other.block.header.parent_hash = chain.block_hash(net.fx.genesis.block().header)
    other.block.header.ClearField("parent_qc")
    resign(net.fx, other)
    code, msg = _code(lambda: net.stub.Append(other, timeout=5))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "different block" in msg
    assert net.head() == head


def test_bad_appends_refused_nothing_written(net):
    fx, b = net.fx, net.b
    head = net.head()
    inv, pre = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION

    def refused(req, code, needle):
        c, msg = _code(lambda: net.stub.Append(req, timeout=5))
        assert c == code and needle in msg, (c, msg)
        assert net.head() == head

    req = b.next_block([fx.payload()])
    req.qc.votes.pop()
    refused(req, inv, "quorum")
    req = b.next_block()
    req.qc.votes[2].CopyFrom(req.qc.votes[0])
    refused(req, inv, "duplicate vote")
    req = b.next_block()
    hdr = req.block.header
    outsider = make_genesis(seed=5).validator_keys[0]
    req.qc.CopyFrom(make_qc([*b.quorum_keys()[:2], outsider], chain.block_hash(hdr), hdr.view, hdr.height))
    refused(req, inv, "unknown signer")
    req = b.next_block()
    req.block.signature = bytes(64)
    refused(req, inv, "signature")
    req = b.next_block()
    req.block.header.parent_hash = b"\x05" * 32
    refused(resign(fx, req), pre, "parent_hash")
    req = b.next_block()
    req.block.header.height += 3
    refused(resign(fx, req), pre, "does not follow")
    req = b.next_block()
    req.block.header.parent_qc.votes.pop()
    refused(resign(fx, req), inv, "parent_qc")
    req = b.next_block()
    req.block.header.proposer = b"\x01" * 31
    refused(req, inv, "proposer must be 32 bytes")
    refused(ledger_pb2.AppendRequest(), inv, "block is required")
    # the rejections are counted by reason
    text = urllib.request.urlopen(f"http://127.0.0.1:{net.lp.metrics_port}/metrics", timeout=5).read().decode()
    assert 'zkpot_ledger_rejections_total{node="test",reason="qc",service="ledger"} 3.0' in text
    assert 'reason="conflict"' in text and "zkpot_ledger_height" in text
    net.append([fx.payload()])  # still appends the right block
    assert net.head().height == head.height + 1


def test_append_stream_answers_in_order_and_stops_at_a_refusal(net):
    fx, b = net.fx, net.b
    start = net.head().height
    reqs = [b.extend([fx.payload()]) for _ in range(6)]
    got = [(r.height, r.already_present) for r in net.stub.AppendStream(iter(reqs), timeout=30)]
    assert got == [(start + i, False) for i in range(1, 7)]
    assert net.head().height == start + 6
    good = b.extend([fx.payload()])
    bad = b.next_block([fx.payload()])
    bad.block.signature = bytes(64)
    call = net.stub.AppendStream(iter([reqs[-1], good, bad]), timeout=30)
    first, second = next(call), next(call)
    assert (first.height, first.already_present) == (start + 6, True)
    assert (second.height, second.already_present) == (start + 7, False)
    with pytest.raises(grpc.RpcError) as exc:
        next(call)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "signature" in exc.value.details()
    assert net.head().height == start + 7


def test_stream_blocks_follows_appends(net):
    start = net.head().height
    got: list[int] = []
    call = net.stub.StreamBlocks(ledger_pb2.StreamBlocksRequest(from_height=1), timeout=30)
    done = threading.Event()

    def reader():
        for sb in call:
            got.append(sb.block.header.height)
            if sb.block.header.height == start + 3:
                done.set()
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    for _ in range(3):
        net.append([net.fx.payload()])
    assert done.wait(15), got
    call.cancel()
    assert got == list(range(1, start + 4))


def test_cli_queries(net, tmp_path):
    def cli(*args):
        out = subprocess.run(
            [sys.executable, "-m", "zkpot.cli", "ledger", *args, "--target", net.lp.target],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    head = net.head()
    assert f"height        {head.height}" in cli("head")
    assert "round 1: opened at height 0, closed at height 2" in cli("round", "--round", "1")
    sched = cli("schedule")
    assert "epoch 1" in sched and "leads" in sched and "of views" in sched, sched
    scores = cli("scores", "--round", "1")
    assert "round 1 (closed): 3 proven scores, min correct 10/32" in scores and "20/32" in scores
    cid = net.stub.GetRound(ledger_pb2.GetRoundRequest(round=1), timeout=5).next_global_model_cid
    out = tmp_path / "model.bin"
    cli("model", cid, "--out", str(out))
    assert content_id(out.read_bytes()) == cid
    assert "submit_proof" in cli("block", "--height", "1")


def test_serve_refuses_a_different_genesis(tmp_path):
    from services.ledger.ledger import Ledger

    a, other = make_genesis(seed=21), make_genesis(seed=22)
    Ledger(tmp_path / "db", a.genesis).close()
    path = tmp_path / "other.json"
    other.genesis.save(path)
    out = subprocess.run(
        [sys.executable, "-m", "zkpot.cli", "ledger", "serve", "--data-dir", str(tmp_path / "db"),
         "--genesis", str(path), "--listen", "127.0.0.1:0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "different chain" in out.stderr

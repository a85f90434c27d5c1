"""Property-based fuzzing of every gRPC method of real service processes.

A ledger (with a short chain), a consensus replica (with its own ledger), a verifier and a prover
on the small shared test task run as real processes. Every RPC of each service — enumerated from
the proto descriptors, so new methods are fuzzed without touching this file — receives random
bytes and mutants of valid messages as raw request bodies (the server does the parsing). Each
answer must be OK with a parsable, sane response or a clean error status (never UNKNOWN, which
means an exception escaped a handler, nor a hang); the process must stay alive and healthy; and
nothing may be written: the ledger head, the replica's votes, certificates and mempool stay as
they were.

Fixed budget: derandomized hypothesis with a fixed number of examples per method
(ZKPOT_FUZZ_SCALE=10 multiplies it for a deeper local run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from chain_factory import ChainBuilder, Fixture, make_genesis, make_qc
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from proto_fuzz import request_bytes
from security_procs import Service, consensus_service, healthy, ledger_service, stop_all, sync_channel

from zkpot import chain, refusal
from zkpot.crypto import KeyPair
from zkpot.v1 import consensus_pb2, ledger_pb2, prover_pb2, types_pb2, verifier_pb2

SCALE = int(os.environ.get("ZKPOT_FUZZ_SCALE", "1"))
CALL_TIMEOUT_S = 10.0
STREAM_TIMEOUT_S = 1.0  # a follower stream (StreamBlocks past the head) legitimately waits for its deadline
STREAM_ITEMS = 3
# UNKNOWN: an exception escaped a handler (a crash the client sees). INTERNAL is allowed only for
# requests the framework itself cannot parse (checked below).
FORBIDDEN = {grpc.StatusCode.UNKNOWN}
STRANGER = KeyPair.from_seed(b"\x66" * 32)


@dataclass(frozen=True)
class Method:
    path: str
    name: str
    request: type[Message]
    response: type[Message]
    server_streaming: bool
    client_streaming: bool = False


def methods(module, service: str) -> list[Method]:
    from google.protobuf import message_factory

    desc = module.DESCRIPTOR.services_by_name[service]
    out = []
    for m in desc.methods:
        out.append(Method(f"/{desc.full_name}/{m.name}", m.name, message_factory.GetMessageClass(m.input_type),
                          message_factory.GetMessageClass(m.output_type), m.server_streaming, m.client_streaming))
    return out


def call(ch: grpc.Channel, method: Method, raw: bytes | list[bytes], max_items: int = STREAM_ITEMS
         ) -> tuple[grpc.StatusCode, list[Message], str]:
    """Send raw bytes (a list for a client stream); returns (status, parsed responses, details).
    Server streams: read `max_items`, then cancel."""
    if method.client_streaming:
        assert isinstance(raw, list)
        try:
            if method.server_streaming:
                out = [method.response.FromString(r)
                       for r in ch.stream_stream(method.path)(iter(raw), timeout=CALL_TIMEOUT_S)]
            else:
                out = [method.response.FromString(ch.stream_unary(method.path)(iter(raw), timeout=CALL_TIMEOUT_S))]
        except grpc.RpcError as exc:
            return exc.code(), [], exc.details() or ""
        return grpc.StatusCode.OK, out, ""
    assert isinstance(raw, bytes)
    if method.server_streaming:
        stream = ch.unary_stream(method.path)(raw, timeout=STREAM_TIMEOUT_S)
        out: list[Message] = []
        try:
            for item in stream:
                out.append(method.response.FromString(item))
                if len(out) >= max_items:
                    stream.cancel()
                    break
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and len(out) >= max_items:
                return grpc.StatusCode.OK, out, ""
            return exc.code(), out, exc.details() or ""
        return grpc.StatusCode.OK, out, ""
    try:
        resp = ch.unary_unary(method.path)(raw, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code(), [], exc.details() or ""
    return grpc.StatusCode.OK, [method.response.FromString(resp)], ""


def parses(cls: type[Message], raw: bytes) -> Message | None:
    try:
        return cls.FromString(raw)
    except (DecodeError, RuntimeError, ValueError):
        return None


Check = Callable[[Method, Message | None, grpc.StatusCode, list[Message]], None]


def fuzz(svc: Service, method: Method, seeds: list[Message], examples: int, check: Check | None = None,
         allow_deadline: bool = False, max_items: int = STREAM_ITEMS) -> dict[str, int]:
    """Run `examples` hypothesis examples against one method; returns a count of status codes."""
    codes: dict[str, int] = {}
    ch = sync_channel(svc.target)

    # no shrinking: against live services a hang costs a deadline per try; the report names the example
    @settings(max_examples=examples * SCALE, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
              report_multiple_bugs=False)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        if method.client_streaming:  # 1-3 messages: the stream's first bad one must end the call cleanly
            drawn = [request_bytes(data, seeds) for _ in range(data.draw(st.integers(1, 3)))]
            kind, raws = "+".join(k for k, _ in drawn), [r for _, r in drawn]
            parsed = [parses(method.request, r) for r in raws]
            request = None if any(p is None for p in parsed) else parsed[0]
            code, responses, details = call(ch, method, raws, max_items)
        else:
            kind, raw = request_bytes(data, seeds)
            request = parses(method.request, raw)
            code, responses, details = call(ch, method, raw, max_items)
        codes[code.name] = codes.get(code.name, 0) + 1
        assert code not in FORBIDDEN, f"{method.path} ({kind}) -> {code.name}: {details}\n{svc.tail(1500)}"
        if code == grpc.StatusCode.INTERNAL:
            # only the framework's own refusal of an unparsable body; a handler must say what is wrong
            assert request is None, f"{method.path} ({kind}) -> INTERNAL on a parsable request: {details}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert allow_deadline and method.server_streaming, f"{method.path} ({kind}) hung\n{svc.tail(3000)}"
        if code == grpc.StatusCode.OK and check is not None:
            check(method, request, code, responses)
        svc.check_alive()

    try:
        one()
    finally:
        ch.close()
    assert healthy(svc.target), f"{svc.name} unhealthy after fuzzing {method.path}:\n{svc.tail()}"
    return codes


# ---------------------------------------------------------------------------------------------- ledger + consensus


@dataclass
class ChainNet:
    fx: Fixture
    builder: ChainBuilder
    ledger: Service            # standalone ledger holding a short chain
    replica: Service           # consensus replica validator-0 (alone: it never commits)
    replica_ledger: Service
    genesis_hash: bytes


@pytest.fixture(scope="module")
def chain_net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-chain")
    fx = make_genesis(n_validators=4, n_participants=2)
    genesis_path = tmp / "genesis.json"
    fx.genesis.save(genesis_path)
    (tmp / "ledger").mkdir()
    (tmp / "replica").mkdir()
    key_path = tmp / "replica" / "key.json"
    fx.validator_keys[0].save(key_path)
    ledger = ledger_service(tmp / "ledger", genesis_path)
    replica_ledger = ledger_service(tmp / "replica", genesis_path)
    services = [ledger, replica_ledger]
    try:
        ledger.start()
        replica_ledger.start()
        replica_ledger.wait_healthy()
        # validator-0 leads view 4 at the earliest; alone it never gets past view 1, so it never votes
        replica = consensus_service(tmp / "replica", genesis_path, key_path, "validator-0", replica_ledger.target)
        services.append(replica)
        replica.start()
        ledger.wait_healthy()
        builder = ChainBuilder(fx)
        with sync_channel(ledger.target) as ch:
            from zkpot.v1 import ledger_pb2_grpc

            stub = ledger_pb2_grpc.LedgerStub(ch)
            for txs in ([fx.payload(b"one"), fx.submit(0, round_=1, claimed=20)], [fx.payload(b"two")]):
                req = builder.next_block(txs)
                stub.Append(req, timeout=30)
                builder.accept(req)
        replica.wait_healthy()
        yield ChainNet(fx, builder, ledger, replica, replica_ledger, chain.block_hash(fx.genesis.block().header))
    finally:
        stop_all(services[::-1])


def _ledger_head(svc: Service) -> ledger_pb2.HeadResponse:
    with sync_channel(svc.target) as ch:
        raw = ch.unary_unary("/zkpot.v1.Ledger/Head")(b"", timeout=10)
    return ledger_pb2.HeadResponse.FromString(raw)


def _ledger_seeds(net: ChainNet) -> dict[str, list[Message]]:
    fx, b = net.fx, net.builder
    first, second = b.blocks
    forged = ChainBuilder(fx)
    forged.height, forged.view, forged.head_hash, forged.head_qc = b.height, b.view, b.head_hash, b.head_qc
    unsigned_next = forged.next_block([fx.payload(b"forged")])
    # certified by strangers: no mutation can turn it into a block a quorum signed
    unsigned_next.qc.CopyFrom(make_qc([STRANGER], chain.block_hash(unsigned_next.block.header),
                                      unsigned_next.qc.view, unsigned_next.qc.height))
    tx_id = chain.tx_id(first.block.txs[0])
    return {
        "Append": [first, second, unsigned_next],
        "GetBlock": [ledger_pb2.GetBlockRequest(height=1),
                     ledger_pb2.GetBlockRequest(block_hash=chain.block_hash(second.block.header))],
        "GetBlocks": [ledger_pb2.GetBlocksRequest(from_height=0, limit=2)],
        "GetTx": [ledger_pb2.GetTxRequest(tx_id=tx_id)],
        "GetTask": [ledger_pb2.GetTaskRequest(task_id=fx.task_id)],
        "GetRound": [ledger_pb2.GetRoundRequest(round=1)],
        "GetModel": [ledger_pb2.GetModelRequest(cid=fx.genesis.manifest.artefacts["initial_model"], chunk_size=64)],
        "StreamBlocks": [ledger_pb2.StreamBlocksRequest(from_height=1)],
    }


LEDGER_METHODS = methods(ledger_pb2, "Ledger")


@pytest.mark.parametrize("method", LEDGER_METHODS, ids=lambda m: m.name)
def test_fuzz_ledger(chain_net: ChainNet, method: Method) -> None:
    before = _ledger_head(chain_net.ledger)
    assert before.height == 2
    ledger_dir = chain_net.ledger.log_path.parent
    files_before = set(os.listdir(ledger_dir))

    def check(m: Method, request: Message | None, code: grpc.StatusCode, responses: list[Message]) -> None:
        if m.name in ("Append", "AppendStream"):  # garbage is never appended; re-sending a stored block is a no-op
            assert all(r.already_present for r in responses), f"{m.name} accepted a mutant: {request}"

    all_seeds = _ledger_seeds(chain_net)
    all_seeds["AppendStream"] = all_seeds["Append"]
    seeds = all_seeds.get(method.name, [method.request()])
    examples = {"Append": 40, "AppendStream": 30, "StreamBlocks": 8}.get(method.name, 15)
    follower = method.name == "StreamBlocks"  # waits for blocks past the head until its deadline
    codes = fuzz(chain_net.ledger, method, seeds, examples, check, allow_deadline=follower)
    after = _ledger_head(chain_net.ledger)
    assert (after.height, after.block_hash, after.state_root) == (before.height, before.block_hash, before.state_root)
    # nothing left beside the database (e.g. a cancelled backup's scratch checkpoint is removed)
    deadline = time.monotonic() + 5
    while set(os.listdir(ledger_dir)) != files_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(os.listdir(ledger_dir)) == files_before
    print(method.path, codes)


@pytest.mark.parametrize("name", ["Check", "Watch"])
def test_fuzz_health_service(chain_net: ChainNet, name: str) -> None:
    from grpc_health.v1 import health_pb2

    (m,) = [m for m in methods(health_pb2, "Health") if m.name == name]
    seeds = [health_pb2.HealthCheckRequest(service="zkpot.v1.Ledger")]
    print(m.path, fuzz(chain_net.ledger, m, seeds, 15, max_items=1))  # Watch: the current status, then cancel


def _consensus_seeds(net: ChainNet) -> dict[str, list[Message]]:
    fx = net.fx
    bad_sig = fx.payload(b"bad signature")
    bad_sig.nonce += 1_000_000  # the signature no longer covers it
    stranger_tx = chain.sign_tx(STRANGER, types_pb2.Transaction(payload=b"stranger", nonce=1))
    stranger_tx.signature = bytes(64)
    header = types_pb2.BlockHeader(chain_id=fx.genesis.chain_id, height=1, view=1, parent_hash=net.genesis_hash,
                                   txs_root=chain.txs_root([bad_sig]), timestamp_ms=fx.genesis.genesis_time_ms + 1)
    block = chain.sign_block(STRANGER, types_pb2.Block(header=header, txs=[bad_sig]))
    bh = chain.block_hash(header)
    stranger_qc = make_qc([STRANGER], bh, 1, 1)
    timeout = chain.make_timeout(STRANGER, 2, stranger_qc)
    proposal_tc = consensus_pb2.Proposal(block=block)
    proposal_tc.tc.CopyFrom(consensus_pb2.TimeoutCert(view=0, timeouts=[timeout]))
    txs = consensus_pb2.SubmitTxRequest(txs=[bad_sig, stranger_tx])
    return {
        "SubmitTx": [txs],
        "GossipTxs": [txs],
        "Propose": [consensus_pb2.Proposal(block=block), proposal_tc],
        "SendVote": [chain.make_vote(STRANGER, bh, 1, 1)],
        "StreamVotes": [chain.make_vote(STRANGER, bh, 1, 1)],
        "SendTimeout": [timeout, chain.make_timeout(STRANGER, 1, None)],
        "FetchBlocks": [consensus_pb2.FetchBlocksRequest(block_hash=net.genesis_hash, max_blocks=2),
                        consensus_pb2.FetchBlocksRequest(block_hash=bh, max_blocks=1)],
    }


def _status(svc: Service) -> consensus_pb2.StatusResponse:
    with sync_channel(svc.target) as ch:
        return consensus_pb2.StatusResponse.FromString(ch.unary_unary("/zkpot.v1.Consensus/Status")(b"", timeout=10))


CONSENSUS_METHODS = methods(consensus_pb2, "Consensus")


@pytest.mark.parametrize("method", CONSENSUS_METHODS, ids=lambda m: m.name)
def test_fuzz_consensus(chain_net: ChainNet, method: Method) -> None:
    def check(m: Method, request: Message | None, code: grpc.StatusCode, responses: list[Message]) -> None:
        if m.name == "SubmitTx":
            assert request is not None
            assert len(responses[0].results) == len(request.txs)
            assert not any(r.admitted for r in responses[0].results), "a mutant was admitted"

    seeds = _consensus_seeds(chain_net).get(method.name, [method.request()])
    codes = fuzz(chain_net.replica, method, seeds, 30, check)
    st_ = _status(chain_net.replica)
    # nothing counted: no vote cast, no certificate formed, nothing admitted or committed
    assert (st_.mempool_size, st_.high_qc_view, st_.last_voted_view, st_.committed_height) == (0, 0, 0, 0), st_
    assert _ledger_head(chain_net.replica_ledger).height == 0
    print(method.path, codes)


# ---------------------------------------------------------------------------------------------- verifier + prover


@dataclass
class ZkpNet:
    verifier: Service
    prover: Service
    honest_tx: types_pb2.Transaction
    request: prover_pb2.ProveRoundRequest


@pytest.fixture(scope="module")
def zkp_net(tmp_path_factory):
    from zkp_env import shared_env

    env = shared_env()
    tmp = tmp_path_factory.mktemp("fuzz-zkp")
    verifier = Service("verifier", [], tmp / "verifier.log")
    verifier.args = ["verifier", "serve", "--task-dir", str(env.task.dir), "--genesis", str(env.genesis_path),
                     "--listen", verifier.target, "--node", "fuzz-v", "--workdir", str(tmp)]
    prover = Service("prover", [], tmp / "prover.log")
    prover.args = ["prover", "serve", "--task-dir", str(env.task.dir), "--shard", str(env.shard_path),
                   "--listen", prover.target, "--node", "fuzz-p", "--workdir", str(tmp)]
    try:
        verifier.start()
        prover.start()
        verifier.wait_healthy()
        prover.wait_healthy()
        # the task's id flipped in one byte: the prover refuses it before training, whatever else a mutant holds
        wrong_task = bytes([env.task.task_id[0] ^ 1]) + env.task.task_id[1:]
        request = prover_pb2.ProveRoundRequest(task_id=wrong_task, round=1, participant=env.bob.public,
                                               global_model=env.task.initial_model, local_epochs=1, seed=3)
        yield ZkpNet(verifier, prover, env.honest_tx, request)
    finally:
        stop_all([prover, verifier])


def test_fuzz_verifier(zkp_net: ZkpNet) -> None:
    (method,) = methods(verifier_pb2, "Verifier")
    payload = chain.sign_tx(STRANGER, types_pb2.Transaction(payload=b"p", nonce=1))

    def check(m: Method, request: Message | None, code: grpc.StatusCode, responses: list[Message]) -> None:
        assert request is not None
        results = responses[0].results
        assert len(results) == len(request.txs)
        for tx, r in zip(request.txs, results, strict=True):
            assert r.tx_id == chain.tx_id(tx)
            assert r.valid == (r.reason == refusal.ACCEPTED)
            if r.valid:  # only the honest proof itself (a mutant that kept every signed field) may pass
                assert chain.tx_id(tx) == chain.tx_id(zkp_net.honest_tx)

    seeds = [verifier_pb2.VerifyRequest(txs=[zkp_net.honest_tx]), verifier_pb2.VerifyRequest(txs=[payload])]
    print(method.path, fuzz(zkp_net.verifier, method, seeds, 80, check))
    # still verifies honest work after the garbage
    with sync_channel(zkp_net.verifier.target) as ch:
        raw = ch.unary_unary(method.path)(seeds[0].SerializeToString(), timeout=60)
    assert verifier_pb2.VerifyResponse.FromString(raw).results[0].valid


def test_fuzz_prover(zkp_net: ZkpNet) -> None:
    by_name = {m.name: m for m in methods(prover_pb2, "Prover")}
    assert set(by_name) == {"ProveRound", "Info"}, set(by_name)  # a new method needs its own fuzzing here
    method = by_name["ProveRound"]

    def check(m: Method, request: Message | None, code: grpc.StatusCode, responses: list[Message]) -> None:
        raise AssertionError(f"the prover accepted a request for another task: {request}")

    print(method.path, fuzz(zkp_net.prover, method, [zkp_net.request], 40, check))
    # Info answers anything that parses (it reads nothing from the request) and nothing else crashes it
    print(by_name["Info"].path, fuzz(zkp_net.prover, by_name["Info"], [prover_pb2.ProverInfoRequest()], 20))


def test_oversized_small_requests_are_refused(chain_net: ChainNet) -> None:
    """Votes, timeouts and status requests are small: a large one is refused before it is parsed."""
    with sync_channel(chain_net.replica.target) as ch:
        for path, size in (("/zkpot.v1.Consensus/SendVote", 5000), ("/zkpot.v1.Consensus/Status", 2000)):
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(path)(bytes(size), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, path
    with sync_channel(chain_net.ledger.target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/zkpot.v1.Ledger/Head")(b"\x0a" + bytes(70_000), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the big method still takes big requests (the refusal is for the chain, not the size)
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/zkpot.v1.Ledger/Append")(ledger_pb2.AppendRequest(
                block=types_pb2.Block(txs=[types_pb2.Transaction(payload=bytes(200_000))])).SerializeToString(),
                timeout=10)
        assert err.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    assert healthy(chain_net.replica.target) and healthy(chain_net.ledger.target)




def test_cancelled_calls_leave_nothing_behind(chain_net: ChainNet) -> None:
    """Backups cut off by short deadlines at any point (mid-checkpoint included) leave no checkpoint on disk."""
    ledger_dir = chain_net.ledger.log_path.parent
    before = set(os.listdir(ledger_dir))
    with sync_channel(chain_net.ledger.target) as ch:
        for i in range(12):
            stream = ch.unary_stream("/zkpot.v1.Ledger/Backup")(b"", timeout=0.002 * (i + 1) ** 2)
            try:
                for _ in stream:
                    pass
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
    deadline = time.monotonic() + 10
    while set(os.listdir(ledger_dir)) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(os.listdir(ledger_dir)) == before
    assert healthy(chain_net.ledger.target)


def test_unknown_fields_in_a_signed_transaction_are_refused(chain_net: ChainNet) -> None:
    """Wire malleability: extra unknown fields keep a transaction's id and signature valid (both
    cover the canonical encoding), so a replica must refuse them rather than store other bytes."""
    fx = chain_net.fx
    honest = fx.submit(1, round_=1, claimed=3)
    nested = types_pb2.Transaction()
    nested.CopyFrom(honest)
    nested.submit_proof.proof = nested.submit_proof.proof or b"p"
    for name, raw in (
        ("top level", honest.SerializeToString() + b"\xf8\x3f\x01"),     # field 1023, varint 1
        ("inside submit_proof", _with_unknown_in_submit_proof(honest)),
    ):
        forged = types_pb2.Transaction.FromString(raw)
        # the attack is real: same id, and the signature still verifies
        assert chain.tx_id(forged) == chain.tx_id(honest) and chain.tx_signature_ok(forged), name
        request = b"\x0a" + _varint(len(raw)) + raw   # SubmitTxRequest.txs[0], the bytes as sent
        with sync_channel(chain_net.replica.target) as ch:
            resp = consensus_pb2.SubmitTxResponse.FromString(
                ch.unary_unary("/zkpot.v1.Consensus/SubmitTx")(request, timeout=30))
        (result,) = resp.results
        assert not result.admitted and result.reason == refusal.MALFORMED, (name, result)
        assert result.detail.startswith("unknown protobuf fields"), (name, result)
    assert _status(chain_net.replica).mempool_size == 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _with_unknown_in_submit_proof(tx: types_pb2.Transaction) -> bytes:
    body = types_pb2.Transaction()
    body.CopyFrom(tx)
    sp_raw = body.submit_proof.SerializeToString() + b"\xf8\x3f\x01"
    body.ClearField("submit_proof")
    field = types_pb2.Transaction.DESCRIPTOR.fields_by_name["submit_proof"].number
    return body.SerializeToString() + _varint(field << 3 | 2) + _varint(len(sp_raw)) + sp_raw


def test_a_transaction_over_the_block_limit_is_refused_at_admission(chain_net: ChainNet) -> None:
    """A transaction larger than a block can never be committed; held, it was skipped by every
    proposal and re-gossiped for ever (issue 18.3). It is refused with the reason, nothing kept."""
    fx = chain_net.fx
    # just over a block: parsed, and refused by the admission rule with its reason
    big = chain.sign_tx(fx.participant_keys[0], types_pb2.Transaction(payload=bytes(8 * 1024 * 1024 + 1), nonce=77))
    with sync_channel(chain_net.replica.target) as ch:
        resp = consensus_pb2.SubmitTxResponse.FromString(ch.unary_unary("/zkpot.v1.Consensus/SubmitTx")(
            consensus_pb2.SubmitTxRequest(txs=[big]).SerializeToString(), timeout=60))
        (result,) = resp.results
        assert not result.admitted and result.reason == refusal.TOO_LARGE, result
        assert "over the block limit of 8388608 bytes" in result.detail
        # a request over a block and its overhead is refused before it is even parsed
        huge = chain.sign_tx(fx.participant_keys[0], types_pb2.Transaction(payload=bytes(10 * 1024 * 1024), nonce=78))
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/zkpot.v1.Consensus/SubmitTx")(
                consensus_pb2.SubmitTxRequest(txs=[huge]).SerializeToString(), timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert _status(chain_net.replica).mempool_size == 0 and healthy(chain_net.replica.target)

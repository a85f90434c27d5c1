"""Four real replicas (`zkpot consensus serve`), each with its own real `zkpot ledger serve`, on loopback.

Payload transactions only (no verifier). Checks: everything submitted is committed on every
ledger with byte-identical blocks; commits continue with a replica killed (-9); the killed
replica rejoins after a restart and catches up; commits resume after the current leader is
killed (one timeout, then a TC).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from chain_factory import Fixture, make_genesis
from ledger_process import REPO, LedgerProcess, free_port

from zkpot import chain, refusal
from zkpot.grpcutil import CHANNEL_OPTIONS
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc, ledger_pb2, types_pb2

N = 4
IDLE_MS = 200
BASE_TIMEOUT_MS = 400


@dataclass
class Replica:
    index: int
    name: str
    port: int
    metrics_port: int
    ledger: LedgerProcess
    data_dir: Path
    key_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, genesis_path: Path, peers: list[str], extra: list[str] | None = None) -> None:
        cmd = [
            sys.executable, "-m", "zkpot.cli", "consensus", "serve", "--genesis", str(genesis_path),
            "--key", str(self.key_path), "--node", self.name, "--listen", self.target,
            "--ledger", self.ledger.target, "--data-dir", str(self.data_dir),
            "--metrics-port", str(self.metrics_port), "--idle-block-ms", str(IDLE_MS),
            "--base-timeout-ms", str(BASE_TIMEOUT_MS), "--max-timeout-ms", "2000",
            "--log-level", os.environ.get("ZKPOT_TEST_LOG_LEVEL", "INFO"),
            *[f"--peer={p}" for p in peers], *(extra or []),
        ]  # fmt: skip
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stub(self) -> consensus_pb2_grpc.ConsensusStub:
        return consensus_pb2_grpc.ConsensusStub(grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS))


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tails}")


def ledger_blocks(replica: Replica) -> list[ledger_pb2.StoredBlock]:
    out: list[ledger_pb2.StoredBlock] = []
    while True:
        resp = replica.ledger.stub.GetBlocks(ledger_pb2.GetBlocksRequest(from_height=len(out), limit=500), timeout=10)
        if not resp.blocks:
            return out
        out.extend(resp.blocks)


def committed_ids(replica: Replica) -> set[bytes]:
    return {r.tx_id for sb in ledger_blocks(replica) for r in sb.results if r.accepted}


def ledger_height(replica: Replica) -> int:
    return replica.ledger.stub.Head(ledger_pb2.HeadRequest(), timeout=5).height


def submit(fx: Fixture, replica: Replica, count: int, tag: bytes) -> set[bytes]:
    txs = [fx.payload(tag + os.urandom(256 - len(tag))) for _ in range(count)]
    ids: set[bytes] = set()
    stub = replica.stub()
    for i in range(0, count, 100):
        resp = stub.SubmitTx(consensus_pb2.SubmitTxRequest(txs=txs[i : i + 100]), timeout=30)
        assert all(r.admitted for r in resp.results), [r.detail for r in resp.results if not r.admitted][:3]
        ids.update(r.tx_id for r in resp.results)
    return ids


def assert_identical(replicas: list[Replica]) -> int:
    """Every ledger holds the same block bytes at every height they share; returns that height."""
    chains = [ledger_blocks(r) for r in replicas]
    common = min(len(c) for c in chains)
    assert common > 1
    for h in range(common):
        ref = chains[0][h].block.SerializeToString(deterministic=True)
        for c in chains[1:]:
            assert c[h].block.SerializeToString(deterministic=True) == ref, f"blocks differ at height {h}"
            assert c[h].block_hash == chains[0][h].block_hash
    return common - 1


@pytest.fixture
def network(tmp_path: Path):
    fx = make_genesis(n_validators=N, n_participants=N)
    genesis_path = tmp_path / "genesis.json"
    fx.genesis.save(genesis_path)
    replicas: list[Replica] = []
    for i, member in enumerate(fx.genesis.validators):
        d = tmp_path / member.name
        d.mkdir()
        key_path = d / "key.json"
        fx.validator_keys[i].save(key_path)
        ledger = LedgerProcess(d / "ledger-db", genesis_path, free_port(), free_port(), d / "ledger.log")
        replicas.append(
            Replica(i, member.name, free_port(), free_port(), ledger, d / "consensus", key_path, d / "consensus.log")
        )
    peers = [f"{r.name}@{r.target}" for r in replicas]
    try:
        for r in replicas:
            r.ledger.start()
        for r in replicas:
            r.start(genesis_path, peers)
        yield fx, replicas, genesis_path, peers
    finally:
        for r in replicas:
            r.stop()
        for r in replicas:
            r.ledger.stop()


def test_four_replicas_commit_identically_and_survive_crashes(network) -> None:
    fx, replicas, genesis_path, peers = network
    logs = [r.log_path for r in replicas]
    all_ids: set[bytes] = set()

    # 1. happy path: a few hundred payload txs committed on all four ledgers, identical blocks
    wait_for("replicas up", lambda: all(r.stub().Status(consensus_pb2.StatusRequest(), timeout=2) for r in replicas),
             60, logs)
    t0 = time.monotonic()
    all_ids |= submit(fx, replicas[0], 200, b"a")
    all_ids |= submit(fx, replicas[1], 100, b"b")
    wait_for("300 txs on all ledgers", lambda: all(all_ids <= committed_ids(r) for r in replicas), 60, logs)
    print(f"300 txs committed on 4 ledgers in {time.monotonic() - t0:.2f}s")
    assert_identical(replicas)

    # 2. kill -9 one replica: the other three keep committing
    victim = replicas[3]
    victim.kill9()
    alive = replicas[:3]
    ids = submit(fx, replicas[0], 100, b"c")
    all_ids |= ids
    wait_for("commits without replica 3", lambda: all(ids <= committed_ids(r) for r in alive), 60, logs)

    # 3. restart it: it rejoins and its ledger catches up
    victim.start(genesis_path, peers)
    target = ledger_height(replicas[0])
    wait_for("replica 3 catching up", lambda: ledger_height(victim) >= target, 60, logs)
    assert all_ids <= committed_ids(victim)

    # 4. kill -9 the current leader: after a timeout the next leader carries on
    status = replicas[0].stub().Status(consensus_pb2.StatusRequest(), timeout=5)
    leader = next(r for r in replicas if fx.validator_keys[r.index].public == status.leader)
    leader.kill9()
    alive = [r for r in replicas if r is not leader]
    ids = submit(fx, alive[0], 100, b"d")
    all_ids |= ids
    wait_for("commits after the leader died", lambda: all(ids <= committed_ids(r) for r in alive), 60, logs)
    assert_identical(alive)
    assert all_ids <= committed_ids(alive[0])


def test_submit_proof_refused_without_verifier(network) -> None:
    fx, replicas, _, _ = network
    for replica in replicas:  # the CLI below talks to replica 1 and reads replica 2: all must be up
        wait_for("replica up", lambda r=replica: r.stub().Status(consensus_pb2.StatusRequest(), timeout=2), 60,
                 [replica.log_path])
    tx = fx.submit(0, round_=1, claimed=20)
    bad = fx.payload(b"x")
    bad.signature = bytes(64)
    empty = chain.sign_tx(fx.publisher, types_pb2.Transaction(nonce=1))
    resp = replicas[0].stub().SubmitTx(consensus_pb2.SubmitTxRequest(txs=[tx, bad, empty]), timeout=10)
    assert [r.admitted for r in resp.results] == [False, False, False]
    assert resp.results[0].reason == refusal.VERIFIER_UNAVAILABLE and "no verifier" in resp.results[0].detail
    assert resp.results[1].reason == refusal.BAD_SIGNATURE
    assert resp.results[2].reason == refusal.MALFORMED

    # the smoke-test commands
    base = [sys.executable, "-m", "zkpot.cli", "consensus"]
    key_path = replicas[0].key_path  # a validator key: payload senders must be genesis members
    out = subprocess.run([*base, "submit", "--target", replicas[1].target, "--key", str(key_path),
                          "--payload-hex", "00ff", "--payload-hex", "beef"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    tx_ids = [bytes.fromhex(line.split()[0]) for line in out.stdout.splitlines()]
    assert len(tx_ids) == 2
    wait_for("CLI txs committed", lambda: set(tx_ids) <= committed_ids(replicas[2]), 30, [r.log_path for r in replicas])
    out = subprocess.run([*base, "status", "--target", replicas[0].target], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert fields["node"] == fx.validator_keys[0].public.hex()
    assert int(fields["committed_height"]) >= 1 and int(fields["view"]) > 1


def test_f_plus_one_crashed_stalls_safely_then_resumes(network) -> None:
    """n = 4, f = 1: with two replicas killed no quorum exists, so nothing new may commit (and
    nothing may diverge); when both come back (same data dirs) commits resume and the restarted
    ledgers catch up to byte-identical blocks."""
    fx, replicas, genesis_path, peers = network
    logs = [r.log_path for r in replicas]
    wait_for("replicas up", lambda: all(r.stub().Status(consensus_pb2.StatusRequest(), timeout=2) for r in replicas),
             60, logs)
    first = submit(fx, replicas[0], 50, b"p")
    wait_for("first txs everywhere", lambda: all(first <= committed_ids(r) for r in replicas), 60, logs)

    down = replicas[2:]
    for r in down:
        r.kill9()
    alive = replicas[:2]
    time.sleep(1.0)  # a block certified just before the kill may still commit
    stalled_at = [ledger_height(r) for r in alive]
    stuck = submit(fx, alive[0], 50, b"q")
    time.sleep(4 * BASE_TIMEOUT_MS / 1000 + IDLE_MS / 1000)  # several view timeouts
    assert [ledger_height(r) for r in alive] == stalled_at, "committed without a quorum"
    assert not stuck & committed_ids(alive[1])
    views = [r.stub().Status(consensus_pb2.StatusRequest(), timeout=5).view for r in alive]
    assert_identical(alive)

    for r in down:
        r.start(genesis_path, peers)
    wait_for("stalled txs committed on all four", lambda: all(stuck <= committed_ids(r) for r in replicas), 90, logs)
    top = ledger_height(alive[0])
    wait_for("restarted ledgers caught up", lambda: all(ledger_height(r) >= top for r in down), 60, logs)
    assert assert_identical(replicas) >= top
    after = [r.stub().Status(consensus_pb2.StatusRequest(), timeout=5).view for r in alive]
    assert all(a > v for a, v in zip(after, views, strict=True))


def metric(replica: Replica, name: str, labels: str) -> float:
    """One series of a replica's /metrics (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_replica_with_wiped_data_dir_catches_up_forward_and_votes_again(network) -> None:
    """kill -9 a replica and its ledger, delete both data dirs (blocks and safety state), start
    them again empty: the replica fetches the committed chain by height from one peer at a time,
    verifying every block and certificate, its ledger ends byte-identical to the others', and
    once past the views it might have signed in before the wipe it votes again (the network
    then needs it: a second replica is killed and commits go on with the three left)."""
    fx, replicas, genesis_path, peers = network
    logs = [r.log_path for r in replicas]
    wait_for("replicas up", lambda: all(r.stub().Status(consensus_pb2.StatusRequest(), timeout=2) for r in replicas),
             60, logs)
    ids = submit(fx, replicas[0], 200, b"w")
    wait_for("first txs everywhere", lambda: all(ids <= committed_ids(r) for r in replicas), 60, logs)

    victim = replicas[3]
    victim.kill9()
    victim.ledger.kill9()
    shutil.rmtree(victim.data_dir)
    shutil.rmtree(victim.ledger.data_dir)
    more = submit(fx, replicas[0], 200, b"x")
    wait_for("commits without the wiped replica", lambda: all(more <= committed_ids(r) for r in replicas[:3]),
             60, logs)
    wait_for("a longer chain", lambda: ledger_height(replicas[0]) >= 40, 60, logs)

    # fresh ports where peers do not care (a port left free for long may be taken by another test)
    victim.ledger.port, victim.ledger.metrics_port, victim.metrics_port = free_port(), free_port(), free_port()
    victim.ledger.start()
    assert ledger_height(victim) == 0
    victim.start(genesis_path, peers)
    target = ledger_height(replicas[0])
    wait_for("wiped replica caught up", lambda: ledger_height(victim) >= target, 90, logs)
    assert (ids | more) <= committed_ids(victim)
    assert assert_identical(replicas) >= target
    fetched = metric(victim, "zkpot_consensus_catchup_blocks_total", 'outcome="committed"')
    assert fetched >= target - 5, f"only {fetched} of {target} blocks came by forward catch-up"
    # ... and were delivered (the metric counts fetched blocks: until stop 28 every delivery raised
    # and the replica caught up through parent-by-parent sync while this test still passed)
    assert "caught up" in victim.log_path.read_text(), "forward catch-up fetched but delivered nothing"
    assert "signing nothing up to view" in victim.log_path.read_text()

    # it signs again once the network is past the views it may have signed in before the wipe
    # (until then it counts as a faulty replica: killing another one now would stall, safely)
    wait_for("the wiped replica voting", lambda: metric(victim, "zkpot_consensus_votes_sent_total", "") > 0, 30, logs)
    # with replica 0 down the other three (the wiped one included) are the quorum
    replicas[0].kill9()
    alive = replicas[1:]
    last = submit(fx, alive[0], 50, b"y")
    wait_for("commits that need the wiped replica's votes", lambda: all(last <= committed_ids(r) for r in alive),
             60, logs)
    assert_identical(alive)


def test_a_replicas_ledger_killed_and_restarted_is_fed_again(network) -> None:
    """Issue 19.6: a replica whose ledger died (kill -9) keeps voting (the others commit), queues
    its appends, and feeds the restarted ledger (same data dir and port) up to the others' height.
    The time from restart to caught up is printed (it was ~5 s: a 5 s retry cap and gRPC's default
    reconnect backoff; now 1 s and 0.2-2 s)."""
    fx, replicas, genesis_path, peers = network
    logs = [r.log_path for r in replicas]
    wait_for("replicas up", lambda: all(r.stub().Status(consensus_pb2.StatusRequest(), timeout=2) for r in replicas),
             60, logs)
    victim = replicas[1]
    victim.ledger.kill9()
    txs = submit(fx, replicas[0], 50, b"L")
    wait_for("txs committed on the others", lambda: all(txs <= committed_ids(r) for r in replicas if r is not victim),
             60, logs)
    victim.ledger.start(timeout_s=60)
    t0 = time.monotonic()
    top = ledger_height(replicas[0])
    wait_for("restarted ledger fed up to the others' height", lambda: ledger_height(victim) >= top, 60,
             [*logs, victim.ledger.log_path])
    print(f"restarted ledger caught up {top} blocks' height in {time.monotonic() - t0:.2f}s")
    assert txs <= committed_ids(victim)
    assert_identical(replicas)

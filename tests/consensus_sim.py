"""A deterministic, seeded, in-process simulator of a consensus network (virtual time).

Real ``Core`` replicas (real ed25519, certificates, safety rules, pacemaker, synchronizer,
mempool) talk through a simulated network instead of gRPC. Time is virtual: the event loop jumps
straight to its next timer, so a scenario of several simulated seconds costs only the CPU of its
messages, and a seed replays exactly (no threads; CPU work runs inline). Each scenario draws from
its seed: n, message delays and drops (random delays also reorder), a partition that heals, and
one Byzantine behaviour — Twins (two replicas sharing one key, each with its own safety state),
an equivocating leader (two conflicting blocks per view it leads), a replica that crashes and
restarts from its ledger and safety state, or one that stays down. After GST (global
stabilisation time) the network delivers everything within a bound; the checks are then that no
two different blocks were ever committed at one height, that every honest replica commits new
blocks after GST, and that every transaction handed to an honest replica gets committed.

Usable from tests and by hand: ``python tests/consensus_sim.py SEED`` prints one scenario's
trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import random
import selectors
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.consensus.checks import Rejected
from services.consensus.clients import TxChecker
from services.consensus.core import Config, Core
from services.consensus.runtime import Runtime
from services.consensus.safety import SafetyState
from zkpot import chain, crypto
from zkpot import coin as zkpot_coin
from zkpot.v1 import consensus_pb2, ledger_pb2, types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_factory import Fixture, make_genesis

EPOCH_MS = 1_767_225_600_000  # virtual wall clock origin (2026-01-01)


# ---------------------------------------------------------------------------------------- time


class _VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: a select() that would block advances the loop's virtual clock instead."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing is scheduled")
        self._loop.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def call_later(self, delay, callback, *args, context=None):
        # a positive delay below the clock's resolution would fire without time moving on, and a
        # timer loop that recomputes "time left" would spin forever: round it up to 1 us
        if 0 < delay < 1e-6:
            delay = 1e-6
        return super().call_later(delay, callback, *args, context=context)


class SimRuntime(Runtime):
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall_ms(self) -> int:
        return EPOCH_MS + int(asyncio.get_running_loop().time() * 1000)

    async def offload(self, fn, *args):
        return fn(*args)

    async def offload_bulk(self, fn, *args):
        return fn(*args)


RUNTIME = SimRuntime()


# ---------------------------------------------------------------------------------------- state


class MemSafetyStore:
    """Keeps the safety state across a simulated crash (the real file store is tested elsewhere)."""

    def __init__(self) -> None:
        self.state = SafetyState()
        self.saved = False

    def exists(self) -> bool:
        return self.saved

    def load(self) -> SafetyState:
        return copy.deepcopy(self.state)

    def save(self, state: SafetyState) -> None:
        self.state = copy.deepcopy(state)
        self.saved = True


class SimLedger:
    """The ledger as consensus sees it: height-ordered appends of certified blocks, reads."""

    target = "sim-ledger"

    def __init__(self, fx: Fixture) -> None:
        self.fx = fx
        self.stored: list[ledger_pb2.StoredBlock] = []
        self.by_hash: dict[bytes, ledger_pb2.StoredBlock] = {}

    async def head(self) -> ledger_pb2.HeadResponse:
        return ledger_pb2.HeadResponse(height=len(self.stored), chain_id=self.fx.genesis.chain_id)

    async def leader_schedule(self) -> ledger_pb2.LeaderScheduleResponse:
        return ledger_pb2.LeaderScheduleResponse(leaders=[v.public_key for v in self.fx.genesis.validators])

    async def append(self, block: types_pb2.Block, qc: types_pb2.QuorumCert) -> ledger_pb2.AppendResponse:
        # (the real ledger re-checks the QC; here the core's own checks are what is under test)
        assert block.header.height == len(self.stored) + 1, "appends must come in height order"
        h = chain.block_hash(block.header)
        assert qc.block_hash == h
        if self.stored:
            assert block.header.parent_hash == self.stored[-1].block_hash, "appended block does not extend the tip"
        stored = ledger_pb2.StoredBlock(block=block, qc=qc, block_hash=h)
        self.stored.append(stored)
        self.by_hash[h] = stored
        return ledger_pb2.AppendResponse(height=block.header.height)

    async def block_by_hash(self, block_hash: bytes) -> ledger_pb2.StoredBlock | None:
        return self.by_hash.get(block_hash)

    async def blocks(self, from_height: int, limit: int) -> list[ledger_pb2.StoredBlock]:
        return self.stored[max(0, from_height - 1) : max(0, from_height - 1) + limit]

    async def block_at(self, height: int) -> ledger_pb2.StoredBlock | None:
        return self.stored[height - 1] if 1 <= height <= len(self.stored) else None

    @property
    def height(self) -> int:
        return len(self.stored)

    def hashes(self) -> list[bytes]:
        return [b.block_hash for b in self.stored]


# ---------------------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class Partition:
    start: float
    end: float
    groups: tuple[frozenset[int], ...]  # replica slots; slots in different groups cannot talk

    def cuts(self, now: float, a: int, b: int) -> bool:
        if not self.start <= now < self.end:
            return False
        return not any(a in g and b in g for g in self.groups)


@dataclass(frozen=True)
class Scenario:
    seed: int
    n: int
    byzantine: str            # none | twins | equivocator | crash_restart | down | bad_coin (fallback only)
    drop: float               # loss probability before GST
    delay_s: float            # max one-way delay before GST (uniform; random delays reorder)
    partitions: tuple[Partition, ...]
    gst_s: float              # from here on: no loss, delay <= SYNC_DELAY_S, no partition
    end_s: float
    crash_at_s: float = 0.0
    restart_at_s: float = 0.0
    tx_batches: int = 6
    wipe: bool = False        # crash_restart: the replica comes back with an empty ledger and no safety state
    fallback: bool = False    # genesis deals a common coin: the asynchronous fallback is on
    # leader_delay: from attack_s to the end, every message the leader of the current view sends
    # takes LEADER_DELAY_S (longer than any timeout): an asynchronous adversary that never drops
    adversary: str = ""
    attack_s: float = 0.0

    def describe(self) -> str:
        parts = ",".join(f"{sorted(map(sorted, p.groups))}@{p.start:.1f}-{p.end:.1f}" for p in self.partitions)
        extra = (" fallback" if self.fallback else "") + (f" adversary={self.adversary}@{self.attack_s:.1f}"
                                                           if self.adversary else "")
        return (f"seed={self.seed} n={self.n} byz={self.byzantine}{'+wipe' if self.wipe else ''} drop={self.drop:.2f}"
                f" delay={self.delay_s * 1000:.0f}ms partitions=[{parts}] gst={self.gst_s:.1f} end={self.end_s:.1f}"
                f"{extra}")


SYNC_DELAY_S = 0.01
LEADER_DELAY_S = 2.0  # > max_timeout_s: the targeted leader's messages always arrive after the view timed out
CONFIG = dict(min_block_interval_s=0.005, idle_block_s=0.2, base_timeout_s=0.2, max_timeout_s=0.8)
BYZANTINE = ("none", "twins", "equivocator", "crash_restart", "down")


def make_scenario(seed: int) -> Scenario:
    rng = random.Random(f"scenario-{seed}")
    n = 7 if rng.random() < 0.15 else 4
    byzantine = BYZANTINE[seed % len(BYZANTINE)]
    gst = rng.uniform(1.5, 3.0)
    slots = n + (1 if byzantine == "twins" else 0)
    partitions: list[Partition] = []
    for _ in range(rng.choice((0, 1, 1, 2))):
        start = rng.uniform(0.0, gst - 0.5)
        end = min(gst, start + rng.uniform(0.3, 1.5))
        members = list(range(slots))
        rng.shuffle(members)
        cut = rng.randint(1, slots - 1)
        partitions.append(Partition(start, end, (frozenset(members[:cut]), frozenset(members[cut:]))))
    crash_at = rng.uniform(0.3, gst - 0.5)
    return Scenario(
        seed=seed,
        n=n,
        byzantine=byzantine,
        drop=rng.choice((0.0, 0.05, 0.15, 0.3)),
        delay_s=rng.choice((0.002, 0.02, 0.08)),
        partitions=tuple(partitions),
        gst_s=gst,
        end_s=gst + 2.5,
        crash_at_s=crash_at,
        restart_at_s=rng.uniform(crash_at + 0.1, gst),
    )


# ---------------------------------------------------------------------------------------- network


@dataclass
class Slot:
    """One simulated replica process: its key, ledger and safety state survive its crashes."""

    index: int
    key_index: int
    honest: bool
    ledger: SimLedger
    safety: MemSafetyStore
    core: Core | None = None
    alive: bool = False
    equivocates: bool = False
    bad_coin: bool = False  # sends coin shares that do not verify (another view's, or junk)


class SimNet:
    def __init__(self, sc: Scenario, rng: random.Random) -> None:
        self.sc = sc
        self.rng = rng
        self.slots: list[Slot] = []
        self.tasks: set[asyncio.Task] = set()
        self.messages = 0
        self.delayed_leaders = 0
        self.violations: list[str] = []  # a vote sent before the safety state recording it was saved
        self.trace = hashlib.sha256()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def synchronous(self) -> bool:
        return self.now() >= self.sc.gst_s

    def link_up(self, a: int, b: int) -> bool:
        now = self.now()
        return not any(p.cuts(now, a, b) for p in self.sc.partitions)

    def _delay(self) -> float:
        return self.rng.uniform(0, SYNC_DELAY_S if self.synchronous() else self.sc.delay_s)

    def current_leader(self) -> bytes | None:
        """The leader of the highest view any honest replica is in: the one the adversary slows."""
        cores = [s.core for s in self.slots if s.honest and s.alive and s.core is not None]
        if not cores:
            return None
        top = max(cores, key=lambda c: c.view)
        return top.leaders.leader(top.view)

    def targeted(self, src: Slot) -> bool:
        if self.sc.adversary != "leader_delay" or self.now() < self.sc.attack_s or src.core is None:
            return False
        if src.core.me != self.current_leader():
            return False
        self.delayed_leaders += 1
        return True

    def send(self, src: Slot, dst: Slot, handler: str, msg: object) -> None:
        if not self.synchronous() and self.rng.random() < self.sc.drop:
            return
        delay = LEADER_DELAY_S + self._delay() if self.targeted(src) else self._delay()
        task = asyncio.get_running_loop().create_task(self._deliver(delay, src, dst, handler, msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def broadcast(self, src: Slot, handler: str, msg: object) -> None:
        if not src.alive:
            return  # a crashed replica sends nothing (its in-flight handlers may still run)
        for dst in self.slots:
            if dst is not src:
                self.send(src, dst, handler, msg)

    async def _deliver(self, delay: float, src: Slot, dst: Slot, handler: str, msg: object) -> None:
        await asyncio.sleep(delay)
        if not dst.alive or dst.core is None or not self.link_up(src.index, dst.index):
            return
        self.messages += 1
        try:
            await getattr(dst.core, handler)(msg)
        except Rejected:
            pass

    async def fetch(self, src: Slot, key: bytes, block_hash: bytes, max_blocks: int) -> list[types_pb2.Block]:
        return await self.call(src, key, lambda core: core.helper.fetch_blocks(block_hash, max_blocks))

    async def call(self, src: Slot, key: bytes, fn):
        targets = [s for s in self.slots if s.alive and s.core is not None and s.core.me == key and s is not src]
        await asyncio.sleep(self._delay())
        if not targets or not self.link_up(src.index, targets[0].index) or (
            not self.synchronous() and self.rng.random() < self.sc.drop
        ):
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        out = await fn(targets[0].core)
        await asyncio.sleep(self._delay())
        return out


class SimEndpoint:
    """What a Core sees as its Network."""

    def __init__(self, net: SimNet, slot: Slot, peers: list[bytes]) -> None:
        self.net = net
        self.slot = slot
        self.peers: dict[bytes, None] = dict.fromkeys(peers)

    def broadcast_vote(self, vote: consensus_pb2.Vote) -> None:
        # persist before you promise: the vote must already be in the saved safety state
        saved = self.slot.safety.state
        if vote.fallback_height:
            if [vote.fallback_height, vote.fallback_owner] not in saved.fallback_votes:
                self.net.violations.append(f"slot {self.slot.index}: fallback vote {vote.view} sent unsaved")
        elif saved.last_voted_view < vote.view:
            self.net.violations.append(f"slot {self.slot.index}: vote {vote.view} sent unsaved")
        self.net.broadcast(self.slot, "on_vote", vote)

    def broadcast_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        self.net.broadcast(self.slot, "on_timeout", timeout)

    def broadcast_proposal(self, proposal: consensus_pb2.Proposal) -> None:
        if not self.slot.equivocates:
            self.net.broadcast(self.slot, "on_proposal", proposal)
            return
        # an equivocating leader: a second, conflicting block for the same view and height,
        # each version to a random part of the network
        assert self.slot.core is not None
        other = consensus_pb2.Proposal()
        other.CopyFrom(proposal)
        other.block.header.timestamp_ms += 1
        del other.block.txs[len(other.block.txs) // 2 :]
        other.block.header.txs_root = chain.txs_root(list(other.block.txs))
        chain.sign_block(self.slot.core.key, other.block)
        if not self.slot.alive:
            return
        for dst in self.net.slots:
            if dst is not self.slot:
                self.net.send(self.slot, dst, "on_proposal", proposal if self.net.rng.random() < 0.5 else other)

    def broadcast_coin_share(self, share: consensus_pb2.CoinShare) -> None:
        if self.slot.bad_coin:  # a Byzantine share: another view's (a valid point) or junk
            bad = consensus_pb2.CoinShare()
            bad.CopyFrom(share)
            if share.view % 2:
                assert self.slot.core is not None and self.slot.core.fallback is not None
                other = zkpot_coin.coin_message(self.slot.core.chain_id, share.view + 1)
                bad.share = zkpot_coin.sign_share(self.slot.core.fallback.share, other)
            else:
                bad.share = bytes(96)
            share = bad
        self.net.broadcast(self.slot, "on_coin_share", share)

    def send_timeout(self, key: bytes, timeout: consensus_pb2.Timeout) -> None:
        if self.slot.alive:
            for dst in self.net.slots:
                if dst is not self.slot and dst.core is not None and dst.core.me == key:
                    self.net.send(self.slot, dst, "on_timeout", timeout)

    def gossip(self, req: consensus_pb2.SubmitTxRequest) -> None:
        self.net.broadcast(self.slot, "gossip_in", req)

    async def fetch_blocks(self, key: bytes, block_hash: bytes, max_blocks: int) -> list[types_pb2.Block]:
        return await self.net.fetch(self.slot, key, block_hash, max_blocks)

    async def fetch_range(self, key: bytes, from_height: int, max_blocks: int, max_bytes: int):
        return await self.net.call(self.slot, key,
                                   lambda core: core.helper.fetch_range(from_height, max_blocks, max_bytes))

    async def status(self, key: bytes) -> consensus_pb2.StatusResponse:
        async def status(core: Core) -> consensus_pb2.StatusResponse:
            return core.status()

        return await self.net.call(self.slot, key, status)


class SimCore(Core):
    async def gossip_in(self, req: consensus_pb2.SubmitTxRequest) -> None:
        await self.admission.submit(list(req.txs), gossip=False)


# ---------------------------------------------------------------------------------------- run


@dataclass
class Result:
    scenario: Scenario
    slots: list[Slot]
    heights_at_gst: dict[int, int]
    heights_at_attack: dict[int, int]
    submitted: set[bytes]
    messages: int
    trace: str
    violations: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def honest(self) -> list[Slot]:
        return [s for s in self.slots if s.honest]


def _new_core(fx: Fixture, net: SimNet, slot: Slot, data_dir: Path) -> SimCore:
    key = fx.validator_keys[slot.key_index]
    peers = [k.public for k in fx.validator_keys if k.public != key.public]
    endpoint = SimEndpoint(net, slot, peers)
    share = fx.coin_shares[slot.key_index] if fx.genesis.coin is not None else None
    core = SimCore(
        Config(data_dir=data_dir, **CONFIG), fx.genesis, key, slot.ledger, endpoint,  # type: ignore[arg-type]
        TxChecker(None, RUNTIME), RUNTIME, coin_share=share,
    )
    core.safety_store = slot.safety  # type: ignore[assignment]
    return core


async def _run(sc: Scenario, fx: Fixture, data_dir: Path) -> Result:
    rng = random.Random(f"run-{sc.seed}")
    net = SimNet(sc, rng)
    f = chain.max_faulty(sc.n)
    byz_key = rng.randrange(sc.n)
    key_slots = list(range(sc.n)) + ([byz_key] if sc.byzantine == "twins" else [])
    for i, k in enumerate(key_slots):
        honest = not (k == byz_key and sc.byzantine in ("twins", "equivocator", "bad_coin"))
        equivocates = sc.byzantine == "equivocator" and not honest
        slot = Slot(i, k, honest, SimLedger(fx), MemSafetyStore(), equivocates=equivocates,
                    bad_coin=sc.byzantine == "bad_coin" and not honest)
        net.slots.append(slot)
    down = net.slots[byz_key] if sc.byzantine in ("down", "crash_restart") else None
    assert f >= 1
    for slot in net.slots:
        if sc.byzantine == "down" and slot is down:
            continue
        slot.core = _new_core(fx, net, slot, data_dir / f"r{slot.index}")
        slot.alive = True
        await slot.core.start()

    submitted: set[bytes] = set()
    counter = 0

    async def submit_batch() -> None:
        nonlocal counter
        targets = [s for s in net.slots if s.honest and s.alive and s.core is not None]
        if not targets:
            return
        target = rng.choice(targets)
        txs = []
        for _ in range(rng.randint(1, 20)):
            counter += 1
            tx = types_pb2.Transaction(payload=sc.seed.to_bytes(4, "big") + counter.to_bytes(4, "big"), nonce=counter)
            txs.append(chain.sign_tx(fx.publisher, tx))
        results = await target.core.admission.submit(txs, gossip=True)  # type: ignore[union-attr]
        if target is not down:  # a mempool is not durable: txs held only by a crashed replica may be lost
            submitted.update(r.tx_id for r in results if r.admitted)

    events: list[tuple[float, Callable[[], object]]] = []
    for k in range(sc.tx_batches):
        events.append((sc.gst_s * k / sc.tx_batches, submit_batch))

    async def crash() -> None:
        assert down is not None and down.core is not None
        down.alive = False
        await down.core.stop()

    async def restart() -> None:
        assert down is not None
        if sc.wipe:  # data dir lost: forward catch-up refills the ledger, the signing floor guards votes
            down.ledger = SimLedger(fx)
            down.safety = MemSafetyStore()
        down.core = _new_core(fx, net, down, data_dir / f"r{down.index}")
        down.alive = True
        await down.core.start()

    if sc.byzantine == "crash_restart":
        events += [(sc.crash_at_s, crash), (sc.restart_at_s, restart)]
    heights_at_gst: dict[int, int] = {}
    heights_at_attack: dict[int, int] = {}

    async def at_gst() -> None:
        heights_at_gst.update({s.index: s.ledger.height for s in net.slots})

    async def at_attack() -> None:
        heights_at_attack.update({s.index: s.ledger.height for s in net.slots})

    events.append((sc.gst_s, at_gst))
    if sc.adversary:
        events.append((sc.attack_s, at_attack))
    events.sort(key=lambda e: e[0])
    loop = asyncio.get_running_loop()
    for when, action in events:
        await asyncio.sleep(max(0.0, when - loop.time()))
        await action()  # type: ignore[misc]
    await asyncio.sleep(max(0.0, sc.end_s - loop.time()))

    for slot in net.slots:
        if slot.core is not None:
            slot.alive = False
            await slot.core.stop()
    for task in list(net.tasks):
        task.cancel()
    await asyncio.sleep(0)
    trace = hashlib.sha256()
    for slot in net.slots:
        for h in slot.ledger.hashes():
            trace.update(h)
        trace.update(b"|")
    return Result(sc, net.slots, heights_at_gst, heights_at_attack, submitted, net.messages, trace.hexdigest(),
                  net.violations)


def check(result: Result) -> list[str]:
    """Safety over every ledger (Twins and the equivocator included: they run the commit rule on
    real certificates, so even their ledgers must agree), liveness after GST for honest ones."""
    problems: list[str] = [f"PERSIST: {v}" for v in result.violations[:3]]
    by_height: dict[int, bytes] = {}
    for slot in result.slots:
        for height, h in enumerate(slot.ledger.hashes(), start=1):
            if by_height.setdefault(height, h) != h:
                problems.append(f"SAFETY: two different blocks committed at height {height} (slot {slot.index})")
                break
    top = max(result.heights_at_gst[s.index] for s in result.honest)
    honest_up = [s for s in result.honest if s.core is not None]
    for slot in honest_up:
        if slot.ledger.height < top + 2:
            problems.append(
                f"LIVENESS: slot {slot.index} at height {slot.ledger.height} after GST, honest max at GST was {top}"
            )
    for slot in honest_up:
        committed = {chain.tx_id(tx) for sb in slot.ledger.stored for tx in sb.block.txs}
        missing = result.submitted - committed
        if missing:
            problems.append(f"LIVENESS: slot {slot.index} lacks {len(missing)} of {len(result.submitted)} txs")
    return problems


@contextlib.contextmanager
def _memo_verify() -> Iterator[None]:
    """Every replica checks the same votes and QCs: remember verdicts of real ed25519 checks
    by the exact signed bytes (a CPU saving only; a different byte gives a fresh check)."""
    real = crypto.verify
    verdicts: dict[tuple[bytes, str, bytes, bytes], bool] = {}

    def verify(public_key: bytes, domain: str, msg, signature: bytes) -> bool:
        key = (public_key, domain, msg.SerializeToString(deterministic=True), signature)
        if key not in verdicts:
            verdicts[key] = real(public_key, domain, msg, signature)
        return verdicts[key]

    crypto.verify = verify
    try:
        yield
    finally:
        crypto.verify = real


def run_scenario(sc: Scenario, fx: Fixture | None = None, data_dir: Path | None = None) -> Result:
    fx = fx or make_genesis(n_validators=sc.n, n_participants=1, coin=sc.fallback)
    with tempfile.TemporaryDirectory() as tmp, _memo_verify():
        with asyncio.Runner(loop_factory=VirtualLoop) as runner:
            result = runner.run(_run(sc, fx, data_dir or Path(tmp)))
    result.problems = check(result)
    return result


_FIXTURES: dict[tuple[int, bool], Fixture] = {}


def fixture(n: int, coin: bool = False) -> Fixture:
    if (n, coin) not in _FIXTURES:
        _FIXTURES[(n, coin)] = make_genesis(n_validators=n, n_participants=1, coin=coin)
    return _FIXTURES[(n, coin)]


if __name__ == "__main__":
    import dataclasses
    import os

    for arg in sys.argv[1:]:
        sc = make_scenario(int(arg))
        if os.environ.get("SIM_FALLBACK"):
            sc = dataclasses.replace(sc, fallback=True)
        if os.environ.get("SIM_ADVERSARY"):
            sc = dataclasses.replace(sc, adversary=os.environ["SIM_ADVERSARY"], attack_s=sc.gst_s,
                                     end_s=sc.gst_s + float(os.environ.get("SIM_ATTACK_S", "6")))
        res = run_scenario(sc, fixture(sc.n, sc.fallback))
        print(sc.describe())
        print(f"  heights {[s.ledger.height for s in res.slots]} at gst {res.heights_at_gst}"
              f" messages {res.messages} trace {res.trace[:16]}")
        for p in res.problems:
            print("  " + p)

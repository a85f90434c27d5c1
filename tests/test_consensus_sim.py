"""Safety under message loss and an equivocating validator (Twins-style), in one process.

Five real Cores — validators 1..3 plus two copies ("twins") of validator 0 with the same key and
separate safety files — exchange messages through a lossy, reordering in-memory network (a
double of the gRPC layer; everything else is real: signatures, certificates, safety rules,
pacemaker, synchronizer). The twins may propose and vote twice per view, which is the Byzantine
behaviour f = 1 allows. Honest replicas must never commit different blocks at one height, and
must keep committing. (Checked to fail when the commit rule is weakened to a 1-chain.)
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
from chain_factory import Fixture, make_genesis

from services.consensus.checks import Rejected
from services.consensus.clients import TxChecker
from services.consensus.core import Config, Core
from zkpot import chain
from zkpot.v1 import consensus_pb2, ledger_pb2, types_pb2


class SimLedger:
    target = "sim-ledger"

    def __init__(self, fx: Fixture) -> None:
        self.fx = fx
        self.blocks: list[types_pb2.Block] = []

    async def head(self) -> ledger_pb2.HeadResponse:
        return ledger_pb2.HeadResponse(height=len(self.blocks), chain_id=self.fx.genesis.chain_id)

    async def leader_schedule(self) -> ledger_pb2.LeaderScheduleResponse:
        return ledger_pb2.LeaderScheduleResponse(leaders=[v.public_key for v in self.fx.genesis.validators])

    async def append(self, block: types_pb2.Block, qc: types_pb2.QuorumCert) -> ledger_pb2.AppendResponse:
        assert block.header.height == len(self.blocks) + 1, "appends must come in height order"
        chain.check_qc(qc, self.fx.genesis.validator_keys, self.fx.genesis.quorum)
        assert qc.block_hash == chain.block_hash(block.header)
        self.blocks.append(block)
        return ledger_pb2.AppendResponse(height=block.header.height)

    async def block_by_hash(self, block_hash: bytes) -> None:
        return None


class SimNet:
    def __init__(self, rng: random.Random, drop: float) -> None:
        self.rng = rng
        self.drop = drop
        self.cores: dict[bytes, list[Core]] = {}
        self.tasks: set[asyncio.Task] = set()

    def endpoint(self, me: Core) -> SimEndpoint:
        return SimEndpoint(self, me)

    def deliver(self, sender: Core, handler: str, msg: object) -> None:
        for key, copies in self.cores.items():
            for core in copies:
                if core is sender or (key == sender.me and len(copies) == 1):
                    continue
                if self.rng.random() < self.drop:
                    continue
                delay = self.rng.uniform(0, 0.02)
                task = asyncio.get_running_loop().create_task(self._later(delay, getattr(core, handler), msg))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _later(delay: float, fn, msg) -> None:  # noqa: ANN001
        await asyncio.sleep(delay)
        try:
            await fn(msg)
        except Rejected:
            pass


class SimEndpoint:
    def __init__(self, net: SimNet, me: Core | None) -> None:
        self.net = net
        self.me = me
        self.peers: dict[bytes, None] = {}

    def broadcast_vote(self, vote: consensus_pb2.Vote) -> None:
        self.net.deliver(self.me, "on_vote", vote)

    def broadcast_proposal(self, proposal: consensus_pb2.Proposal) -> None:
        self.net.deliver(self.me, "on_proposal", proposal)

    def broadcast_timeout(self, timeout: consensus_pb2.Timeout) -> None:
        self.net.deliver(self.me, "on_timeout", timeout)

    def gossip(self, req: consensus_pb2.SubmitTxRequest) -> None:
        pass

    async def fetch_blocks(self, key: bytes, block_hash: bytes, max_blocks: int) -> list:
        if self.net.rng.random() < self.net.drop:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        return await self.net.cores[key][0].fetch_blocks(block_hash, max_blocks)


def test_honest_replicas_agree_under_loss_and_twins(tmp_path: Path) -> None:
    fx = make_genesis(n_validators=4, n_participants=1)
    rng = random.Random(1)
    config = dict(min_block_interval_s=0.005, idle_block_s=0.03, base_timeout_s=0.15, max_timeout_s=0.6)

    async def run() -> tuple[list[SimLedger], list[Core]]:
        net = SimNet(rng, drop=0.15)
        ledgers: list[SimLedger] = []
        cores: list[Core] = []
        for i, key_index in enumerate([0, 0, 1, 2, 3]):  # cores 0 and 1 are the twins
            ledger = SimLedger(fx)
            endpoint = SimEndpoint(net, None)
            core = Core(Config(data_dir=tmp_path / f"r{i}", **config), fx.genesis, fx.validator_keys[key_index],
                        ledger, endpoint, TxChecker(None))  # type: ignore[arg-type]
            endpoint.me = core
            ledgers.append(ledger)
            cores.append(core)
            net.cores.setdefault(core.me, []).append(core)
        for core in cores:
            core.sync._peers = [k for k in net.cores if k != core.me]
            await core.start()
        # give the twins different transactions so their proposals differ (real equivocation)
        for n in range(300):
            tx = fx.payload(n.to_bytes(4, "big"))
            await cores[rng.choice([0, 1, 2, 3, 4])].submit([tx], gossip=False)
        await asyncio.sleep(6.0)
        for core in cores:
            await core.stop()
        for task in list(net.tasks):
            task.cancel()
        return ledgers, cores

    ledgers, cores = asyncio.run(run())
    honest = ledgers[2:]
    heights = [len(ledger.blocks) for ledger in honest]
    assert min(heights) >= 5, f"no progress: {heights}"
    committed = {chain.tx_id(tx) for b in honest[0].blocks for tx in b.txs}
    assert len(committed) >= 250, "most submitted transactions should be committed despite the losses"
    for a in ledgers:  # the twins must not break agreement either: they only commit certified chains
        for b in ledgers:
            for x, y in zip(a.blocks, b.blocks, strict=False):
                assert chain.block_hash(x.header) == chain.block_hash(y.header), f"fork at height {x.header.height}"

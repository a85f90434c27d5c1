"""Forward catch-up (services/consensus/catchup.py): what counts as committed, and peers that lie.

Unit tests with fake peers; the real-process test (a replica restarted with a wiped data dir)
is in test_consensus_network.py.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from chain_factory import ChainBuilder, Fixture, make_genesis, make_qc

from services.consensus import checks
from services.consensus.catchup import CatchUp, Committed, check_qc_for, committed_prefix
from services.consensus.checks import Rejected
from zkpot import chain
from zkpot.v1 import types_pb2


@pytest.fixture(scope="module")
def fx() -> Fixture:
    return make_genesis(n_validators=4, n_participants=1)


def build(
    fx: Fixture, n: int, gap_before: int | None = None
) -> tuple[list[types_pb2.Block], list[types_pb2.QuorumCert]]:
    """n certified blocks from genesis, consecutive views except a view jump before block `gap_before`."""
    cb = ChainBuilder(fx)
    for i in range(n):
        cb.accept(cb.next_block([fx.payload(bytes([i]) * 8)], view_step=2 if i == gap_before else 1))
    return [r.block for r in cb.blocks], [r.qc for r in cb.blocks]


def prefix(fx: Fixture, blocks, qcs, tip_hash=None, tip_height=0) -> list[Committed]:
    g = fx.genesis
    gh = chain.block_hash(g.block().header)
    return committed_prefix(
        blocks, qcs, tip_hash or gh, tip_height,
        lambda b: checks.check_block(b, g.chain_id, g.validator_keys, g.quorum, gh),
        check_qc_for(g.validator_keys, g.quorum),
    )  # fmt: skip


def test_two_chain_rule_decides_what_is_committed(fx: Fixture) -> None:
    blocks, qcs = build(fx, 6)
    got = prefix(fx, blocks, qcs)
    assert [c.block.header.height for c in got] == [1, 2, 3, 4, 5]  # block 6 has no certified child
    # each committed block carries a QC that certifies exactly it
    for c in got:
        assert (c.qc.block_hash, c.qc.view, c.qc.height) == (c.block_hash, c.block.header.view, c.block.header.height)
    # without the QC of the last block only its parent's commit is provable
    assert len(prefix(fx, blocks, [])) == 4
    # views 1, 2, 3, 5, 6 (a timeout before height 4): 3 -> 4 is no 2-chain, so height 3 is
    # committed only by the later 2-chain 4 -> 5, which needs the QC of block 5
    blocks, qcs = build(fx, 5, gap_before=3)
    assert [c.block.header.height for c in prefix(fx, blocks, [])] == [1, 2]
    assert [c.block.header.height for c in prefix(fx, blocks, qcs)] == [1, 2, 3, 4]
    blocks, qcs = build(fx, 2, gap_before=1)
    assert prefix(fx, blocks, qcs) == []  # views 1, 3: no 2-chain, nothing provably committed


def test_refuses_bad_certificates_and_broken_linkage(fx: Fixture) -> None:
    blocks, qcs = build(fx, 4)
    # the last block's QC with too few signers
    weak = list(qcs)
    h = chain.block_hash(blocks[-1].header)
    weak[-1] = make_qc(fx.validator_keys[:2], h, blocks[-1].header.view, blocks[-1].header.height)
    with pytest.raises(Rejected, match="sync_bad_qc"):
        prefix(fx, blocks, weak)
    # a QC for another block
    other = list(qcs)
    other[-1] = qcs[-2]
    with pytest.raises(Rejected, match="does not certify"):
        prefix(fx, blocks, other)
    # a forged parent QC inside a block (re-signed by its proposer, so only the QC is wrong)
    forged = [types_pb2.Block() for _ in blocks]
    for a, b in zip(forged, blocks, strict=True):
        a.CopyFrom(b)
    del forged[2].header.parent_qc.votes[1:]
    chain.sign_block(fx.validator_keys[forged[2].header.view % 4], forged[2])
    with pytest.raises(Rejected, match="bad_qc"):
        prefix(fx, forged, qcs)
    # a gap (block 2 left out) and a chain that does not start at our tip
    with pytest.raises(Rejected, match="sync_linkage"):
        prefix(fx, [blocks[0], *blocks[2:]], [qcs[0], *qcs[2:]])
    with pytest.raises(Rejected, match="sync_linkage"):
        prefix(fx, blocks[1:], qcs[1:])


class FakePeers:
    """Peers that serve the chain, some of them lying; records who was asked for what."""

    def __init__(self, blocks: list[types_pb2.Block], qcs: list[types_pb2.QuorumCert], liars: dict[bytes, str]) -> None:
        self.blocks, self.qcs, self.liars = blocks, qcs, liars
        self.top = len(blocks)  # the peers' committed height
        self.asked: list[tuple[bytes, int]] = []

    async def fetch(self, peer: bytes, from_height: int, max_blocks: int, max_bytes: int):
        self.asked.append((peer, from_height))
        lie = self.liars.get(peer)
        if lie == "down":
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        blocks = self.blocks[from_height - 1 : min(self.top, from_height - 1 + min(max_blocks, 3))]
        qcs = self.qcs[from_height - 1 : from_height - 1 + len(blocks)]
        if lie == "bad_qc" and blocks:
            qcs = [*qcs[:-1], make_qc(self_keys(), qcs[-1].block_hash, qcs[-1].view, qcs[-1].height)]
        if lie == "skip" and len(blocks) > 1:
            blocks, qcs = blocks[1:], qcs[1:]
        return blocks, qcs


_KEYS: list = []


def self_keys() -> list:
    return _KEYS


def test_catch_up_asks_one_peer_at_a_time_and_skips_liars(fx: Fixture) -> None:
    _KEYS[:] = fx.validator_keys[:2]  # a "QC" of 2 signers: below the quorum of 3
    blocks, qcs = build(fx, 14)
    peers = [k.public for k in fx.validator_keys[1:]]
    fake = FakePeers(blocks, qcs, {peers[0]: "bad_qc", peers[1]: "skip"})
    fake.top = 10
    g = fx.genesis
    gh = chain.block_hash(g.block().header)
    tip = [gh, 0]
    delivered: list[Committed] = []

    async def deliver(items: list[Committed]) -> None:
        delivered.extend(items)
        tip[0], tip[1] = items[-1].block_hash, items[-1].block.header.height

    cu = CatchUp(
        fake.fetch, peers, lambda: (tip[0], tip[1]),
        lambda b: checks.check_block(b, g.chain_id, g.validator_keys, g.quorum, gh),
        check_qc_for(g.validator_keys, g.quorum), deliver, offload=lambda fn, *a: asyncio.sleep(0, fn(*a)),
    )  # fmt: skip
    got = asyncio.run(cu.run())
    # 10 blocks, the last one has no certified child: 9 provably committed, all from the honest peer
    assert got == 9
    assert [c.block.header.height for c in delivered] == list(range(1, 10))
    assert [c.block_hash for c in delivered] == [chain.block_hash(b.header) for b in blocks[:9]]
    # one peer at a time: the liars were asked once each, then the honest peer served every batch
    # (3 blocks per response here) until nothing provably committed was left
    assert fake.asked[:3] == [(peers[0], 1), (peers[1], 1), (peers[2], 1)]
    assert [p for p, _ in fake.asked[3:6]] == [peers[2]] * 3
    assert [h for _, h in fake.asked[:6]] == [1, 1, 1, 3, 5, 7]  # 2 provably committed per response

    # a peer that is down is skipped too; a second run after the chain grew continues from the tip
    fake2 = FakePeers(blocks, qcs, {peers[0]: "down", peers[1]: "down"})
    cu._fetch = fake2.fetch
    assert asyncio.run(cu.run()) == 4
    assert delivered[-1].block.header.height == 13
    assert all(h >= 10 for _, h in fake2.asked)


def test_a_real_core_commits_and_appends_what_catch_up_delivers(fx: Fixture, tmp_path) -> None:
    """Helper.deliver_committed on a real Core (the CatchUp tests above use a fake deliver): the
    proven-committed blocks extend its committed tip and reach its ledger in height order, and a
    second delivery of the same blocks changes nothing. Until stop 28 its loop variable shadowed
    the core, so every forward catch-up delivery raised and replicas caught up only through the
    slower parent-by-parent sync."""
    from test_consensus_unit import make_core

    blocks, qcs = build(fx, 6)
    items = prefix(fx, blocks, qcs)  # heights 1..5 (block 6 has no certified child)

    async def run() -> tuple[int, list[int]]:
        core, ledger, _ = make_core(fx, tmp_path)
        await core.start()
        try:
            await core.helper.deliver_committed(items)
            await core.helper.deliver_committed(items)  # again: already committed, skipped
            for _ in range(500):
                if len(ledger.appended) >= len(items):
                    break
                await asyncio.sleep(0.01)
            return core.store.committed_height, [b.header.height for b, _ in ledger.appended]
        finally:
            await core.stop()

    height, appended = asyncio.run(run())
    assert height == 5
    assert appended == [1, 2, 3, 4, 5]

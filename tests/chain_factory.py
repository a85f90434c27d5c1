"""Builds test chains without ezkl: a genesis, signed blocks with QCs, signed SubmitProof txs.

Reusable by any test (ledger, consensus, devnet):

    fx = make_genesis(n_participants=3)
    builder = ChainBuilder(fx)
    req = builder.next_block([fx.submit(0, round_=1, claimed=20)])   # an AppendRequest
    ...                                                              # send it; then
    builder.accept(req)                                              # advance the builder's head
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zkpot import chain, model_codec
from zkpot import coin as zkpot_coin
from zkpot.codec import content_id, sha256
from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis, Member
from zkpot.v1 import ledger_pb2, types_pb2

LAYOUT = (("fc1.weight", (16, 64)), ("fc1.bias", (16,)), ("fc2.weight", (10, 16)), ("fc2.bias", (10,)))


def random_model(rng: np.random.Generator, layout: tuple[tuple[str, tuple[int, ...]], ...] = LAYOUT) -> bytes:
    return model_codec.encode([(name, rng.normal(0, 0.3, shape).astype(np.float32)) for name, shape in layout])


def _seeded_key(tag: str, i: int) -> KeyPair:
    return KeyPair.from_seed(sha256(f"zkpot-test/{tag}/{i}".encode()))


@dataclass
class Fixture:
    genesis: Genesis
    validator_keys: list[KeyPair]
    participant_keys: list[KeyPair]
    publisher: KeyPair
    initial_model: bytes
    rng: np.random.Generator
    nonce: int = 0
    coin_shares: list[bytes] = field(default_factory=list)  # validator i's coin share (coin=True)

    @property
    def task_id(self) -> bytes:
        return self.genesis.task_id

    def submit(
        self,
        participant: int,
        round_: int,
        claimed: int,
        model_params: bytes | None = None,
        *,
        signer: KeyPair | None = None,
        task_id: bytes | None = None,
        model_cid: str | None = None,
        proof: bytes = b"not-checked-by-the-ledger",
    ) -> types_pb2.Transaction:
        """A signed SubmitProof by participant index `participant` (overrides make bad ones)."""
        key = self.participant_keys[participant]
        params = random_model(self.rng) if model_params is None else model_params
        self.nonce += 1
        tx = types_pb2.Transaction(
            submit_proof=types_pb2.SubmitProof(
                task_id=self.task_id if task_id is None else task_id,
                round=round_,
                participant=key.public,
                model_commitment=b"\x01" * 32,
                claimed_correct=claimed,
                proof=proof,
                model_params=params,
                model_cid=content_id(params) if model_cid is None else model_cid,
            ),
            nonce=self.nonce,
        )
        return chain.sign_tx(signer or key, tx)

    def payload(self, data: bytes = b"bench") -> types_pb2.Transaction:
        self.nonce += 1
        return chain.sign_tx(self.publisher, types_pb2.Transaction(payload=data, nonce=self.nonce))


def make_genesis(
    n_validators: int = 4,
    n_participants: int = 3,
    rounds: int = 2,
    min_correct: int = 10,
    deadline_blocks: int = 5,
    chain_id: str = "zkpot-test",
    seed: int = 7,
    deadline_ms: int = 0,
    coin: bool = False,
) -> Fixture:
    """Deterministic keys (same seed -> same chain); participant i operates validator i (if any)."""
    rng = np.random.default_rng(seed)
    vkeys = [_seeded_key(f"v{seed}", i) for i in range(n_validators)]
    pkeys = [_seeded_key(f"p{seed}", i) for i in range(n_participants)]
    publisher = _seeded_key(f"pub{seed}", 0)
    initial = random_model(rng)
    manifest = types_pb2.TaskManifest(
        name="digits-test",
        architecture="mlp:64-16-10",
        test_set_size=32,
        input_scale=7,
        param_scale=7,
        logrows=15,
        artefacts={
            "settings": content_id(b"settings"),
            "vk": content_id(b"vk"),
            "srs": content_id(b"srs"),
            "test_set": content_id(b"test_set"),
            "initial_model": content_id(initial),
        },
        insecure_dev_srs=True,
        rounds=rounds,
        min_correct=min_correct,
        round_deadline_blocks=deadline_blocks,
        round_deadline_ms=deadline_ms,
        publisher=publisher.public,
    )
    publish = types_pb2.Transaction(
        publish_task=types_pb2.PublishTask(manifest=manifest, task_id=chain.task_id(manifest), initial_model=initial)
    )
    chain.sign_tx(publisher, publish)
    coin_public, coin_shares = None, []
    if coin:  # threshold 2f+1, dealt from the seed (reproducible; a test dealer knows every share)
        coin_public, coin_shares = zkpot_coin.deal(n_validators, chain.quorum_size(n_validators),
                                                   seed=f"coin{seed}".encode())
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=1_700_000_000_000,
        validators=tuple(Member(f"validator-{i}", k.public) for i, k in enumerate(vkeys)),
        participants=tuple(
            Member(f"participant-{i}", k.public, vkeys[i].public if i < n_validators else b"")
            for i, k in enumerate(pkeys)
        ),
        publish_task=publish,
        coin=coin_public,
    )
    genesis.check()
    return Fixture(genesis, vkeys, pkeys, publisher, initial, rng, coin_shares=coin_shares)


def make_qc(
    keys: list[KeyPair], block_hash: bytes, view: int, height: int
) -> types_pb2.QuorumCert:
    qc = types_pb2.QuorumCert(block_hash=block_hash, view=view, height=height)
    for key in keys:
        qc.votes.append(chain.make_vote(key, block_hash, view, height).signature)
    return qc


@dataclass
class ChainBuilder:
    """Extends a chain from genesis with blocks certified by a quorum of the fixture's validators."""

    fx: Fixture
    height: int = 0
    view: int = 0
    head_hash: bytes = b""
    head_qc: types_pb2.QuorumCert | None = None
    blocks: list[ledger_pb2.AppendRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.head_hash = chain.block_hash(self.fx.genesis.block().header)

    def quorum_keys(self) -> list[KeyPair]:
        return self.fx.validator_keys[: self.fx.genesis.quorum]

    def next_block(
        self, txs: list[types_pb2.Transaction] | None = None, *, view_step: int = 1, proposer: int | None = None,
        timestamp_ms: int | None = None,
    ) -> ledger_pb2.AppendRequest:
        """The AppendRequest for the next block on top of the builder's head (not yet accepted)."""
        txs = list(txs or [])
        view = self.view + view_step
        height = self.height + 1
        header = types_pb2.BlockHeader(
            chain_id=self.fx.genesis.chain_id,
            height=height,
            view=view,
            parent_hash=self.head_hash,
            txs_root=chain.txs_root(txs),
            timestamp_ms=self.fx.genesis.genesis_time_ms + 1000 * height if timestamp_ms is None else timestamp_ms,
        )
        if self.head_qc is not None:
            header.parent_qc.CopyFrom(self.head_qc)
        block = types_pb2.Block(header=header, txs=txs)
        key = self.fx.validator_keys[(view if proposer is None else proposer) % len(self.fx.validator_keys)]
        chain.sign_block(key, block)
        bh = chain.block_hash(block.header)
        return ledger_pb2.AppendRequest(block=block, qc=make_qc(self.quorum_keys(), bh, view, height))

    def accept(self, req: ledger_pb2.AppendRequest) -> None:
        hdr = req.block.header
        self.height, self.view = hdr.height, hdr.view
        self.head_hash = chain.block_hash(hdr)
        self.head_qc = req.qc
        self.blocks.append(req)

    def extend(self, txs: list[types_pb2.Transaction] | None = None) -> ledger_pb2.AppendRequest:
        req = self.next_block(txs)
        self.accept(req)
        return req


def resign(fx: Fixture, req: ledger_pb2.AppendRequest, proposer: int = 0) -> ledger_pb2.AppendRequest:
    """Re-sign a (tampered) block and re-certify it, so only the tampering is wrong."""
    chain.sign_block(fx.validator_keys[proposer], req.block)
    hdr = req.block.header
    req.qc.CopyFrom(make_qc(fx.validator_keys[: fx.genesis.quorum], chain.block_hash(hdr), hdr.view, hdr.height))
    return req

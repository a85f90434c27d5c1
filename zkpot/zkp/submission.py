"""The one builder of a participant's SubmitProof transaction.

Light on purpose (no torch, no ezkl): the participant service builds its transactions with it from
a prover's ProveRoundResult, and tests and benchmarks from an in-process `prove.RoundProof`. A
secure-aggregation participant passes `seal`, which replaces the revealed model with encrypted
mask-key shares before the transaction is signed (zkpot.secagg; services.participant.masking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from zkpot import chain, model_codec
from zkpot.crypto import KeyPair
from zkpot.v1 import types_pb2


class ShardLike(Protocol):
    proof: bytes
    correct: int


class ProvenRound(Protocol):
    """What a proof of one round gives the builder: prover_pb2.ProveRoundResult or prove.RoundProof."""

    proof: bytes
    model_commitment: bytes
    claimed_correct: int
    model_params: bytes


def submit_proof_tx(key: KeyPair, task_id: bytes, round_: int, proof: bytes, model_commitment: bytes,
                    claimed_correct: int, model_params: bytes, nonce: int = 0,
                    shards: Sequence[ShardLike] = (),
                    seal: Callable[[types_pb2.SubmitProof], None] | None = None) -> types_pb2.Transaction:
    """The signed SubmitProof for a proven round (participant = key.public).

    One-shard tasks carry `proof`; sharded tasks carry every shard's proof and count in `shards`
    (in order) and an empty `proof`. The model is revealed (model_params + its content id) unless
    `seal` removes it (secure aggregation).
    """
    sp = types_pb2.SubmitProof(
        task_id=task_id, round=round_, participant=key.public, model_commitment=model_commitment,
        claimed_correct=claimed_correct, proof=proof, model_params=model_params,
        model_cid=model_codec.model_cid(model_params) if model_params else "",
        shards=[types_pb2.ShardProof(proof=s.proof, correct=s.correct) for s in shards] if len(shards) > 1 else [],
    )
    if seal is not None:
        seal(sp)
    return chain.sign_tx(key, types_pb2.Transaction(submit_proof=sp, nonce=nonce))


def round_tx(key: KeyPair, task_id: bytes, round_: int, result: ProvenRound, nonce: int = 0,
             seal: Callable[[types_pb2.SubmitProof], None] | None = None) -> types_pb2.Transaction:
    """submit_proof_tx for a proven round, whichever form it came in (prover result or RoundProof)."""
    shards = list(getattr(result, "shards", ()))
    proof = b"" if len(shards) > 1 else result.proof or (shards[0].proof if shards else b"")
    return submit_proof_tx(key, task_id, round_, proof, result.model_commitment, result.claimed_correct,
                           result.model_params, nonce, shards, seal)

"""Identities of chain objects: transaction ids, block hashes, signatures, quorum certificates."""

from __future__ import annotations

from zkpot import crypto
from zkpot.codec import digest, merkle_root
from zkpot.v1 import consensus_pb2, types_pb2

GENESIS_PARENT = b"\x00" * 32
# A payload changes no state, so it buys nothing but block space; only genesis members may send
# one, and at most this many bytes each (issue 17.4: no one writes large free bytes into every ledger)
MAX_PAYLOAD_BYTES = 4096


def max_faulty(n: int) -> int:
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """2f+1 for n = 3f+1 (and the Byzantine quorum ceil((n+f+1)/2) in general)."""
    f = max_faulty(n)
    return (n + f) // 2 + 1


def _unsigned_tx(tx: types_pb2.Transaction) -> types_pb2.Transaction:
    copy = types_pb2.Transaction()
    copy.CopyFrom(tx)
    copy.signature = b""
    return copy


def tx_id(tx: types_pb2.Transaction) -> bytes:
    return digest("tx", tx, omit="signature")  # == digest("tx", _unsigned_tx(tx)), without the copy


def sign_tx(key: crypto.KeyPair, tx: types_pb2.Transaction) -> types_pb2.Transaction:
    tx.sender = key.public
    tx.signature = key.sign("tx", _unsigned_tx(tx))
    return tx


def tx_signature_ok(tx: types_pb2.Transaction, tx_id_: bytes | None = None) -> bool:
    """`tx_id_`: the transaction's id if the caller has it (it is the digest the sender signs)."""
    return crypto.verify_digest(tx.sender, tx_id(tx) if tx_id_ is None else tx_id_, tx.signature)


def txs_root(txs: list[types_pb2.Transaction]) -> bytes:
    return merkle_root(tx_id(tx) for tx in txs)


def block_hash(header: types_pb2.BlockHeader) -> bytes:
    return digest("block", header)


def sign_block(key: crypto.KeyPair, block: types_pb2.Block) -> types_pb2.Block:
    block.header.proposer = key.public
    block.signature = key.sign("block", block.header)
    return block


def block_signature_ok(block: types_pb2.Block, block_hash_: bytes | None = None) -> bool:
    """`block_hash_`: the header's hash if the caller has it (it is the digest the proposer signs)."""
    if block_hash_ is not None:
        return crypto.verify_digest(block.header.proposer, block_hash_, block.signature)
    return crypto.verify(block.header.proposer, "block", block.header, block.signature)


def _vote_body(
    block_hash_: bytes, view: int, height: int, fallback_owner: bytes = b"", fallback_height: int = 0
) -> consensus_pb2.Vote:
    # the fallback fields are unset on the fast path, so fast votes sign exactly what they always did
    return consensus_pb2.Vote(block_hash=block_hash_, view=view, height=height,
                              fallback_owner=fallback_owner, fallback_height=fallback_height)


def make_vote(
    key: crypto.KeyPair, block_hash_: bytes, view: int, height: int, fallback_owner: bytes = b"",
    fallback_height: int = 0,
) -> consensus_pb2.Vote:
    vote = _vote_body(block_hash_, view, height, fallback_owner, fallback_height)
    sig = key.sign("vote", vote)
    vote.signature.CopyFrom(types_pb2.Signature(signer=key.public, signature=sig))
    return vote


def vote_signature_ok(vote: consensus_pb2.Vote) -> bool:
    body = _vote_body(vote.block_hash, vote.view, vote.height, vote.fallback_owner, vote.fallback_height)
    return crypto.verify(vote.signature.signer, "vote", body, vote.signature.signature)


class InvalidCertificate(ValueError):
    pass


def check_qc(qc: types_pb2.QuorumCert, validators: set[bytes] | frozenset[bytes], quorum: int) -> None:
    """Raise InvalidCertificate unless `qc` holds `quorum` valid votes of distinct validators."""
    # once, not per vote; a fallback QC's votes sign its owner and height too (its coin: the caller)
    signed = digest("vote", _vote_body(qc.block_hash, qc.view, qc.height, qc.fallback_owner, qc.fallback_height))
    seen: set[bytes] = set()
    for vote in qc.votes:
        if vote.signer not in validators:
            raise InvalidCertificate(f"vote by unknown signer {crypto.short(vote.signer)}")
        if vote.signer in seen:
            raise InvalidCertificate(f"duplicate vote by {crypto.short(vote.signer)}")
        if not crypto.verify_digest(vote.signer, signed, vote.signature):
            raise InvalidCertificate(f"bad vote signature by {crypto.short(vote.signer)}")
        seen.add(vote.signer)
    if len(seen) < quorum:
        raise InvalidCertificate(f"{len(seen)} votes, quorum is {quorum}")


def _timeout_body(timeout: consensus_pb2.Timeout) -> consensus_pb2.Timeout:
    body = consensus_pb2.Timeout(view=timeout.view)
    if timeout.HasField("high_qc"):
        body.high_qc.CopyFrom(timeout.high_qc)
    return body


def make_timeout(key: crypto.KeyPair, view: int, high_qc: types_pb2.QuorumCert | None) -> consensus_pb2.Timeout:
    timeout = consensus_pb2.Timeout(view=view)
    if high_qc is not None:
        timeout.high_qc.CopyFrom(high_qc)
    sig = key.sign("timeout", _timeout_body(timeout))
    timeout.signature.CopyFrom(types_pb2.Signature(signer=key.public, signature=sig))
    return timeout


def timeout_signature_ok(timeout: consensus_pb2.Timeout) -> bool:
    return crypto.verify(timeout.signature.signer, "timeout", _timeout_body(timeout), timeout.signature.signature)


def task_id(manifest: types_pb2.TaskManifest) -> bytes:
    """A task is named by the hash of everything that fixes it (artefacts by content id)."""
    return digest("task", manifest)

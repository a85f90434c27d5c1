"""Stateless validation of consensus messages (no replica state; safe to run in a thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from zkpot import chain, coin, crypto, refusal
from zkpot.codec import merkle_root, unknown_fields
from zkpot.refusal import Refusal
from zkpot.v1 import consensus_pb2, types_pb2

KnownId = Callable[[types_pb2.Transaction], "bytes | None"]


def tx_ids(txs: Sequence[types_pb2.Transaction], known: KnownId | None = None) -> list[bytes]:
    """Each tx's id: ~5 us to encode and hash (issue 22), ~0.7 us when `known` (the mempool's
    lookup by signature + message equality) already holds an equal message's."""
    if known is None:
        return [chain.tx_id(tx) for tx in txs]
    return [known(tx) or chain.tx_id(tx) for tx in txs]


class Rejected(Exception):
    """A message that must be dropped. `reason` is a short label for the rejection counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class CoinCheck:
    """Verifies fallback coins (threshold BLS) of one chain; remembers the ones that verified (a
    pairing costs ~1 ms and the same coin rides on many QCs)."""

    def __init__(self, public: coin.CoinPublic, chain_id: str) -> None:
        self.public = public
        self.chain_id = chain_id
        self._good: dict[tuple[int, bytes], None] = {}
        self._lock = threading.Lock()  # called from worker threads

    def ok(self, view: int, signature: bytes) -> bool:
        key = (view, bytes(signature))
        with self._lock:
            if key in self._good:
                return True
        if not coin.verify_coin(self.public, coin.coin_message(self.chain_id, view), signature):
            return False
        with self._lock:
            self._good[key] = None
            while len(self._good) > 64:
                self._good.pop(next(iter(self._good)))
        return True


def qc_is_genesis(qc: types_pb2.QuorumCert) -> bool:
    return not qc.votes


def check_qc(
    qc: types_pb2.QuorumCert, validators: frozenset[bytes], quorum: int, genesis_hash: bytes,
    coin_check: CoinCheck | None = None, unendorsed_ok: bool = False,
) -> None:
    """A QC with no votes is only acceptable as the implicit certificate of genesis. A fallback QC
    needs a coin that verifies (whether the coin elects its owner is the replica's check:
    Fallback.check_endorsed); `unendorsed_ok`: a height-2 block's own height-1 parent QC."""
    if qc_is_genesis(qc):
        if qc.block_hash not in (b"", genesis_hash) or qc.view or qc.height or qc.fallback_owner or qc.coin:
            raise Rejected("bad_qc", "QC without votes that does not name genesis")
        return
    if qc.fallback_owner or qc.fallback_height or qc.coin:
        if coin_check is None:
            raise Rejected("bad_qc", "fallback QC on a chain without the asynchronous fallback")
        if qc.fallback_height not in (1, 2) or qc.fallback_owner not in validators or qc.view <= qc.fallback_height:
            raise Rejected("bad_qc", "fallback QC with a bad owner, height or view")
        if qc.coin:
            if not coin_check.ok(qc.view - qc.fallback_height, qc.coin):
                raise Rejected("bad_qc", "fallback QC whose coin does not verify")
        elif not unendorsed_ok:
            raise Rejected("bad_qc", "fallback QC without its coin")
    try:
        chain.check_qc(qc, validators, quorum)
    except chain.InvalidCertificate as exc:
        raise Rejected("bad_qc", str(exc)) from exc


def check_tc(
    tc: consensus_pb2.TimeoutCert, validators: frozenset[bytes], quorum: int, genesis_hash: bytes = b"",
    coin_check: CoinCheck | None = None,
) -> None:
    """2f+1 timeouts for tc.view by distinct validators with valid signatures (and, with
    `genesis_hash`, valid high QCs: a fallback's height-1 blocks extend the highest of them)."""
    seen: set[bytes] = set()
    for t in tc.timeouts:
        signer = t.signature.signer
        if t.view != tc.view:
            raise Rejected("bad_tc", f"timeout for view {t.view} inside a TC for view {tc.view}")
        if signer not in validators:
            raise Rejected("bad_tc", f"timeout by unknown signer {crypto.short(signer)}")
        if signer in seen:
            raise Rejected("bad_tc", f"duplicate timeout by {crypto.short(signer)}")
        if t.HasField("last_tc"):
            raise Rejected("bad_tc", "a timeout inside a TC carries a TC")
        if not chain.timeout_signature_ok(t):
            raise Rejected("bad_tc", f"bad timeout signature by {crypto.short(signer)}")
        if genesis_hash and t.HasField("high_qc"):
            if t.high_qc.view >= tc.view:
                raise Rejected("bad_tc", "a timeout's high QC is not below the TC's view")
            check_qc(t.high_qc, validators, quorum, genesis_hash, coin_check)
        seen.add(signer)
    if len(seen) < quorum:
        raise Rejected("bad_tc", f"{len(seen)} timeouts, quorum is {quorum}")


def check_block(
    block: types_pb2.Block, chain_id: str, validators: frozenset[bytes], quorum: int, genesis_hash: bytes,
    coin_check: CoinCheck | None = None, known: KnownId | None = None,
) -> tuple[bytes, list[bytes]]:
    """Signature, header consistency and parent QC of a block; returns (block hash, tx ids).
    `known`: ids of txs admitted here (tx_ids)."""
    header = block.header
    if not block.HasField("header"):
        raise Rejected("malformed", "block without header")
    if header.chain_id != chain_id:
        raise Rejected("wrong_chain", f"chain id {header.chain_id!r}")
    if header.proposer not in validators:
        raise Rejected("unknown_signer", "proposer is not a validator")
    if header.height < 1 or header.view < 1:
        raise Rejected("malformed", "height and view of a proposed block start at 1")
    if len(header.parent_hash) != 32:
        raise Rejected("malformed", "parent_hash must be 32 bytes")
    if not chain.block_signature_ok(block):
        raise Rejected("bad_signature", "proposer signature does not verify")
    qc = header.parent_qc
    if qc_is_genesis(qc):
        if header.parent_hash != genesis_hash or header.height != 1:
            raise Rejected("bad_qc", "only a child of genesis may carry an empty parent QC")
    else:
        if qc.block_hash != header.parent_hash:
            raise Rejected("bad_qc", "parent QC does not certify parent_hash")
        if qc.height + 1 != header.height:
            raise Rejected("malformed", "height is not parent QC height + 1")
        if qc.view >= header.view:
            raise Rejected("malformed", "parent QC view is not below the block's view")
        own_parent = header.fallback_height == 2
        if own_parent and (qc.fallback_owner != header.proposer or qc.fallback_height != 1
                           or qc.view + 1 != header.view):
            raise Rejected("malformed", "a fallback block of height 2 must extend its own chain's height-1 QC")
        check_qc(qc, validators, quorum, genesis_hash, coin_check, unendorsed_ok=own_parent)
    if header.fallback_height > 2 or (header.fallback_height and coin_check is None):
        raise Rejected("malformed", "fallback height is 0, 1 or 2 (and only on a chain with the fallback)")
    if header.fallback_height and header.view <= header.fallback_height:
        raise Rejected("malformed", "a fallback block's view is above its fallback height")
    if header.fallback_height == 2 and qc_is_genesis(qc):
        raise Rejected("malformed", "a fallback block of height 2 must extend its own chain's height-1 QC")
    extra = unknown_fields(block)
    if extra:
        # hashes and signatures skip unknown fields: the stored bytes must be exactly what was signed
        raise Rejected("malformed", f"unknown protobuf fields in {', '.join(extra[:3])}")
    ids = tx_ids(block.txs, known)
    if merkle_root(ids) != header.txs_root:
        raise Rejected("malformed", "txs_root does not match the transactions")
    if len(set(ids)) != len(ids):
        raise Rejected("malformed", "a transaction appears twice in the block")
    return chain.block_hash(header), ids


def check_proposal(
    proposal: consensus_pb2.Proposal, chain_id: str, validators: frozenset[bytes], quorum: int, genesis_hash: bytes,
    coin_check: CoinCheck | None = None, known: KnownId | None = None,
) -> tuple[bytes, list[bytes]]:
    if proposal.HasField("tc"):
        check_tc(proposal.tc, validators, quorum, genesis_hash if coin_check else b"", coin_check)
        if proposal.tc.view + 1 != proposal.block.header.view:
            raise Rejected("bad_tc", "TC is not for the view before the block")
    if proposal.HasField("coin"):
        if coin_check is None or proposal.block.header.fallback_height:
            raise Rejected("bad_coin", "a coin rides only on a fast block of a chain with the fallback")
        if proposal.coin.view + 3 != proposal.block.header.view:
            raise Rejected("bad_coin", "the coin is not of the fallback just before the block's view")
        if not coin_check.ok(proposal.coin.view, proposal.coin.signature):
            raise Rejected("bad_coin", "the fallback coin does not verify")
    return check_block(proposal.block, chain_id, validators, quorum, genesis_hash, coin_check, known)


def check_vote(vote: consensus_pb2.Vote, validators: frozenset[bytes]) -> None:
    if vote.signature.signer not in validators:
        raise Rejected("unknown_signer", "vote by a key that is not a validator")
    if len(vote.block_hash) != 32 or vote.view < 1:
        raise Rejected("malformed", "vote needs a 32-byte block hash and a view >= 1")
    if not chain.vote_signature_ok(vote):
        raise Rejected("bad_signature", "vote signature does not verify")


def check_timeout(
    timeout: consensus_pb2.Timeout, validators: frozenset[bytes], quorum: int, genesis_hash: bytes,
    coin_check: CoinCheck | None = None,
) -> None:
    if timeout.signature.signer not in validators:
        raise Rejected("unknown_signer", "timeout by a key that is not a validator")
    if timeout.view < 1:
        raise Rejected("malformed", "timeout view must be >= 1")
    if not chain.timeout_signature_ok(timeout):
        raise Rejected("bad_signature", "timeout signature does not verify")
    if timeout.HasField("high_qc"):
        if timeout.high_qc.view >= timeout.view:
            raise Rejected("malformed", "timeout's high QC is not below its view")
        check_qc(timeout.high_qc, validators, quorum, genesis_hash, coin_check)
    if timeout.HasField("last_tc"):
        if timeout.last_tc.view >= timeout.view:
            raise Rejected("malformed", "timeout's last TC is not below its view")
        check_tc(timeout.last_tc, validators, quorum, genesis_hash if coin_check else b"", coin_check)


def tx_shape_refusal(tx: types_pb2.Transaction) -> Refusal | None:
    """Field checks before anything expensive (None: well formed)."""
    body = tx.WhichOneof("body")
    detail = None
    if body is None:
        detail = "transaction has no body"
    elif body == "publish_task":
        detail = "a task is published only at genesis"
    elif len(tx.sender) != crypto.PUBLIC_KEY_LEN:
        detail = "sender must be a 32-byte ed25519 key"
    elif len(tx.signature) != crypto.SIGNATURE_LEN:
        detail = "signature must be 64 bytes"
    elif body == "submit_proof" and tx.submit_proof.participant != tx.sender:
        detail = "submit_proof participant differs from the sender"
    elif body == "masked_update" and tx.masked_update.participant != tx.sender:
        detail = "masked_update participant differs from the sender"
    elif body == "mask_reveal" and tx.mask_reveal.holder != tx.sender:
        detail = "mask_reveal holder differs from the sender"
    elif body == "payload" and len(tx.payload) > chain.MAX_PAYLOAD_BYTES:
        # checked here, so it holds for a Byzantine leader's block as for admission
        return Refusal(refusal.TOO_LARGE, f"payload of {len(tx.payload)} bytes, over {chain.MAX_PAYLOAD_BYTES}")
    return None if detail is None else Refusal(refusal.MALFORMED, detail)

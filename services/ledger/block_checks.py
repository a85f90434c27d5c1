"""Shape checks of what the ledger is sent, made before it looks at the chain: an AppendRequest's
fields (raising AppendRejected, the refusal every append check raises; services.ledger.ledger checks
the rest) and a requested content id.
"""

from __future__ import annotations

import grpc

from zkpot import crypto
from zkpot.codec import cid_digest
from zkpot.v1 import ledger_pb2, types_pb2

HASH_LEN = 32
MAX_TXS_PER_BLOCK = 100_000


class AppendRejected(Exception):
    """A block the ledger refuses; `reason` is the metric label, `code` the gRPC status."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def _invalid(reason: str, message: str) -> AppendRejected:
    return AppendRejected(grpc.StatusCode.INVALID_ARGUMENT, reason, message)


def _check_qc_shape(qc: types_pb2.QuorumCert, what: str) -> None:
    if len(qc.block_hash) != HASH_LEN:
        raise _invalid("malformed", f"{what}.block_hash must be {HASH_LEN} bytes, got {len(qc.block_hash)}")
    for i, vote in enumerate(qc.votes):
        if len(vote.signer) != crypto.PUBLIC_KEY_LEN or len(vote.signature) != crypto.SIGNATURE_LEN:
            raise _invalid("malformed", f"{what}.votes[{i}] needs a 32-byte signer and a 64-byte signature")


def check_well_formed(req: ledger_pb2.AppendRequest) -> None:
    """Field-by-field shape checks (INVALID_ARGUMENT, reason 'malformed')."""
    if not req.HasField("block"):
        raise _invalid("malformed", "block is required")
    if not req.block.HasField("header"):
        raise _invalid("malformed", "block.header is required")
    if not req.HasField("qc"):
        raise _invalid("malformed", "qc (the block's commit certificate) is required")
    hdr = req.block.header
    if not hdr.chain_id:
        raise _invalid("malformed", "header.chain_id is required")
    if len(hdr.parent_hash) != HASH_LEN:
        raise _invalid("malformed", f"header.parent_hash must be {HASH_LEN} bytes, got {len(hdr.parent_hash)}")
    if len(hdr.proposer) != crypto.PUBLIC_KEY_LEN:
        raise _invalid("malformed", f"header.proposer must be 32 bytes, got {len(hdr.proposer)}")
    if len(hdr.txs_root) != HASH_LEN:
        raise _invalid("malformed", f"header.txs_root must be {HASH_LEN} bytes, got {len(hdr.txs_root)}")
    if len(req.block.signature) != crypto.SIGNATURE_LEN:
        raise _invalid("malformed", f"block.signature must be 64 bytes, got {len(req.block.signature)}")
    if len(req.block.txs) > MAX_TXS_PER_BLOCK:
        raise _invalid("oversize", f"{len(req.block.txs)} transactions exceed {MAX_TXS_PER_BLOCK} per block")
    if hdr.height == 0:
        raise _invalid("malformed", "height 0 is genesis; it is never appended")
    _check_qc_shape(req.qc, "qc")
    if hdr.HasField("parent_qc"):
        _check_qc_shape(hdr.parent_qc, "header.parent_qc")


def check_cid(cid: str) -> None:
    """ValueError unless `cid` is a well-formed content id."""
    if not cid:
        raise ValueError("cid is required")
    if len(cid) > 128:
        raise ValueError("cid too long")
    cid_digest(cid)

"""The ledger: checks a committed block and its certificate, executes it and stores it atomically.

Synchronous and single-writer by design: the gRPC server serializes Append calls and runs
`append` in a worker thread; reads may run concurrently (RocksDB is thread-safe).

Append checks, in order (nothing is written unless all pass):
  well-formed fields -> chain id -> height (identical block at a taken height: no-op; different:
  conflict; beyond head+1: gap) -> parent hash == head's hash -> view > parent's view (except on
  top of genesis) -> txs_root -> proposer is a genesis validator and signed the header -> the
  AppendRequest QC certifies (hash, view, height) of this block with a quorum of genesis
  validators -> header.parent_qc certifies the parent (may be empty when the parent is genesis).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.ledger import state as st
from services.ledger.store import META_GENESIS, Commit, Store
from zkpot import chain, crypto
from zkpot.codec import cid_digest, merkle_root
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2, types_pb2

log = logging.getLogger("zkpot.ledger")

HASH_LEN = 32
MAX_TXS_PER_BLOCK = 100_000


class AppendRejected(Exception):
    """A block the ledger refuses; `reason` is the metric label, `code` the gRPC status."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


class GenesisMismatch(RuntimeError):
    pass


def genesis_fingerprint(genesis: Genesis) -> bytes:
    """Hash of everything genesis fixes: block 0 plus the validator and participant sets."""
    h = hashlib.sha256(b"zkpot/v1/genesis\x00")
    h.update(chain.block_hash(genesis.block().header))
    for m in genesis.validators:
        h.update(b"v" + m.public_key)
    for m in genesis.participants:
        h.update(b"p" + m.public_key + m.validator.rjust(32, b"\x00"))
    return h.digest()


@dataclass(frozen=True)
class Head:
    height: int
    block_hash: bytes
    view: int
    state_root: bytes
    timestamp_ms: int
    current_round: int  # read with the head so a Head response is one consistent snapshot


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


class Ledger:
    def __init__(self, data_dir: Path, genesis: Genesis) -> None:
        self.genesis = genesis
        self.validators = genesis.validator_keys
        self.quorum = genesis.quorum
        self.machine = st.StateMachine(genesis)
        self.store = Store(Path(data_dir))
        try:
            self._init_genesis()
        except Exception:
            self.store.close()
            raise
        self.head = self._load_head()

    def close(self) -> None:
        self.store.close()

    # -- genesis -------------------------------------------------------------------------------

    def _init_genesis(self) -> None:
        fingerprint = genesis_fingerprint(self.genesis)
        stored = self.store.meta(META_GENESIS)
        if stored is not None:
            if stored != fingerprint:
                raise GenesisMismatch(
                    f"{self.store.path} holds a different chain (genesis {stored.hex()[:16]}, "
                    f"file {fingerprint.hex()[:16]})"
                )
            return
        block = self.genesis.block()
        ex = self.machine.execute_genesis(self.store, block)
        bh = chain.block_hash(block.header)
        sb = ledger_pb2.StoredBlock(block=block, block_hash=bh, state_root=ex.state_root, results=ex.results)
        tx_ids = [chain.tx_id(tx) for tx in block.txs]
        self.store.commit(
            Commit(0, sb.SerializeToString(deterministic=True), bh, tx_ids, ex.state, ex.blobs),
            extra_meta={META_GENESIS: fingerprint},
        )
        log.info("initialized ledger from genesis %s (chain %s)", bh.hex()[:16], self.genesis.chain_id)

    def _load_head(self) -> Head:
        height = self.store.head_height()
        assert height is not None, "store without head after genesis"
        sb = self.stored_block(height)
        assert sb is not None, f"head {height} points at a missing block"
        hdr = sb.block.header
        return Head(height, sb.block_hash, hdr.view, sb.state_root, hdr.timestamp_ms, self.current_round())

    # -- reads ---------------------------------------------------------------------------------

    def stored_block(self, height: int) -> ledger_pb2.StoredBlock | None:
        raw = self.store.block_bytes(height)
        return None if raw is None else ledger_pb2.StoredBlock.FromString(raw)

    def current_round(self) -> int:
        return st.read_current_round(self.store.state_get)

    def round_summary(self, round_: int) -> ledger_pb2.RoundSummary | None:
        return st.read_round(self.store.state_get, round_)

    def task(self) -> ledger_pb2.GetTaskResponse | None:
        return st.read_task(self.store.state_get)

    def schedule(self) -> ledger_pb2.LeaderScheduleResponse | None:
        return st.read_schedule(self.store.state_get)

    # -- append --------------------------------------------------------------------------------

    def append(self, req: ledger_pb2.AppendRequest) -> ledger_pb2.AppendResponse:
        """Check, execute and store one committed block (raises AppendRejected; writes nothing then)."""
        check_well_formed(req)
        block, hdr, head = req.block, req.block.header, self.head
        if hdr.chain_id != self.genesis.chain_id:
            raise _invalid("chain_id", f"block is for chain {hdr.chain_id!r}, this ledger is {self.genesis.chain_id!r}")
        bh = chain.block_hash(hdr)
        if hdr.height <= head.height:
            existing = self.stored_block(hdr.height)
            assert existing is not None
            if existing.block_hash == bh:
                return ledger_pb2.AppendResponse(
                    height=hdr.height,
                    block_hash=bh,
                    state_root=existing.state_root,
                    already_present=True,
                    results=existing.results,
                )
            log.error(
                "CONFLICT: refusing block %s at height %d, committed block there is %s",
                bh.hex()[:16], hdr.height, existing.block_hash.hex()[:16],
            )
            raise AppendRejected(
                grpc.StatusCode.ALREADY_EXISTS,
                "conflict",
                f"a different block ({existing.block_hash.hex()[:16]}) is committed at height {hdr.height}; "
                f"refusing {bh.hex()[:16]}",
            )
        if hdr.height != head.height + 1:
            raise AppendRejected(
                grpc.StatusCode.FAILED_PRECONDITION, "gap", f"height {hdr.height} does not follow head {head.height}"
            )
        if hdr.parent_hash != head.block_hash:
            raise AppendRejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                "parent",
                f"parent_hash {hdr.parent_hash.hex()[:16]} is not head {head.block_hash.hex()[:16]} "
                f"(height {head.height})",
            )
        if head.height > 0 and hdr.view <= head.view:
            raise _invalid("view", f"view {hdr.view} does not exceed parent's view {head.view}")
        tx_ids = [chain.tx_id(tx) for tx in block.txs]
        if merkle_root(tx_ids) != hdr.txs_root:
            raise _invalid("txs_root", "header.txs_root does not match the transactions")
        if hdr.proposer not in self.validators:
            raise _invalid("proposer", f"proposer {crypto.short(hdr.proposer)} is not a genesis validator")
        if not chain.block_signature_ok(block):
            raise _invalid("signature", "block signature does not verify for its proposer")
        qc = req.qc
        if (qc.block_hash, qc.view, qc.height) != (bh, hdr.view, hdr.height):
            raise _invalid(
                "qc", f"qc certifies ({qc.block_hash.hex()[:16]}, view {qc.view}, height {qc.height}), "
                f"not this block ({bh.hex()[:16]}, view {hdr.view}, height {hdr.height})",
            )
        try:
            chain.check_qc(qc, self.validators, self.quorum)
        except chain.InvalidCertificate as exc:
            raise _invalid("qc", f"qc: {exc}") from exc
        self._check_parent_qc(hdr, head)

        ex = self.machine.execute(self.store, block, tx_ids, head.state_root)
        sb = ledger_pb2.StoredBlock(block=block, qc=qc, block_hash=bh, state_root=ex.state_root, results=ex.results)
        self.store.commit(
            Commit(
                hdr.height, sb.SerializeToString(deterministic=True), bh, tx_ids, ex.state, ex.blobs,
                skip_tx_index=ex.duplicate_positions,
            )
        )
        self.head = Head(hdr.height, bh, hdr.view, ex.state_root, hdr.timestamp_ms, self.current_round())
        return ledger_pb2.AppendResponse(height=hdr.height, block_hash=bh, state_root=ex.state_root, results=ex.results)

    def _check_parent_qc(self, hdr: types_pb2.BlockHeader, head: Head) -> None:
        if not hdr.HasField("parent_qc") or not hdr.parent_qc.votes:
            if head.height == 0:
                return  # the parent is genesis, which nobody votes on
            raise _invalid("parent_qc", "header.parent_qc with votes is required above height 1")
        pqc = hdr.parent_qc
        if (pqc.block_hash, pqc.view, pqc.height) != (head.block_hash, head.view, head.height):
            raise _invalid(
                "parent_qc", f"parent_qc certifies ({pqc.block_hash.hex()[:16]}, view {pqc.view}, height "
                f"{pqc.height}), not the parent ({head.block_hash.hex()[:16]}, view {head.view}, height {head.height})",
            )
        try:
            chain.check_qc(pqc, self.validators, self.quorum)
        except chain.InvalidCertificate as exc:
            raise _invalid("parent_qc", f"parent_qc: {exc}") from exc

"""The ledger: checks a committed block and its certificate, executes it and stores it atomically.

An append has two stages: prepare() checks and executes a block on top of the tip (the newest
prepared block, or the head) and queues it; commit() writes the oldest queued block as one synced
batch, after which it is the head that readers see. append() does both. One thread prepares at a
time and one commits at a time, but the two may overlap (the server prepares block h+1 while h is
being synced); reads may run concurrently (RocksDB is thread-safe). A failed write drops every
queued block (each builds on the one before).

Append checks, in order (nothing is written unless all pass):
  well-formed fields -> chain id -> height (identical block at a taken height: no-op; different:
  conflict; beyond head+1: gap) -> parent hash == head's hash -> view > parent's view (except on
  top of genesis) -> txs_root -> proposer is a genesis validator and signed the header -> the
  AppendRequest QC certifies (hash, view, height) of this block with a quorum of genesis
  validators -> header.parent_qc certifies the parent (may be empty when the parent is genesis).

Speed without weakening any check: signatures are verified over the tx ids and block hash
already computed (they are the digests that were signed), and a parent QC byte-identical to the
QC verified with the parent's own append (consensus sends a block's QC as its child's parent_qc)
is not verified twice. (Verifying certificates in a worker thread beside execution was measured
slower on a loaded 2-core host: each thread hand-off waits for a CPU; see docs/ledger.md.)

The well-formed checks and AppendRejected are in services.ledger.block_checks; prepared blocks and
the view of the store through them in services.ledger.pending.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import grpc

from services.ledger import records
from services.ledger import state as st
from services.ledger.block_checks import AppendRejected, _invalid, check_well_formed
from services.ledger.pending import Head, Prepared, _PendingView
from services.ledger.store import META_GENESIS, Commit, Store
from zkpot import chain, crypto
from zkpot.codec import merkle_root
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2, types_pb2

log = logging.getLogger("zkpot.ledger")


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


class Ledger:
    def __init__(self, data_dir: Path, genesis: Genesis, commitments: st.masking.Commitments | None = None,
                 read_only: bool = False) -> None:
        """read_only: open a stopped ledger for queries (no lock taken, nothing written; appends fail)."""
        self.genesis = genesis
        self.validators = genesis.validator_keys
        self.quorum = genesis.quorum
        self.machine = st.StateMachine(genesis, commitments)
        self.store = Store(Path(data_dir), read_only=read_only)
        try:
            if read_only:
                self._check_genesis()
            else:
                self._init_genesis()
        except Exception:
            self.store.close()
            raise
        self.head = self._load_head()  # the newest durable block
        # prepared, not yet written blocks (oldest first) and the tip they lead to; the tip's QC is
        # the one verified with it (deterministic bytes; empty at genesis)
        self._lock = threading.Lock()
        self._pending: list[Prepared] = []
        self._epoch = 0
        self._tip, self._tip_qc = self.head, self._head_qc_of(self.head.height)

    def close(self) -> None:
        self.store.close()

    # -- genesis -------------------------------------------------------------------------------

    def _check_genesis(self) -> None:
        stored = self.store.meta(META_GENESIS)
        if stored is None:
            raise GenesisMismatch(f"{self.store.path} holds no chain (never started)")
        if stored != genesis_fingerprint(self.genesis):
            raise GenesisMismatch(f"{self.store.path} holds a different chain (genesis {stored.hex()[:16]}, file "
                                  f"{genesis_fingerprint(self.genesis).hex()[:16]})")

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
        return records.read_current_round(self.store.state_get)

    def round_summary(self, round_: int) -> ledger_pb2.RoundSummary | None:
        return records.read_round(self.store.state_get, round_)

    def resolve_round(self, round_: int) -> int:
        """0 means the open round, or the last one once the task has finished."""
        if round_ == 0:
            return min(self.current_round(), max(self.genesis.manifest.rounds, 1))
        return round_

    def scores(self, round_: int) -> ledger_pb2.GetScoresResponse | None:
        """Proven scores of a round (None if it has not opened), in acceptance order."""
        summary = self.round_summary(round_)
        if summary is None:
            return None
        # read after the summary: a score is written in the same batch as its submission and
        # never changes, so every submission seen in the summary has its score here
        prefix = records.score_prefix(round_)
        proven = {key[len(prefix) :]: records.decode_score(raw) for key, raw in self.store.state_prefix(prefix)}
        operator = {m.public_key: m.validator for m in self.genesis.participants}
        resp = ledger_pb2.GetScoresResponse(
            round=round_,
            closed=summary.closed,
            test_set_size=summary.test_set_size,
            min_correct=self.genesis.manifest.min_correct,
        )
        for s in summary.submissions:
            resp.scores.add(
                participant=s.participant,
                proven_correct=proven[s.participant],
                aggregated=s.aggregated,
                validator=operator.get(s.participant, b""),
                height=s.height,
            )
        return resp

    def task(self) -> ledger_pb2.GetTaskResponse | None:
        return records.read_task(self.store.state_get)

    def schedule(self) -> ledger_pb2.LeaderScheduleResponse | None:
        return records.read_schedule(self.store.state_get)

    # -- append --------------------------------------------------------------------------------

    def append(self, req: ledger_pb2.AppendRequest) -> ledger_pb2.AppendResponse:
        """Check, execute and store one committed block (raises AppendRejected; writes nothing then)."""
        prepared = self.prepare(req)
        if isinstance(prepared, ledger_pb2.AppendResponse):
            return prepared  # already present
        self.commit(prepared)
        return prepared.response

    def prepare(self, req: ledger_pb2.AppendRequest) -> Prepared | ledger_pb2.AppendResponse:
        """Check and execute a block on top of the tip (the newest prepared block, or the head);
        queue it for commit() and return it, or return the response for a block already there.
        One caller at a time; commit() may run concurrently in another thread."""
        check_well_formed(req)
        block, hdr = req.block, req.block.header
        with self._lock:
            tip, tip_qc, pending, epoch = self._tip, self._tip_qc, tuple(self._pending), self._epoch
        view = _PendingView(self.store, pending)
        if hdr.chain_id != self.genesis.chain_id:
            raise _invalid("chain_id", f"block is for chain {hdr.chain_id!r}, this ledger is {self.genesis.chain_id!r}")
        bh = chain.block_hash(hdr)
        if hdr.height <= tip.height:
            existing = view.stored_block(hdr.height)
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
        if hdr.height != tip.height + 1:
            raise AppendRejected(
                grpc.StatusCode.FAILED_PRECONDITION, "gap", f"height {hdr.height} does not follow head {tip.height}"
            )
        if hdr.parent_hash != tip.block_hash:
            raise AppendRejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                "parent",
                f"parent_hash {hdr.parent_hash.hex()[:16]} is not head {tip.block_hash.hex()[:16]} "
                f"(height {tip.height})",
            )
        if tip.height > 0 and hdr.view <= tip.view:
            raise _invalid("view", f"view {hdr.view} does not exceed parent's view {tip.view}")
        tx_ids = [chain.tx_id(tx) for tx in block.txs]
        if merkle_root(tx_ids) != hdr.txs_root:
            raise _invalid("txs_root", "header.txs_root does not match the transactions")
        if hdr.proposer not in self.validators:
            raise _invalid("proposer", f"proposer {crypto.short(hdr.proposer)} is not a genesis validator")
        if not chain.block_signature_ok(block, bh):
            raise _invalid("signature", "block signature does not verify for its proposer")
        qc = req.qc
        if (qc.block_hash, qc.view, qc.height) != (bh, hdr.view, hdr.height):
            raise _invalid(
                "qc", f"qc certifies ({qc.block_hash.hex()[:16]}, view {qc.view}, height {qc.height}), "
                f"not this block ({bh.hex()[:16]}, view {hdr.view}, height {hdr.height})",
            )
        pqc = self._parent_qc_to_verify(hdr, tip, tip_qc)
        self._check_certificates(qc, pqc)

        ex = self.machine.execute(view, block, tx_ids, tip.state_root)

        sb = ledger_pb2.StoredBlock(block=block, qc=qc, block_hash=bh, state_root=ex.state_root, results=ex.results)
        commit = Commit(
            hdr.height, sb.SerializeToString(deterministic=True), bh, tx_ids, ex.state, ex.blobs,
            skip_tx_index=ex.duplicate_positions,
        )  # fmt: skip
        after = view.with_writes(ex.state)
        prepared = Prepared(
            commit=commit,
            head=Head(hdr.height, bh, hdr.view, ex.state_root, hdr.timestamp_ms, records.read_current_round(after)),
            qc=qc.SerializeToString(deterministic=True),
            response=ledger_pb2.AppendResponse(
                height=hdr.height, block_hash=bh, state_root=ex.state_root, results=ex.results,
                schedule_epoch=schedule.epoch if (schedule := records.read_schedule(after)) is not None else 0,
            ),
            tx_locations={
                tid: (hdr.height, pos) for pos, tid in enumerate(tx_ids) if pos not in ex.duplicate_positions
            },
            epoch=epoch,
        )
        with self._lock:
            if self._epoch != epoch or self._tip is not tip:
                raise RuntimeError("pending blocks were dropped while this block was prepared; resend it")
            self._pending.append(prepared)
            self._tip, self._tip_qc = prepared.head, prepared.qc
        return prepared

    def commit(self, prepared: Prepared) -> None:
        """Write the oldest prepared block as one synced batch; then it is the head. On an error
        every prepared block is dropped (they build on this one) and the error is raised."""
        self.commit_group([prepared])

    def commit_group(self, group: list[Prepared]) -> None:
        """Write the oldest prepared blocks, in order, as ONE synced batch (group commit: one
        fsync for every block prepared meanwhile); then the last is the head."""
        with self._lock:
            if self._pending[: len(group)] != group or not group:
                raise RuntimeError(f"blocks from {group[0].commit.height if group else '?'} are not the next prepared")
        try:
            self.store.commit_group([p.commit for p in group])
        except BaseException:
            self.drop_pending()
            raise
        with self._lock:
            del self._pending[: len(group)]
            self.head = group[-1].head  # durable: readers may see it now

    def drop_pending(self) -> None:
        """Forget every prepared, unwritten block: the tip falls back to the head."""
        with self._lock:
            self._pending.clear()
            self._epoch += 1
            self._tip, self._tip_qc = self.head, self._head_qc_of(self.head.height)

    def _head_qc_of(self, height: int) -> bytes:
        sb = self.stored_block(height)
        return sb.qc.SerializeToString(deterministic=True) if sb is not None and sb.qc.votes else b""

    def _check_certificates(self, qc: types_pb2.QuorumCert, pqc: types_pb2.QuorumCert | None) -> None:
        """The votes of the QC, then of the parent QC (None: nothing left to verify)."""
        try:
            chain.check_qc(qc, self.validators, self.quorum)
        except chain.InvalidCertificate as exc:
            raise _invalid("qc", f"qc: {exc}") from exc
        if pqc is not None:
            try:
                chain.check_qc(pqc, self.validators, self.quorum)
            except chain.InvalidCertificate as exc:
                raise _invalid("parent_qc", f"parent_qc: {exc}") from exc

    def _parent_qc_to_verify(
        self, hdr: types_pb2.BlockHeader, head: Head, head_qc: bytes
    ) -> types_pb2.QuorumCert | None:
        """Check what parent_qc certifies; return it if its signatures still need verifying."""
        if not hdr.HasField("parent_qc") or not hdr.parent_qc.votes:
            if head.height == 0:
                return None  # the parent is genesis, which nobody votes on
            raise _invalid("parent_qc", "header.parent_qc with votes is required above height 1")
        pqc = hdr.parent_qc
        if (pqc.block_hash, pqc.view, pqc.height) != (head.block_hash, head.view, head.height):
            raise _invalid(
                "parent_qc", f"parent_qc certifies ({pqc.block_hash.hex()[:16]}, view {pqc.view}, height "
                f"{pqc.height}), not the parent ({head.block_hash.hex()[:16]}, view {head.view}, height {head.height})",
            )
        if head_qc and pqc.SerializeToString(deterministic=True) == head_qc:
            return None  # the very QC verified when the parent was appended
        return pqc

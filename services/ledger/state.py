"""The ledger's deterministic state machine: a pure function of the ordered, committed transactions.

It runs inside the ledger, in the same RocksDB batch as the block (as an application behind
CometBFT's ABCI); consensus never computes state. Every replica that executes the same blocks
writes the same state and the same state roots.

Rules
- Genesis (block 0 = zkpot.genesis.Genesis.block()): records the task (manifest, task id), stores
  PublishTask.initial_model in blobs under manifest.artefacts["initial_model"] (its content id must
  match and it must decode), opens round 1 at height 0 with global_model_cid = that cid. Initial
  leader schedule: epoch 0, activation_view 0, leaders = genesis validators in genesis order.
- Secure-aggregation tasks (manifest.secure_aggregation) replace the parameter rules below with
  services.ledger.masking's phases (PROOFS -> MASKING -> UNMASKING -> closed) and its checks.
- SubmitProof is accepted iff: the task id is the chain's; the task is not finished; round == the
  open round; sender == participant; participant is a genesis participant; no earlier accepted
  submission by that participant in that round;
  model_cid == content_id(model_params); model_cid is neither the round's global model nor an
  earlier accepted submission's model of the round (free-riding); model_params decodes
  (zkpot.model_codec) with the layout of the round's global model; and the same two free-riding
  rules hold for the model rounded to the task's param_scale (model_codec.quantized), i.e. for
  what the proof commits to, so bytes changed by less than the circuit's quantum earn nothing
  (secure aggregation compares the commitments themselves). Otherwise it is recorded as a
  TxResult with accepted=false and a reason; the block stays valid. Proofs and transaction
  signatures are NOT checked here (issue 22): the ledger appends only blocks certified by a QC of
  2f+1 validators, and an honest replica votes only after its verifier accepted every proof and it
  verified every signature of the block (consensus core.on_proposal), so with at most f faulty at
  least f+1 honest replicas checked each one. The ledger still checks the QC and that the
  transactions are exactly those the certified header's txs_root names. Accepted: the submission
  (participant, tx id, claimed_correct, model_cid, height) joins the round's summary, the model
  bytes go to blobs, and the proven score b"score/" + u64(r) + participant = u32(claimed_correct)
  is written.
- A transaction whose id is already on chain (or earlier in the same block) is rejected as a
  duplicate. PublishTask after genesis is rejected. Opaque `payload` transactions are accepted
  with no state change (consensus benchmarks) when a genesis member signed them; unknown bodies
  and strangers' payloads are refused (issue 18.3).
- Round close, evaluated once after each non-genesis block's transactions: the open round r closes
  when every genesis participant (at least one) has an accepted submission in r, or when its
  deadline has passed: height >= open_height + manifest.round_deadline_blocks AND the block's
  timestamp >= open_time_ms + manifest.round_deadline_ms, each only when set (both 0: no deadline;
  StateMachine._expired says why chain time is there). On close the
  aggregate is zkpot.aggregation.aggregate(manifest.aggregation_rule, ...) over the models of
  submissions with claimed_correct >= manifest.min_correct (default rule: equal-weight integer
  FedAvg in participant-key order); if none qualifies the global model carries over unchanged.
  The aggregate goes to blobs; the summary gets next_global_model_cid, close_height,
  aggregation_rule "<rule>(min_correct=K)" and each submission's `aggregated`. An unknown rule
  name in the manifest is a GenesisError. Then the leader schedule: a validator's score is the claimed_correct
  of the participant whose Member.validator it is (the best one if several), counting only submissions
  whose model is in the aggregate (`aggregated`: not dropped out, not voided, not left out), ranked by
  zkpot.schedule.rank_leaders(r, validators in genesis order, scores, min_correct);
  activation_view = closing block's view + zkpot.schedule.ACTIVATION_LAG; the previous leaders
  and activation view are kept. Round r+1 then opens at the same height from the aggregate,
  unless r == manifest.rounds: the task is finished (current round r+1, no round opens).
- state_root(h) = sha256("zkpot/v1/state-root" || state_root(h-1) || D), D = sha256 over this
  block's state writes in key order (each: len(key) || key || sha256(value)); a record (task,
  round summary, leader schedule) is hashed as its canonical encoding (zkpot/codec.py), never as
  the protobuf wire bytes it is stored in: those are not stable across protobuf versions, backends
  or languages, and a field added to a record changes no root while it is unset (issue 17.1;
  golden roots in tests/test_state_roots.py). state_root(-1) = 32
  zero bytes. Blobs are content-addressed and referenced by content id from state, so they are
  covered by the ids and not hashed again.

State keys (column family `state`):
  b"task"                  GetTaskResponse (task id + manifest)
  b"round/current"         u64: the open round (rounds + 1 once the task is finished)
  b"round/" + u64(r)       RoundSummary of round r (submissions in acceptance order)
  b"schedule"              LeaderScheduleResponse
  b"score/" + u64(r) + pk  u32: proven correct count of participant pk's accepted round-r proof
  secure-aggregation tasks (services.ledger.masking; the round summary carries phase, mask set, dropped):
  b"reveal/" + u64(r) + dealer + holder       key opening holder's share of a dropped dealer's mask secret
  b"reveal-self/" + u64(r) + dealer + holder  key opening holder's share of a counted dealer's self seed
  b"self-seed/" + u64(r) + member             a counted member's self seed, revealed by itself
  Masked vectors and share boxes are blobs, referenced by content id from the round summary.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
from google.protobuf.message import Message

from services.ledger import masking
from zkpot import aggregation, chain, model_codec, refusal, schedule
from zkpot.codec import canonical_bytes, content_id, u64_key
from zkpot.genesis import Genesis
from zkpot.refusal import Refusal
from zkpot.v1 import ledger_pb2, types_pb2

KEY_TASK = b"task"
KEY_CURRENT_ROUND = b"round/current"
KEY_SCHEDULE = b"schedule"
ZERO_ROOT = b"\x00" * 32
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
SCORE_PREFIX = b"score/"
T = TypeVar("T")


def round_key(round_: int) -> bytes:
    return b"round/" + u64_key(round_)


def score_prefix(round_: int) -> bytes:
    return SCORE_PREFIX + u64_key(round_)


def score_key(round_: int, participant: bytes) -> bytes:
    return score_prefix(round_) + participant


def decode_score(raw: bytes) -> int:
    return _U32.unpack(raw)[0]


def aggregation_rule(min_correct: int, name: str = "") -> str:
    """The round summary's provenance label of the task's rule (zkpot.aggregation)."""
    return aggregation.rule_label(name, min_correct)


class Reader(Protocol):
    """What execution reads from the committed store."""

    def state_get(self, key: bytes) -> bytes | None: ...
    def blob(self, cid: str) -> bytes | None: ...
    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None: ...


class GenesisError(ValueError):
    """The genesis task publication is inconsistent (the ledger refuses to start)."""


@dataclass
class Execution:
    results: list[types_pb2.TxResult]
    state: dict[bytes, bytes]
    blobs: dict[str, bytes]
    state_root: bytes
    duplicate_positions: set[int] = field(default_factory=set)


class _Overlay:
    """Writes of the block being executed, read through before the committed store."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.state: dict[bytes, bytes] = {}  # what is stored
        self.digests: dict[bytes, bytes] = {}  # what the state root covers
        self.blobs: dict[str, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.state[key] if key in self.state else self.reader.state_get(key)

    def put(self, key: bytes, value: bytes | Message) -> None:
        """A raw value (a count, a height), or a record: stored as protobuf, hashed canonically."""
        if isinstance(value, Message):
            self.state[key] = value.SerializeToString(deterministic=True)
            self.digests[key] = hashlib.sha256(canonical_bytes(value)).digest()
        else:
            self.state[key] = value
            self.digests[key] = hashlib.sha256(value).digest()

    def blob(self, cid: str) -> bytes | None:
        return self.blobs[cid] if cid in self.blobs else self.reader.blob(cid)


def state_root(previous: bytes, digests: dict[bytes, bytes]) -> bytes:
    """`digests`: this block's state writes, key -> sha256 of the value (_Overlay.put)."""
    d = hashlib.sha256()
    for key in sorted(digests):
        d.update(_U64.pack(len(key)) + key + digests[key])
    return hashlib.sha256(b"zkpot/v1/state-root\x00" + previous + d.digest()).digest()


# -- typed reads of committed state ---------------------------------------------------------------


def read_current_round(get: Callable[[bytes], bytes | None]) -> int:
    raw = get(KEY_CURRENT_ROUND)
    return 0 if raw is None else _U64.unpack(raw)[0]


def read_round(get: Callable[[bytes], bytes | None], round_: int) -> ledger_pb2.RoundSummary | None:
    raw = get(round_key(round_))
    return None if raw is None else ledger_pb2.RoundSummary.FromString(raw)


def read_task(get: Callable[[bytes], bytes | None]) -> ledger_pb2.GetTaskResponse | None:
    raw = get(KEY_TASK)
    return None if raw is None else ledger_pb2.GetTaskResponse.FromString(raw)


def read_schedule(get: Callable[[bytes], bytes | None]) -> ledger_pb2.LeaderScheduleResponse | None:
    raw = get(KEY_SCHEDULE)
    return None if raw is None else ledger_pb2.LeaderScheduleResponse.FromString(raw)


def _layout(tensors: list[tuple[str, np.ndarray]]) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, arr.shape) for name, arr in tensors]


def _of_global_model(cache: dict[str, T], ov: _Overlay, cid: str, derive: Callable[[bytes], T]) -> T:
    """derive(global model bytes), cached by content id (the bytes behind a cid never change; at most 16)."""
    found = cache.get(cid)
    if found is None:
        data = ov.blob(cid)
        assert data is not None  # global models are stored before their round opens
        found = derive(data)
        if len(cache) >= 16:
            cache.clear()
        cache[cid] = found
    return found


class StateMachine:
    def __init__(self, genesis: Genesis, commitments: masking.Commitments | None = None) -> None:
        self.genesis = genesis
        self.manifest = genesis.manifest
        self.task_id = genesis.task_id
        self.participants = genesis.participant_keys
        self.participant_order = tuple(m.public_key for m in genesis.participants)  # share holders' order
        self.validators = tuple(m.public_key for m in genesis.validators)
        self.members = genesis.member_keys
        self._layouts: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
        self._quantized: dict[str, bytes] = {}
        self._now_ms = genesis.genesis_time_ms  # the timestamp of the block being executed
        # secure aggregation: the task's commitment scheme (needs its vk/settings/srs)
        self.commitments = commitments
        self.secure = self.manifest.secure_aggregation
        n = len(self.participant_order)
        self.secagg_threshold = masking.threshold(self.manifest, n) if self.secure and n >= 2 else 0
        self._global_commitments: dict[str, bytes] = {}

    # -- genesis -------------------------------------------------------------------------------

    def execute_genesis(self, reader: Reader, block: types_pb2.Block) -> Execution:
        ov = _Overlay(reader)
        publish = self.genesis.publish_task.publish_task
        cid = self.manifest.artefacts.get("initial_model", "")
        try:
            rule = aggregation.rule_name(self.manifest.aggregation_rule)
        except aggregation.AggregationError as exc:
            raise GenesisError(str(exc)) from exc
        if not 1 <= self.manifest.param_scale <= model_codec.FRAC_BITS:
            # free-riding is judged on the model rounded to this scale (what the proofs commit to)
            raise GenesisError(f"task param_scale {self.manifest.param_scale} is not 1..{model_codec.FRAC_BITS}")
        if self.secure:
            if rule not in aggregation.SUM_RULES:
                raise GenesisError(f"secure aggregation needs a sum rule ({', '.join(aggregation.SUM_RULES)}), "
                                   f"the task names {rule!r}")
            n = len(self.participant_order)
            if not 1 <= self.secagg_threshold <= n - 1:
                raise GenesisError(f"secure aggregation needs at least 2 participants and a threshold of 1..{n - 1} "
                                   f"(the other participants hold each one's shares); got {self.secagg_threshold}")
            if self.commitments is None:
                raise GenesisError("this task uses secure aggregation: the ledger needs the task's artefacts to "
                                   "check aggregates against commitments (start it with --task-dir)")
        if not publish.initial_model:
            raise GenesisError("genesis task carries no initial model")
        if content_id(publish.initial_model) != cid:
            raise GenesisError(f"initial model content id {content_id(publish.initial_model)} != manifest's {cid!r}")
        try:
            model_codec.decode_fixed(publish.initial_model)
        except model_codec.ModelFormatError as exc:
            raise GenesisError(f"initial model does not decode: {exc}") from exc
        ov.put(KEY_TASK, ledger_pb2.GetTaskResponse(task_id=self.task_id, manifest=self.manifest))
        ov.blobs[cid] = publish.initial_model
        self._now_ms = self.genesis.genesis_time_ms
        self._open_round(ov, 1, 0, cid)
        sched = ledger_pb2.LeaderScheduleResponse(
            epoch=0, activation_view=0, leaders=self.validators, scores=[0] * len(self.validators)
        )
        ov.put(KEY_SCHEDULE, sched)
        results = [types_pb2.TxResult(tx_id=chain.tx_id(tx), accepted=True, reason=refusal.ACCEPTED)
                   for tx in block.txs]
        return Execution(results, ov.state, ov.blobs, state_root(ZERO_ROOT, ov.digests))

    def _open_round(self, ov: _Overlay, round_: int, height: int, global_cid: str) -> None:
        summary = ledger_pb2.RoundSummary(
            round=round_,
            open_height=height,
            # round 1 opens at genesis, but its chain time starts with the first block (set there):
            # a chain started long after genesis_time_ms must not find its first round expired
            open_time_ms=self._now_ms if self.manifest.round_deadline_ms and height > 0 else 0,
            global_model_cid=global_cid,
            aggregation_rule=aggregation_rule(self.manifest.min_correct, self.manifest.aggregation_rule),
            test_set_size=self.manifest.test_set_size,
            phase=masking.PHASE.ROUND_PHASE_PROOFS,
        )
        ov.put(round_key(round_), summary)
        ov.put(KEY_CURRENT_ROUND, _U64.pack(round_))

    # -- blocks --------------------------------------------------------------------------------

    def execute(
        self, reader: Reader, block: types_pb2.Block, tx_ids: list[bytes], previous_root: bytes
    ) -> Execution:
        ov = _Overlay(reader)
        height = block.header.height
        self._now_ms = block.header.timestamp_ms  # chain time: what round deadlines count besides blocks
        if height == 1 and self.manifest.round_deadline_ms:
            first = read_round(ov.get, 1)
            if first is not None and not first.open_time_ms:
                first.open_time_ms = self._now_ms
                ov.put(round_key(1), first)
        results: list[types_pb2.TxResult] = []
        seen: set[bytes] = set()
        duplicates: set[int] = set()
        for pos, (tx, tid) in enumerate(zip(block.txs, tx_ids, strict=True)):
            if tid in seen or reader.tx_location(tid) is not None:
                duplicates.add(pos)
                reason: Refusal | None = Refusal(refusal.DUPLICATE, "duplicate transaction (already committed)")
            else:
                seen.add(tid)
                reason = self._apply(ov, tx, tid, height)
            results.append(types_pb2.TxResult(tx_id=tid, accepted=True, reason=refusal.ACCEPTED) if reason is None
                           else types_pb2.TxResult(tx_id=tid, reason=reason.reason, detail=reason.detail))
        self._maybe_close_round(ov, height, block.header.view)
        return Execution(results, ov.state, ov.blobs, state_root(previous_root, ov.digests), duplicates)

    def _apply(self, ov: _Overlay, tx: types_pb2.Transaction, tid: bytes, height: int) -> Refusal | None:
        """Apply one transaction; None if accepted, else why it was not."""
        kind = tx.WhichOneof("body")
        if kind == "submit_proof":
            return self._submit(ov, tx, tid, height)
        if kind == "publish_task":
            return Refusal(refusal.MALFORMED, "task already published at genesis")
        if kind in ("masked_update", "mask_reveal"):
            return self._secagg_tx(ov, tx, tid, height, kind)
        if kind == "payload":  # no state change; only from genesis members
            return None if tx.sender in self.members else \
                Refusal(refusal.UNKNOWN_SIGNER, "payload from a key that is not a genesis member")
        return Refusal(refusal.MALFORMED, "no rule for a transaction without a known body")

    def _submit(self, ov: _Overlay, tx: types_pb2.Transaction, tid: bytes, height: int) -> Refusal | None:
        sp = tx.submit_proof
        if sp.task_id != self.task_id:
            return Refusal(refusal.WRONG_TASK, "unknown task id")
        current = read_current_round(ov.get)
        if current > self.manifest.rounds:
            return Refusal(refusal.WRONG_ROUND, "task finished")
        if sp.round != current:
            return Refusal(refusal.WRONG_ROUND, f"round {sp.round} is not open (open round is {current})")
        if tx.sender != sp.participant:
            return Refusal(refusal.UNKNOWN_SIGNER, "sender is not the participant")
        if sp.participant not in self.participants:
            return Refusal(refusal.UNKNOWN_SIGNER, "unknown participant")
        summary = read_round(ov.get, current)
        assert summary is not None  # the open round always has a summary
        if any(s.participant == sp.participant for s in summary.submissions):
            return Refusal(refusal.DUPLICATE, f"duplicate submission for round {current}")
        if summary.phase != masking.PHASE.ROUND_PHASE_PROOFS:
            return Refusal(refusal.WRONG_PHASE,
                           f"round {current} no longer takes proofs ({masking.PHASE.Name(summary.phase)})")
        if self.secure:
            return self._submit_private(ov, summary, sp, tid, height)
        if sp.model_cid != content_id(sp.model_params):
            return Refusal(refusal.MODEL_MISMATCH, "model_cid does not match model_params")
        # free-riding: proving someone else's work earns no score (the revealed params show it)
        if sp.model_cid == summary.global_model_cid:
            return Refusal(refusal.FREE_RIDING, "model is the round's global model unchanged (free-riding)")
        if any(s.model_cid == sp.model_cid for s in summary.submissions):
            return Refusal(refusal.FREE_RIDING, "model copies an earlier submission of this round (free-riding)")
        try:
            tensors = model_codec.decode_fixed(sp.model_params)
        except (model_codec.ModelFormatError, ValueError) as exc:
            return Refusal(refusal.MODEL_MISMATCH, f"model does not decode: {exc}")
        if _layout(tensors) != self._global_layout(ov, summary.global_model_cid):
            return Refusal(refusal.MODEL_MISMATCH, "model layout differs from the round's global model")
        # ... and below the circuit's quantum: what the proof commits to is the model rounded to the
        # circuit's scale, so bytes that differ by less than a quantum are the same committed model
        committed = model_codec.quantized(tensors, self.manifest.param_scale)
        if committed == self._quantized_model(ov, summary.global_model_cid):
            return Refusal(refusal.FREE_RIDING,
                           "model is the round's global model to within the circuit's quantum "
                           "(free-riding: same commitment)")
        for s in summary.submissions:
            if self._quantized_model(ov, s.model_cid) == committed:
                return Refusal(refusal.FREE_RIDING, "model copies an earlier submission of this round to within "
                               "the circuit's quantum (free-riding: same commitment)")
        summary.submissions.add(
            participant=sp.participant,
            tx_id=tid,
            claimed_correct=sp.claimed_correct,
            model_cid=sp.model_cid,
            height=height,
        )
        ov.put(round_key(current), summary)
        ov.put(score_key(current, sp.participant), _U32.pack(sp.claimed_correct))
        ov.blobs[sp.model_cid] = sp.model_params
        return None

    def _submit_private(self, ov: _Overlay, summary: ledger_pb2.RoundSummary, sp: types_pb2.SubmitProof,
                        tid: bytes, height: int) -> Refusal | None:
        """SubmitProof of a secure-aggregation task: commitment, mask key and shares; no parameters."""
        assert self.commitments is not None  # checked at genesis
        reason = masking.check_submission(sp, len(self.participant_order) - 1, self.commitments)
        if reason is not None:
            return reason
        # free-riding, seen through the commitment (the parameters are private)
        if sp.model_commitment == self._global_commitment(ov, summary.global_model_cid):
            return Refusal(refusal.FREE_RIDING,
                           "model is the round's global model unchanged (free-riding: same commitment)")
        if any(s.model_commitment == sp.model_commitment for s in summary.submissions):
            return Refusal(refusal.FREE_RIDING,
                           "model copies an earlier submission of this round (free-riding: same commitment)")
        if any(s.mask_public_key == sp.mask_public_key for s in summary.submissions):
            return Refusal(refusal.MASKING_RULE, "mask_public_key reused from another submission")
        shares_cid, shares = masking.shares_blob(sp)
        summary.submissions.add(participant=sp.participant, tx_id=tid, claimed_correct=sp.claimed_correct,
                                height=height, model_commitment=sp.model_commitment,
                                mask_public_key=sp.mask_public_key, shares_cid=shares_cid,
                                self_seed_commitment=sp.self_seed_commitment)
        ov.put(round_key(summary.round), summary)
        ov.put(score_key(summary.round, sp.participant), _U32.pack(sp.claimed_correct))
        ov.blobs[shares_cid] = shares
        return None

    def _global_commitment(self, ov: _Overlay, cid: str) -> bytes:
        """Commitment of a global model: a resubmitted global model shows in it."""
        assert self.commitments is not None
        return _of_global_model(self._global_commitments, ov, cid, self.commitments.commitment_of)

    def _secagg_tx(self, ov: _Overlay, tx: types_pb2.Transaction, tid: bytes, height: int,
                   kind: str) -> Refusal | None:
        """MaskedUpdate / MaskReveal: the masking and unmasking phases (services.ledger.masking)."""
        body = getattr(tx, kind)
        who = body.participant if kind == "masked_update" else body.holder
        if not self.secure:
            return Refusal(refusal.WRONG_PHASE, "this task does not use secure aggregation")
        if body.task_id != self.task_id:
            return Refusal(refusal.WRONG_TASK, "unknown task id")
        current = read_current_round(ov.get)
        if current > self.manifest.rounds or body.round != current:
            return Refusal(refusal.WRONG_ROUND, f"round {body.round} is not open (open round is {current})")
        if tx.sender != who:
            return Refusal(refusal.UNKNOWN_SIGNER,
                           "sender is not the participant" if kind == "masked_update" else "sender is not the holder")
        summary = read_round(ov.get, current)
        assert summary is not None and self.commitments is not None
        if kind == "masked_update":
            reason = masking.check_masked_update(summary, body, self.commitments.n_params)
            if reason is not None:
                return reason
            cid = content_id(body.masked)
            ov.blobs[cid] = body.masked
            for s in summary.submissions:
                if s.participant == body.participant:
                    s.masked, s.masked_cid = True, cid
        else:
            reason = masking.check_reveal(summary, body, self.participant_order, self.task_id, ov.get)
            if reason is not None:
                return reason
            masking.record_reveal(body, current, ov.put)
        ov.put(round_key(current), summary)
        return None

    def _global_layout(self, ov: _Overlay, cid: str) -> list[tuple[str, tuple[int, ...]]]:
        return _of_global_model(self._layouts, ov, cid, lambda data: _layout(model_codec.decode_fixed(data)))

    def _quantized_model(self, ov: _Overlay, cid: str) -> bytes:
        """A stored model (global or submitted) rounded to param_scale, cached by content id."""
        scale = self.manifest.param_scale
        return _of_global_model(self._quantized, ov, cid,
                                lambda data: model_codec.quantized(model_codec.decode_fixed(data), scale))

    # -- round close ---------------------------------------------------------------------------

    def _maybe_close_round(self, ov: _Overlay, height: int, view: int) -> None:
        current = read_current_round(ov.get)
        if current < 1 or current > self.manifest.rounds:
            return
        summary = read_round(ov.get, current)
        assert summary is not None
        if summary.phase != masking.PHASE.ROUND_PHASE_PROOFS:
            self._advance_secure(ov, summary, height, view)
            return
        submitted = {s.participant for s in summary.submissions}
        all_in = bool(self.participants) and self.participants <= submitted
        timed_out = self._expired(summary.open_height, summary.open_time_ms, height)
        if not (all_in or timed_out):
            return
        if self.secure:
            if masking.begin_masking(summary, self.manifest.min_correct, self.secagg_threshold, height):
                if self.manifest.round_deadline_ms:
                    summary.phase_time_ms = self._now_ms
                ov.put(round_key(summary.round), summary)
            else:
                self._finish_round(ov, summary, None, height, view)
            return
        self._close_round(ov, summary, height, view)

    def _expired(self, since_height: int, since_ms: int, height: int) -> bool:
        """The deadline of a round or phase that began at (since_height, since_ms) has passed: the
        task's block count AND its chain time (block timestamps, round_deadline_ms) have both
        elapsed, each only if set. Blocks alone can be hurried by anyone whose transactions make
        leaders propose faster (issue 19.5); chain time cannot: a timestamp is at most 10 s ahead
        of its voters' clocks (core.py), so no traffic and no leader shortens a round by more."""
        blocks, ms = self.manifest.round_deadline_blocks, self.manifest.round_deadline_ms
        if not blocks and not ms:
            return False
        return (not blocks or height >= since_height + blocks) and (not ms or self._now_ms >= since_ms + ms)

    def _advance_secure(self, ov: _Overlay, summary: ledger_pb2.RoundSummary, height: int, view: int) -> None:
        """Masking -> (unmasking) -> closed, by the rules in services.ledger.masking."""
        assert self.commitments is not None
        expired = self._expired(summary.phase_height, summary.phase_time_ms, height)
        rule = self.manifest.aggregation_rule
        if summary.phase == masking.PHASE.ROUND_PHASE_MASKING:
            if not masking.masking_done(summary, expired):
                return
            alive = {s.participant for s in masking.survivors(summary)}
            dropped = [p for p in summary.mask_set if p not in alive]
            if len(alive) < self.secagg_threshold:
                summary.aggregate_note = (f"only {len(alive)} member(s) sent masked updates, fewer than the "
                                          f"{self.secagg_threshold} secure aggregation needs: no aggregate")
                self._finish_round(ov, summary, None, height, view)
                return
            summary.dropped.extend(dropped)
            summary.phase = masking.PHASE.ROUND_PHASE_UNMASKING  # the self masks always remain
            summary.phase_height = height
            if self.manifest.round_deadline_ms:
                summary.phase_time_ms = self._now_ms
            ov.put(round_key(summary.round), summary)
            return
        # unmasking
        found = masking.recover(summary, self.task_id, self.participant_order, self.secagg_threshold, ov.get,
                                ov.blob)
        if found is None:
            if expired:
                summary.aggregate_note = "the masks were not all removable in time (too few reveals): no aggregate"
                self._finish_round(ov, summary, None, height, view)
            return
        model = masking.aggregate(summary, rule, self.task_id, *found, self.commitments, ov.blob)
        self._finish_round(ov, summary, model, height, view)

    def _finish_round(self, ov: _Overlay, summary: ledger_pb2.RoundSummary, model: bytes | None, height: int,
                      view: int) -> None:
        """Close a secure-aggregation round with its aggregate (None: the global model carries over)."""
        if model is not None:
            next_cid = content_id(model)
            ov.blobs[next_cid] = model
        else:
            next_cid = summary.global_model_cid
        self._seal(ov, summary, next_cid, height, view)

    def _close_round(self, ov: _Overlay, summary: ledger_pb2.RoundSummary, height: int, view: int) -> None:
        k = self.manifest.min_correct
        subs = []
        for s in summary.submissions:
            blob = ov.blob(s.model_cid)
            assert blob is not None  # accepted submissions' models are stored with them
            subs.append(aggregation.Submission(s.participant, s.claimed_correct, blob))
        agg = aggregation.aggregate(self.manifest.aggregation_rule, subs, k)
        if agg.model is not None:
            next_cid = content_id(agg.model)
            ov.blobs[next_cid] = agg.model
        else:
            next_cid = summary.global_model_cid  # nothing qualifies: the global model carries over
        passed = set(agg.included)
        for s in summary.submissions:
            s.aggregated = s.participant in passed
        self._seal(ov, summary, next_cid, height, view)

    def _seal(self, ov: _Overlay, summary: ledger_pb2.RoundSummary, next_cid: str, height: int, view: int) -> None:
        r = summary.round
        summary.phase = masking.PHASE.ROUND_PHASE_CLOSED
        summary.closed = True
        summary.close_height = height
        summary.next_global_model_cid = next_cid
        ov.put(round_key(r), summary)
        self._reschedule(ov, summary, view)
        if r >= self.manifest.rounds:
            ov.put(KEY_CURRENT_ROUND, _U64.pack(r + 1))  # finished: no round opens
        else:
            self._open_round(ov, r + 1, height, next_cid)

    def _reschedule(self, ov: _Overlay, summary: ledger_pb2.RoundSummary, view: int) -> None:
        # a score needs the submission's model in the aggregate: a dropped-out member of the mask set,
        # a round whose aggregate was voided, or a model the rule left out earns nothing (issue 18.5)
        by_participant = {s.participant: s.claimed_correct for s in summary.submissions if s.aggregated}
        scores: dict[bytes, int] = {}
        for member in self.genesis.participants:
            if member.validator and member.public_key in by_participant:
                scores[member.validator] = max(scores.get(member.validator, -1), by_participant[member.public_key])
        k = self.manifest.min_correct
        leaders, ranked_scores = schedule.rank_leaders(summary.round, self.validators, scores, k)
        old = read_schedule(ov.get)
        new = ledger_pb2.LeaderScheduleResponse(
            epoch=summary.round,
            activation_view=view + schedule.ACTIVATION_LAG,
            leaders=leaders,
            scores=ranked_scores,
        )
        if old is not None:
            new.previous_leaders.extend(old.leaders)
            new.previous_activation_view = old.activation_view
            new.previous_scores.extend(old.scores)
        ov.put(KEY_SCHEDULE, new)

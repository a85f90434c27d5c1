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
  with no state change (consensus benchmarks) when a genesis member signed them and they hold at
  most zkpot.chain.MAX_PAYLOAD_BYTES; unknown bodies, strangers' and oversized payloads are refused
  (issues 18.3, 17.4).
- Round close, after each non-genesis block's transactions (the open round closes when everyone
  submitted or its deadline passed; aggregate, leader schedule, next round): services.ledger.round_close.
  An unknown aggregation rule name in the manifest is a GenesisError.
- State keys, the records they hold and state_root (what each block's writes hash to):
  services.ledger.records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from services.ledger import masking
from services.ledger.records import (
    _U32,
    _U64,
    KEY_CURRENT_ROUND,
    KEY_SCHEDULE,
    KEY_TASK,
    ZERO_ROOT,
    Execution,
    Reader,
    _Overlay,
    read_current_round,
    read_round,
    round_key,
    score_key,
    state_root,
)
from services.ledger.round_close import RoundClose
from zkpot import aggregation, chain, model_codec, refusal
from zkpot.codec import content_id
from zkpot.genesis import Genesis
from zkpot.refusal import Refusal
from zkpot.v1 import ledger_pb2, types_pb2

T = TypeVar("T")


def aggregation_rule(min_correct: int, name: str = "") -> str:
    """The round summary's provenance label of the task's rule (zkpot.aggregation)."""
    return aggregation.rule_label(name, min_correct)


class GenesisError(ValueError):
    """The genesis task publication is inconsistent (the ledger refuses to start)."""


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


class StateMachine(RoundClose):
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
        if kind == "payload":  # no state change; only from genesis members, at most MAX_PAYLOAD_BYTES
            if tx.sender not in self.members:
                return Refusal(refusal.UNKNOWN_SIGNER, "payload from a key that is not a genesis member")
            if len(tx.payload) > chain.MAX_PAYLOAD_BYTES:
                return Refusal(refusal.TOO_LARGE, f"payload of {len(tx.payload)} bytes, over {chain.MAX_PAYLOAD_BYTES}")
            return None
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

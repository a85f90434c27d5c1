"""Checking a SubmitProof transaction against the task: what every validator's verifier runs.

Order of checks (cheap first): shape, signature, submitter, task, model content id, the proof's
commitment field, the revealed model's own commitment (recomputed: export + compile + witness with
the task's vk/srs, then swap it into the proof; equal bytes mean the proof commits to this model),
then the SNARK on public instances rebuilt from the task's test set, the claimed count and the
binding of (task, round, sender). The round is not compared with the chain's current round here
(the ledger's state machine does that); it is bound into the proof, so a replay under another
round fails the SNARK.

First cut: the model is revealed in the transaction (model_params) so validators can aggregate;
with secure aggregation the MODEL_MISMATCH check moves to the commitment opening.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from zkpot import chain, model_codec
from zkpot.crypto import PUBLIC_KEY_LEN
from zkpot.model_codec import ModelFormatError
from zkpot.v1 import types_pb2, verifier_pb2
from zkpot.zkp import circuit, model
from zkpot.zkp.task import Task

R = verifier_pb2.RejectReason

# label values for zkpot_verifier_rejections_total{reason=...}
REASON_LABELS = {
    R.REJECT_REASON_MALFORMED: "malformed",
    R.REJECT_REASON_BAD_SIGNATURE: "bad_signature",
    R.REJECT_REASON_WRONG_TASK: "wrong_task",
    R.REJECT_REASON_SUBMITTER_MISMATCH: "submitter_mismatch",
    R.REJECT_REASON_CLAIM_MISMATCH: "claim_mismatch",
    R.REJECT_REASON_COMMITMENT_MISMATCH: "commitment_mismatch",
    R.REJECT_REASON_INVALID_PROOF: "invalid_proof",
    R.REJECT_REASON_MODEL_MISMATCH: "model_mismatch",
}


@dataclass(frozen=True)
class Verdict:
    reason: int  # verifier_pb2.RejectReason; 0 (UNSPECIFIED) = accepted
    message: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.reason == R.REJECT_REASON_UNSPECIFIED


def _reject(reason: int, message: str, timings: dict[str, float] | None = None) -> Verdict:
    return Verdict(reason, message, timings or {})


def check_submission(task: Task, tx: types_pb2.Transaction, workdir: Path) -> Verdict:
    """Verdict on one SubmitProof transaction (never raises for bad input)."""
    if tx.WhichOneof("body") != "submit_proof":
        return _reject(R.REJECT_REASON_MALFORMED, "not a SubmitProof transaction")
    sp = tx.submit_proof
    if len(sp.participant) != PUBLIC_KEY_LEN:
        return _reject(R.REJECT_REASON_MALFORMED, f"participant must be a {PUBLIC_KEY_LEN}-byte key")
    if len(sp.proof) != task.proof_size:
        return _reject(R.REJECT_REASON_MALFORMED, f"proof must be {task.proof_size} bytes (this circuit's proof "
                                                  f"length), got {len(sp.proof)}")
    if len(sp.model_commitment) != task.commitment_size:
        return _reject(R.REJECT_REASON_MALFORMED, f"model_commitment must be {task.commitment_size} bytes")
    if not chain.tx_signature_ok(tx):
        return _reject(R.REJECT_REASON_BAD_SIGNATURE, "transaction signature does not verify under its sender")
    if tx.sender != sp.participant:
        return _reject(R.REJECT_REASON_SUBMITTER_MISMATCH, "sender is not the participant the proof is for")
    if sp.task_id != task.task_id:
        return _reject(R.REJECT_REASON_WRONG_TASK, f"task {sp.task_id.hex()[:16]} is not this chain's task "
                                                   f"{task.task_id.hex()[:16]}")
    if sp.claimed_correct > task.manifest.test_set_size:
        return _reject(R.REJECT_REASON_CLAIM_MISMATCH,
                       f"claimed {sp.claimed_correct} correct of a {task.manifest.test_set_size}-sample test set")
    if model_codec.model_cid(sp.model_params) != sp.model_cid:
        return _reject(R.REJECT_REASON_MODEL_MISMATCH, "model_cid is not the content id of model_params")
    try:
        net = model.decode(sp.model_params, task.hidden)
    except ModelFormatError as exc:
        return _reject(R.REJECT_REASON_MALFORMED, f"model_params: {exc}")
    if circuit.proof_commitment(sp.proof, task.n_commitments) != sp.model_commitment:
        return _reject(R.REJECT_REASON_COMMITMENT_MISMATCH, "model_commitment is not the commitment the proof carries")
    if model.max_abs_weight(net) > task.weight_bound:
        return _reject(R.REJECT_REASON_MODEL_MISMATCH, f"revealed model exceeds the task's weight bound "
                                                       f"±{task.weight_bound:g}")

    timings: dict[str, float] = {}
    work = circuit.fresh_workdir(workdir, "verify-")
    try:
        t0 = time.perf_counter()
        limbs = task.binding(sp.round, sp.participant)
        try:
            ev = circuit.evaluate(net, task.test_set, limbs, task.paths["settings"], work, task.paths["vk"],
                                  task.paths["srs"])
            recommitted = circuit.swap_commitment(sp.proof, ev.witness_path, work)
        except circuit.CircuitError as exc:
            return _reject(R.REJECT_REASON_MODEL_MISMATCH, f"revealed model does not run in the task's circuit: {exc}")
        timings["recommit_seconds"] = time.perf_counter() - t0
        if recommitted != sp.proof:
            return _reject(R.REJECT_REASON_MODEL_MISMATCH, "revealed model is not the model the proof commits to",
                           timings)
        t1 = time.perf_counter()
        ok = circuit.verify(sp.proof, task.instances(sp.round, sp.participant, sp.claimed_correct),
                            task.paths["settings"], task.paths["vk"], task.paths["srs"], work)
        timings["snark_seconds"] = time.perf_counter() - t1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if ok:
        return Verdict(R.REJECT_REASON_UNSPECIFIED, "", timings)
    if ev.correct != sp.claimed_correct:
        return _reject(R.REJECT_REASON_CLAIM_MISMATCH, f"claimed {sp.claimed_correct} correct but the committed model "
                                                       f"scores {ev.correct} on the task's test set", timings)
    return _reject(R.REJECT_REASON_INVALID_PROOF, "proof does not verify on the task's test set, the claimed count "
                                                  "and the binding of (task, round, sender)", timings)

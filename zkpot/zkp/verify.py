"""Checking a SubmitProof transaction against the task: what every validator's verifier runs.

Order of checks (cheap first): shape (one proof per test-set shard, each of the circuit's proof
length), signature, submitter, task, counts (claimed_correct == sum of the shard counts), model
content id, every shard proof's commitment equal to model_commitment, the revealed model's own
commitment (recomputed once per submission from its parameters: zkpot.zkp.commitment, a KZG
commitment over the SRS's Lagrange basis, ~7 ms; equal bytes mean the proofs commit to this
model — the circuit itself runs only to explain a rejection), then
the SNARK of every shard on public instances rebuilt from that shard's slice of the task's test
set, its count and the binding of (task, round, sender). The round is not compared with the chain's current round here
(the ledger's state machine does that); it is bound into the proof, so a replay under another
round fails the SNARK.

Without secure aggregation the model is revealed in the transaction (model_params) so validators
can aggregate, and MODEL_MISMATCH binds it to the proofs. With secure aggregation
(TaskManifest.secure_aggregation) no parameters are sent: the proofs' commitment is what the
ledger later checks the unmasked aggregate against (homomorphically, zkpot.zkp.commitment).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from zkpot import chain, model_codec, refusal
from zkpot.crypto import PUBLIC_KEY_LEN
from zkpot.model_codec import ModelFormatError
from zkpot.v1 import types_pb2
from zkpot.zkp import circuit, commitment, model
from zkpot.zkp.task import Task


@dataclass(frozen=True)
class Verdict:
    reason: int  # zkpot.v1.Reason: REASON_ACCEPTED, or the rule it broke (zkpot.refusal)
    detail: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.reason == refusal.ACCEPTED


def _reject(reason: int, detail: str, timings: dict[str, float] | None = None) -> Verdict:
    return Verdict(reason, detail, timings or {})


def shard_proofs(task: Task, sp: types_pb2.SubmitProof) -> list[tuple[bytes, int]] | Verdict:
    """(proof, count) per shard in shard order, or the Verdict that refuses the submission's shape."""
    n = task.n_shards
    if sp.shards:
        if sp.proof:
            return _reject(refusal.MALFORMED, "carry either proof (single-shard tasks) or shards, not both")
        items = [(s.proof, int(s.correct)) for s in sp.shards]
    elif n == 1:
        items = [(sp.proof, int(sp.claimed_correct))]
    else:
        return _reject(refusal.SHARD_MISMATCH, f"this task is proven in {n} shards: shards must hold one "
                                                       "proof per shard")
    if len(items) != n:
        return _reject(refusal.SHARD_MISMATCH, f"expected {n} shard proofs (one per shard, in order), "
                                                       f"got {len(items)}")
    for i, (proof, _) in enumerate(items):
        if len(proof) != task.proof_size:
            return _reject(refusal.MALFORMED, f"shard {i}: proof must be {task.proof_size} bytes (this "
                                                      f"circuit's proof length), got {len(proof)}")
    if len({proof for proof, _ in items}) != n:
        return _reject(refusal.SHARD_MISMATCH, "the same shard proof appears twice")
    return items


def check_submission(task: Task, tx: types_pb2.Transaction, workdir: Path) -> Verdict:
    """Verdict on one SubmitProof transaction (never raises for bad input)."""
    if tx.WhichOneof("body") != "submit_proof":
        return _reject(refusal.MALFORMED, "not a SubmitProof transaction")
    sp = tx.submit_proof
    if len(sp.participant) != PUBLIC_KEY_LEN:
        return _reject(refusal.MALFORMED, f"participant must be a {PUBLIC_KEY_LEN}-byte key")
    shards = shard_proofs(task, sp)
    if isinstance(shards, Verdict):
        return shards
    if len(sp.model_commitment) != task.commitment_size:
        return _reject(refusal.MALFORMED, f"model_commitment must be {task.commitment_size} bytes")
    if not chain.tx_signature_ok(tx):
        return _reject(refusal.BAD_SIGNATURE, "transaction signature does not verify under its sender")
    if tx.sender != sp.participant:
        return _reject(refusal.SUBMITTER_MISMATCH, "sender is not the participant the proof is for")
    if sp.task_id != task.task_id:
        return _reject(refusal.WRONG_TASK, f"task {sp.task_id.hex()[:16]} is not this chain's task "
                                                   f"{task.task_id.hex()[:16]}")
    if sp.claimed_correct > task.manifest.test_set_size:
        return _reject(refusal.CLAIM_MISMATCH,
                       f"claimed {sp.claimed_correct} correct of a {task.manifest.test_set_size}-sample test set")
    for i, (_, count) in enumerate(shards):
        if count > task.shard_samples(i):
            return _reject(refusal.CLAIM_MISMATCH, f"shard {i} claims {count} correct of {task.shard_samples(i)}")
    if sum(count for _, count in shards) != sp.claimed_correct:
        return _reject(refusal.CLAIM_MISMATCH, f"claimed_correct {sp.claimed_correct} is not the sum of "
                                                       f"the shard counts {[c for _, c in shards]}")
    secure = task.manifest.secure_aggregation
    if secure:  # the model stays with its owner: the proofs' commitment is all validators get
        if sp.model_params or sp.model_cid:
            return _reject(refusal.MALFORMED, "this task uses secure aggregation: model_params and "
                                                      "model_cid must be empty (the model is never revealed)")
        net = None
    else:
        if model_codec.model_cid(sp.model_params) != sp.model_cid:
            return _reject(refusal.MODEL_MISMATCH, "model_cid is not the content id of model_params")
        try:
            net = model.decode(sp.model_params, task.arch)
        except ModelFormatError as exc:
            return _reject(refusal.MALFORMED, f"model_params: {exc}")
    for i, (proof, _) in enumerate(shards):
        if circuit.proof_commitment(proof, task.n_commitments) != sp.model_commitment:
            return _reject(refusal.COMMITMENT_MISMATCH, f"shard {i}: model_commitment is not the commitment "
                                                                "the proof carries")
    timings: dict[str, float] = {}
    if net is not None:  # a revealed model: within bounds, and the one the proofs commit to
        if model.max_abs_weight(net) > task.weight_bound:
            return _reject(refusal.MODEL_MISMATCH, f"revealed model exceeds the task's weight bound "
                                                           f"±{task.weight_bound:g}")
        t0 = time.perf_counter()
        try:  # every shard proof carries model_commitment (checked above): is it this model's?
            same = commitment.recommit_matches(task, net, sp.model_commitment)
        except commitment.CommitmentError as exc:
            return _reject(refusal.MODEL_MISMATCH, f"revealed model does not fit the task's circuit: {exc}")
        timings["recommit_seconds"] = time.perf_counter() - t0
        if not same:
            return _reject(refusal.MODEL_MISMATCH, "revealed model is not the model the proof commits to",
                           timings)
    # secure aggregation keeps only the commitment, which the aggregate is later checked against
    work = circuit.fresh_workdir(workdir, "verify-")
    limbs = task.binding(sp.round, sp.participant)
    try:
        t1 = time.perf_counter()
        failed = None
        for i, (proof, count) in enumerate(shards):
            if not circuit.verify(proof, task.instances(sp.round, sp.participant, count, i), task.paths["settings"],
                                  task.paths["vk"], task.paths["srs"], work):
                failed = i
                break
        timings["snark_seconds"] = time.perf_counter() - t1
        if failed is None:
            return Verdict(refusal.ACCEPTED, "", timings)
        # diagnose (rejections of revealed models only): does the model score the claimed count there?
        proven = _shard_count(task, net, failed, limbs, work) if net is not None else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    where = f"shard {failed} of the task's test set" if task.n_shards > 1 else "the task's test set"
    claimed = shards[failed][1]
    if proven is not None and proven != claimed:
        return _reject(refusal.CLAIM_MISMATCH, f"claimed {claimed} correct but the committed model scores "
                                                       f"{proven} on {where}", timings)
    return _reject(refusal.INVALID_PROOF, f"proof does not verify on {where}, the "
                                                  "claimed count and the binding of (task, round, sender)", timings)


def _shard_count(task: Task, net: model.Net, index: int, limbs: list[int], work: Path) -> int | None:
    try:
        return circuit.evaluate(net, task.shard(index), limbs, task.norm_bound, task.paths["settings"],
                                work / f"shard-{index}", mask=task.shard_mask(index)).correct
    except circuit.CircuitError:
        return None

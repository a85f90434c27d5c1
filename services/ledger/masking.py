"""Secure aggregation in the ledger's state machine: the masking and unmasking phases of a round.

A task with `secure_aggregation` never sees a participant's parameters (docs/privacy.md). Its
rounds run three phases, each closed by a rule every replica evaluates from committed data:

  PROOFS     SubmitProof without parameters; the proof's KZG commitment, an ephemeral X25519 mask
             key, a commitment to a self-mask seed b_i, and Shamir shares of the mask secret and
             of b_i (one of each per other genesis participant) are recorded.
             Closes as a plain round does (all genesis participants in, or the round deadline).
             The mask set U = the submissions that pass the task's threshold, sorted by key. With
             fewer than t members the round closes without an aggregate: a sum of fewer than t
             models would expose too much of each.
  MASKING    MaskedUpdate from members of U: y_i = w_i x_i + pairwise masks + PRG(b_i) (mod 2^32).
             Closes when every member is in, or `round_deadline_blocks` after the phase began; the
             members in are the survivors S, the rest D dropped. With fewer than t survivors: no
             aggregate.
  UNMASKING  MaskReveal: each survivor reveals its own b_i (checked against its commitment); every
             participant reveals the keys opening its shares of D's mask secrets and of S's self
             seeds (the fallback for a survivor that vanishes before revealing b_i). Done when every
             b_i (i in S) and every mask secret (j in D) is known; deadline as above.

Why self masks: a MaskedUpdate that lands in a block after the masking close is refused, but its
bytes are on chain (and were in mempools). Its sender counts as dropped, so its mask secret is
recovered — which alone would unmask it. PRG(b_j) still hides it: a dropped member's b_j is never
revealed (self keys are refused for anyone but survivors), and a survivor's e_i never is (mask keys
are refused for anyone but dropped members).

The sum of the survivors' vectors is then checked against the sum of their proofs' commitments,
weighted the same way (KZG commitments are additively homomorphic): a member that masked a model
other than the one it proved makes the check fail, and the round closes without an aggregate
(the global model carries over; summary.aggregate_note says why). Otherwise the next global
model is the weighted mean, at the circuit's scale, of exactly the models that were proven.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from zkpot import aggregation, refusal, secagg
from zkpot.codec import content_id, u64_key
from zkpot.refusal import Refusal
from zkpot.v1 import ledger_pb2, types_pb2

PHASE = ledger_pb2.RoundPhase
REVEAL_PREFIX = b"reveal/"            # + round + dealer + holder: key opening a mask-secret share
SELF_REVEAL_PREFIX = b"reveal-self/"  # + round + dealer + holder: key opening a self-seed share
SELF_SEED_PREFIX = b"self-seed/"      # + round + member: b_i as revealed by the member itself


class Commitments(Protocol):
    """The task's commitment scheme as the state machine needs it (zkpot.zkp.commitment, bound to a task)."""

    @property
    def n_params(self) -> int: ...
    @property
    def commitment_size(self) -> int: ...
    def commitment_of(self, model: bytes) -> bytes: ...
    def matches(self, commitments: Sequence[bytes], weights: Sequence[int], summed: np.ndarray) -> bool: ...
    def to_model(self, summed: np.ndarray, divisor: int) -> bytes: ...


def reveal_key(round_: int, dealer: bytes, holder: bytes) -> bytes:
    return REVEAL_PREFIX + u64_key(round_) + dealer + holder


def self_reveal_key(round_: int, dealer: bytes, holder: bytes) -> bytes:
    return SELF_REVEAL_PREFIX + u64_key(round_) + dealer + holder


def self_seed_key(round_: int, member: bytes) -> bytes:
    return SELF_SEED_PREFIX + u64_key(round_) + member


def threshold(manifest: types_pb2.TaskManifest, n_participants: int) -> int:
    return int(manifest.secagg_threshold) or secagg.default_threshold(n_participants)


# -- transaction checks (each returns why it refuses the transaction, None when it accepts) ------


def check_submission(sp: types_pb2.SubmitProof, n_holders: int, commitments: Commitments) -> Refusal | None:
    """The secure-aggregation fields of a SubmitProof (the proof itself was checked by the verifier)."""
    if sp.model_params or sp.model_cid:
        return Refusal(refusal.MASKING_RULE,
                       "secure aggregation: model_params must be empty (models are never revealed)")
    if len(sp.model_commitment) != commitments.commitment_size:
        return Refusal(refusal.MASKING_RULE, f"model_commitment must be {commitments.commitment_size} bytes")
    try:
        secagg.check_mask_public(sp.mask_public_key)
    except ValueError as exc:
        return Refusal(refusal.MASKING_RULE, f"mask_public_key: {exc}")
    if len(sp.self_seed_commitment) != 32:
        return Refusal(refusal.MASKING_RULE, "self_seed_commitment must be 32 bytes")
    for name, shares in (("mask_shares", sp.mask_shares), ("self_shares", sp.self_shares)):
        if len(shares) != n_holders:
            return Refusal(refusal.MASKING_RULE,
                           f"{name} must hold one share per other genesis participant ({n_holders}), got {len(shares)}")
        if any(len(c) != secagg.CIPHERTEXT_LEN for c in shares):
            return Refusal(refusal.MASKING_RULE, f"every one of {name} must be {secagg.CIPHERTEXT_LEN} bytes")
    return None


def check_masked_update(summary: ledger_pb2.RoundSummary, mu: types_pb2.MaskedUpdate, n_params: int) -> Refusal | None:
    if summary.phase != PHASE.ROUND_PHASE_MASKING:
        return Refusal(refusal.WRONG_PHASE,
                       f"round {summary.round} is not in its masking phase ({PHASE.Name(summary.phase)})")
    if mu.participant not in summary.mask_set:
        return Refusal(refusal.MASKING_RULE, "participant is not in the round's mask set")
    sub = next(s for s in summary.submissions if s.participant == mu.participant)
    if sub.masked:
        return Refusal(refusal.DUPLICATE, "duplicate masked update")
    if len(mu.masked) != 4 * n_params:
        return Refusal(refusal.MASKING_RULE,
                       f"masked must be {4 * n_params} bytes (one uint32 per committed parameter), "
                       f"got {len(mu.masked)}")
    return None


def check_reveal(summary: ledger_pb2.RoundSummary, mr: types_pb2.MaskReveal, participants: Sequence[bytes],
                 task_id: bytes, revealed) -> Refusal | None:  # noqa: ANN001 - revealed(key) -> bytes | None
    """A MaskReveal: only mask keys of dropped members, only self keys and seeds of survivors."""
    if summary.phase != PHASE.ROUND_PHASE_UNMASKING:
        return Refusal(refusal.WRONG_PHASE,
                       f"round {summary.round} is not in its unmasking phase ({PHASE.Name(summary.phase)})")
    if mr.holder not in participants:
        return Refusal(refusal.UNKNOWN_SIGNER, "holder is not a genesis participant")
    if not (mr.keys or mr.self_keys or mr.self_seed):
        return Refusal(refusal.MASKING_RULE, "nothing revealed")
    counted = {s.participant for s in survivors(summary)}
    r = summary.round
    for field, allowed, key_of, not_allowed in (
        ("keys", set(summary.dropped), reveal_key,
         "a mask-secret key is only revealed for a dropped member (this one's update counts: it would be unmasked)"),
        ("self_keys", counted, self_reveal_key,
         "a self-seed key is only revealed for a member whose update counts (a dropped one's would unmask it)"),
    ):
        dealers: set[bytes] = set()
        for k in getattr(mr, field):
            if k.dealer not in allowed:
                return Refusal(refusal.MASKING_RULE, not_allowed)
            if k.dealer == mr.holder or k.dealer in dealers:
                return Refusal(refusal.MASKING_RULE, f"{field}: a revealed key names its own holder or a dealer twice")
            if len(k.share_key) != secagg.SHARE_KEY_LEN:
                return Refusal(refusal.MASKING_RULE, f"{field}: share_key must be {secagg.SHARE_KEY_LEN} bytes")
            if revealed(key_of(r, k.dealer, mr.holder)) is not None:
                return Refusal(refusal.MASKING_RULE, f"{field}: share key already revealed by this holder")
            dealers.add(k.dealer)
    if mr.self_seed:
        if mr.holder not in counted:
            return Refusal(refusal.MASKING_RULE,
                           "self_seed: only a member whose masked update counts reveals its self seed")
        own = next(s for s in summary.submissions if s.participant == mr.holder)
        try:
            matches = secagg.self_seed_commitment(mr.self_seed, task_id, r, mr.holder) == own.self_seed_commitment
        except ValueError as exc:
            return Refusal(refusal.MASKING_RULE, f"self_seed: {exc}")
        if not matches:
            return Refusal(refusal.MASKING_RULE, "self_seed does not match the member's self_seed_commitment")
        if revealed(self_seed_key(r, mr.holder)) is not None:
            return Refusal(refusal.MASKING_RULE, "self_seed already revealed")
    return None


def record_reveal(mr: types_pb2.MaskReveal, round_: int, put) -> None:  # noqa: ANN001 - put(key, value)
    for k in mr.keys:
        put(reveal_key(round_, k.dealer, mr.holder), k.share_key)
    for k in mr.self_keys:
        put(self_reveal_key(round_, k.dealer, mr.holder), k.share_key)
    if mr.self_seed:
        put(self_seed_key(round_, mr.holder), mr.self_seed)


# -- phase transitions ------------------------------------------------------------------------------


def begin_masking(summary: ledger_pb2.RoundSummary, min_correct: int, t: int, height: int) -> bool:
    """Close the proof phase: fix the mask set. False: too few members, no aggregate this round."""
    members = sorted(s.participant for s in summary.submissions if s.claimed_correct >= min_correct)
    summary.mask_set.extend(members)
    if len(members) < max(t, 1):
        summary.aggregate_note = (f"{len(members)} submission(s) passed the threshold, fewer than the {t} secure "
                                  "aggregation needs: no aggregate")
        return False
    summary.phase = PHASE.ROUND_PHASE_MASKING
    summary.phase_height = height
    return True


def masking_done(summary: ledger_pb2.RoundSummary, expired: bool) -> bool:
    """Every member is in, or the phase's deadline (`expired`, StateMachine._expired) has passed."""
    everyone = all(s.masked for s in summary.submissions if s.participant in summary.mask_set)
    return everyone or expired


def survivors(summary: ledger_pb2.RoundSummary) -> list[ledger_pb2.Submission]:
    members = set(summary.mask_set)
    return sorted((s for s in summary.submissions if s.participant in members and s.masked),
                  key=lambda s: s.participant)


def recover(summary: ledger_pb2.RoundSummary, task_id: bytes, participants: Sequence[bytes], t: int,
            get, blob) -> tuple[dict[bytes, bytes], dict[bytes, bytes]] | None:  # noqa: ANN001 - state get; cid -> bytes
    """(mask secrets of the dropped, self seeds of the survivors) from what was revealed; None while
    one of them is still missing."""
    r = summary.round
    subs = {s.participant: s for s in summary.submissions}
    n = secagg.CIPHERTEXT_LEN

    def boxes(dealer: bytes, second: bool) -> tuple[list[bytes], list[bytes]]:
        holders = secagg.holders_for(participants, dealer)
        raw = blob(subs[dealer].shares_cid)
        assert raw is not None  # stored with the submission
        start = len(holders) * n if second else 0
        return holders, [raw[start + i * n:start + (i + 1) * n] for i in range(len(holders))]

    secrets: dict[bytes, bytes] = {}
    for dealer in summary.dropped:
        holders, cts = boxes(dealer, second=False)
        keys = {h: k for h in holders if (k := get(reveal_key(r, dealer, h))) is not None}
        secret = secagg.reconstruct_mask_secret(cts, keys, holders, t, task_id, r, dealer,
                                                subs[dealer].mask_public_key) if len(keys) >= t else None
        if secret is None:
            return None
        secrets[dealer] = secret
    seeds: dict[bytes, bytes] = {}
    for sub in survivors(summary):
        seed = get(self_seed_key(r, sub.participant))
        if seed is None:
            holders, cts = boxes(sub.participant, second=True)
            keys = {h: k for h in holders if (k := get(self_reveal_key(r, sub.participant, h))) is not None}
            seed = secagg.reconstruct_self_seed(cts, keys, holders, t, task_id, r, sub.participant,
                                                sub.self_seed_commitment) if len(keys) >= t else None
        if seed is None:
            return None
        seeds[sub.participant] = seed
    return secrets, seeds


def aggregate(summary: ledger_pb2.RoundSummary, rule: str, task_id: bytes, dropped_secrets: dict[bytes, bytes],
              self_seeds: dict[bytes, bytes], commitments: Commitments, blob) -> bytes | None:  # noqa: ANN001
    """Unmask the survivors' sum, check it against their commitments; the next global model or None
    (summary.aggregate_note then says why). Marks the aggregated submissions."""
    alive = survivors(summary)
    if not alive:
        summary.aggregate_note = "no member of the mask set sent a masked update: no aggregate"
        return None
    masked = {}
    for s in alive:
        raw = blob(s.masked_cid)
        assert raw is not None  # stored with the MaskedUpdate
        masked[s.participant] = secagg.decode_masked(raw, commitments.n_params)
    publics = {s.participant: s.mask_public_key for s in summary.submissions if s.participant in summary.mask_set}
    summed = secagg.unmask_sum(masked, dropped_secrets, publics, task_id, summary.round, self_seeds)
    weights = [aggregation.sum_weight(rule, s.claimed_correct) for s in alive]
    if not commitments.matches([s.model_commitment for s in alive], weights, summed):
        summary.aggregate_note = ("the unmasked sum does not open the sum of the members' commitments (a member "
                                  "masked a model other than the one it proved): no aggregate")
        return None
    try:
        model = commitments.to_model(summed, sum(weights))
    except ValueError as exc:  # committed values far outside the task's range: never crash execution
        summary.aggregate_note = f"the aggregate does not fit the model codec ({exc}): no aggregate"
        return None
    for s in alive:
        s.aggregated = True
    dropped = f" ({len(summary.dropped)} dropped, masks recovered)" if summary.dropped else ""
    summary.aggregate_note = (f"secure aggregate of {len(alive)} member(s){dropped}, checked against the weighted "
                              "sum of their commitments")
    return model


def shares_blob(sp: types_pb2.SubmitProof) -> tuple[str, bytes]:
    raw = b"".join(sp.mask_shares) + b"".join(sp.self_shares)
    return content_id(raw), raw

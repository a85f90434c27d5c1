"""A participant's side of secure aggregation (docs/privacy.md; the chain's side: services.ledger.masking).

Per round: before submitting its proof, the participant draws an ephemeral mask key and deals
Shamir shares of its secret to every other genesis participant (SubmitProof.mask_public_key,
mask_shares). When the ledger fixes the mask set, a member submits its committed parameter vector,
weighted by the task's sum rule and masked pairwise (MaskedUpdate). If members drop out, every
participant reveals the keys that open its shares of their mask secrets (MaskReveal). The model
itself never leaves the participant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from zkpot import aggregation, chain, secagg
from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2, types_pb2

PHASE = ledger_pb2.RoundPhase


@dataclass
class MaskingRound:
    """What a participant keeps between the phases of one round (never sent)."""

    round: int
    keys: secagg.MaskKeys
    self_seed: bytes
    vector: np.ndarray       # the committed parameters (zkpot.zkp.commitment.param_vector), unweighted
    claimed_correct: int


def deal(key: KeyPair, genesis: Genesis, sp: types_pb2.SubmitProof) -> tuple[secagg.MaskKeys, bytes]:
    """Fill a SubmitProof's secure-aggregation fields: a fresh mask key, a self-mask seed, and their
    encrypted shares. Returns (mask keys, self seed): the participant keeps them for the round."""
    manifest = genesis.manifest
    participants = [m.public_key for m in genesis.participants]
    t = int(manifest.secagg_threshold) or secagg.default_threshold(len(participants))
    keys = secagg.MaskKeys.generate()
    self_seed = os.urandom(secagg.SELF_SEED_LEN)
    holders = secagg.holders_for(participants, key.public)
    tid, r = genesis.task_id, sp.round
    sp.mask_public_key = keys.public
    sp.self_seed_commitment = secagg.self_seed_commitment(self_seed, tid, r, key.public)
    del sp.mask_shares[:], sp.self_shares[:]
    sp.mask_shares.extend(secagg.encrypt_shares(keys.secret, holders, t, tid, r, key.public))
    sp.self_shares.extend(secagg.encrypt_shares(keys.secret, holders, t, tid, r, key.public, purpose="self",
                                                secret=self_seed))
    sp.model_params, sp.model_cid = b"", ""
    return keys, self_seed


def masked_update_tx(key: KeyPair, genesis: Genesis, state: MaskingRound, summary: ledger_pb2.RoundSummary,
                     cheat: bool = False) -> types_pb2.Transaction:
    """The MaskedUpdate of a member of the round's mask set. cheat (experiments): mask a sign-flipped
    model instead of the proven one; the aggregate's commitment check must catch it."""
    members = set(summary.mask_set)
    peers = {s.participant: s.mask_public_key for s in summary.submissions
             if s.participant in members and s.participant != key.public}
    weight = aggregation.sum_weight(genesis.manifest.aggregation_rule, state.claimed_correct)
    x = state.vector.astype(np.int64) * weight
    if cheat:
        x = -x
    y = secagg.mask_update(x, key.public, state.keys.secret, peers, genesis.task_id, state.round,
                           self_seed=state.self_seed)
    tx = types_pb2.Transaction(masked_update=types_pb2.MaskedUpdate(
        task_id=genesis.task_id, round=state.round, participant=key.public, masked=secagg.encode_masked(y)))
    return chain.sign_tx(key, tx)


def reveal_tx(key: KeyPair, genesis: Genesis, summary: ledger_pb2.RoundSummary,
              state: MaskingRound | None) -> types_pb2.Transaction | None:
    """This participant's MaskReveal (None: nothing to reveal): its own self seed if its update counts,
    its share keys of the dropped members' mask secrets and of the counted members' self seeds."""
    publics = {s.participant: s.mask_public_key for s in summary.submissions}
    counted = [s.participant for s in summary.submissions if s.participant in set(summary.mask_set) and s.masked]
    tid, r = genesis.task_id, summary.round

    def share_keys(dealers: list[bytes], purpose: secagg.Purpose) -> list[types_pb2.RevealedShareKey]:
        return [types_pb2.RevealedShareKey(dealer=d, share_key=secagg.holder_share_key(key, publics[d], tid, r, d,
                                                                                      purpose))
                for d in dealers if d != key.public]

    reveal = types_pb2.MaskReveal(task_id=tid, round=r, holder=key.public,
                                  keys=share_keys(list(summary.dropped), "mask"),
                                  self_keys=share_keys(counted, "self"))
    if state is not None and key.public in counted:
        reveal.self_seed = state.self_seed
    if not (reveal.keys or reveal.self_keys or reveal.self_seed):
        return None
    return chain.sign_tx(key, types_pb2.Transaction(mask_reveal=reveal))

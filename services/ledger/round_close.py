"""The round lifecycle of the ledger's state machine: when the open round closes, the secure-
aggregation phases it passes through, its aggregate and seal, and the next leader schedule.
StateMachine (services.ledger.state) inherits RoundClose; opening a round stays with the machine
(genesis opens round 1 too).

Round close, evaluated once after each non-genesis block's transactions: the open round r closes
when every genesis participant (at least one) has an accepted submission in r, or when its
deadline has passed: height >= open_height + manifest.round_deadline_blocks AND the block's
timestamp >= open_time_ms + manifest.round_deadline_ms, each only when set (both 0: no deadline;
RoundClose._expired says why chain time is there). On close the aggregate is
zkpot.aggregation.aggregate(manifest.aggregation_rule, ...) over the models of submissions with
claimed_correct >= manifest.min_correct (default rule: equal-weight integer FedAvg in
participant-key order); if none qualifies the global model carries over unchanged. The aggregate
goes to blobs; the summary gets next_global_model_cid, close_height, aggregation_rule
"<rule>(min_correct=K)" and each submission's `aggregated`. An unknown rule name in the manifest
is a GenesisError. Then the leader schedule: a validator's score is the claimed_correct of the
participant whose Member.validator it is (the best one if several), counting only submissions
whose model is in the aggregate (`aggregated`: not dropped out, not voided, not left out), ranked
by zkpot.schedule.rank_leaders(r, validators in genesis order, scores, min_correct);
activation_view = closing block's view + zkpot.schedule.ACTIVATION_LAG; the previous leaders, their
scores and activation view are kept. Round r+1 then opens at the same height from the aggregate, unless
r == manifest.rounds: the task is finished (current round r+1, no round opens).
Secure-aggregation tasks close through services.ledger.masking's phases (PROOFS -> MASKING ->
UNMASKING -> closed) instead; their aggregate is checked against the members' commitments.
"""

from __future__ import annotations

from collections.abc import Callable

from services.ledger import masking
from services.ledger.records import (
    _U64,
    KEY_CURRENT_ROUND,
    KEY_SCHEDULE,
    _Overlay,
    read_current_round,
    read_round,
    read_schedule,
    round_key,
)
from zkpot import aggregation, schedule
from zkpot.codec import content_id
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2, types_pb2


class RoundClose:
    """Round close for StateMachine, which sets these attributes (declared here for readers and type
    checkers; a mixin, so the rules below read exactly as the machine's own methods)."""

    genesis: Genesis
    manifest: types_pb2.TaskManifest
    task_id: bytes
    participants: frozenset[bytes]
    participant_order: tuple[bytes, ...]
    validators: tuple[bytes, ...]
    commitments: masking.Commitments | None
    secure: bool
    secagg_threshold: int
    _now_ms: int
    _open_round: Callable[[_Overlay, int, int, str], None]

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

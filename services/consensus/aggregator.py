"""Collects votes into quorum certificates and timeouts into timeout certificates.

Callers verify signatures first; the aggregators only count, and never count a second message
from the same signer in the same view (not even for another block: that is equivocation).
"""

from __future__ import annotations

from zkpot.v1 import consensus_pb2, types_pb2


class VoteAggregator:
    def __init__(self, validators: frozenset[bytes], quorum: int) -> None:
        self.validators = validators
        self.quorum = quorum
        self._signers: dict[int, set[bytes]] = {}  # view -> signers already counted
        self._votes: dict[tuple[int, bytes, int], list[types_pb2.Signature]] = {}
        self._done: set[tuple[int, bytes, int]] = set()

    def add(self, vote: consensus_pb2.Vote) -> types_pb2.QuorumCert | None:
        """Count a (signature-checked) vote; return the QC the first time a quorum is reached."""
        signer = vote.signature.signer
        if signer not in self.validators:
            raise ValueError("vote by unknown signer")
        seen = self._signers.setdefault(vote.view, set())
        if signer in seen:
            return None
        seen.add(signer)
        key = (vote.view, vote.block_hash, vote.height)
        sigs = self._votes.setdefault(key, [])
        sigs.append(vote.signature)
        if len(sigs) >= self.quorum and key not in self._done:
            self._done.add(key)
            return types_pb2.QuorumCert(block_hash=vote.block_hash, view=vote.view, height=vote.height, votes=sigs)
        return None

    def has_voted(self, view: int, signer: bytes) -> bool:
        """Whether a vote by `signer` in `view` was counted already (a second one is a replay or equivocation)."""
        return signer in self._signers.get(view, ())

    def votes_for(self, view: int, block_hash: bytes, height: int) -> int:
        return len(self._votes.get((view, block_hash, height), ()))

    def prune(self, below_view: int) -> None:
        self._signers = {v: s for v, s in self._signers.items() if v >= below_view}
        self._votes = {k: s for k, s in self._votes.items() if k[0] >= below_view}
        self._done = {k for k in self._done if k[0] >= below_view}


class TimeoutAggregator:
    def __init__(self, validators: frozenset[bytes], quorum: int) -> None:
        self.validators = validators
        self.quorum = quorum
        self._timeouts: dict[int, dict[bytes, consensus_pb2.Timeout]] = {}
        self._done: set[int] = set()

    def add(self, timeout: consensus_pb2.Timeout) -> tuple[int, consensus_pb2.TimeoutCert | None]:
        """Count a (checked) timeout; return (distinct signers for its view, TC once at quorum)."""
        signer = timeout.signature.signer
        if signer not in self.validators:
            raise ValueError("timeout by unknown signer")
        per_view = self._timeouts.setdefault(timeout.view, {})
        if signer not in per_view:
            if timeout.HasField("last_tc"):  # a TC never nests TCs: keep certificates small
                stripped = consensus_pb2.Timeout()
                stripped.CopyFrom(timeout)
                stripped.ClearField("last_tc")
                timeout = stripped
            per_view[signer] = timeout
        if len(per_view) >= self.quorum and timeout.view not in self._done:
            self._done.add(timeout.view)
            return len(per_view), consensus_pb2.TimeoutCert(view=timeout.view, timeouts=list(per_view.values()))
        return len(per_view), None

    def prune(self, below_view: int) -> None:
        self._timeouts = {v: t for v, t in self._timeouts.items() if v >= below_view}
        self._done = {v for v in self._done if v >= below_view}


def tc_high_qc_view(tc: consensus_pb2.TimeoutCert) -> int:
    """The highest QC view named by the timeouts of a TC."""
    return max((t.high_qc.view for t in tc.timeouts if t.HasField("high_qc")), default=0)

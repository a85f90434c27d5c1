"""Aggregation rules: the next global model from a round's committed, verified submissions.

Every validator recomputes the aggregate, so each rule is a pure function of (submissions, task
threshold) over int32 fixed-point models (zkpot.model_codec) with integer arithmetic only: the
same bytes on every machine, whatever order the submissions arrive in (inputs are sorted by
participant key first). Floats never appear.

Rules (the task manifest names one in `aggregation_rule`; empty means fedavg-threshold):
- fedavg-threshold: equal-weight mean of the submissions whose proven count >= min_correct.
  The default: a poisoned model proves a low count and is simply left out.
- fedavg-accuracy: the same submissions, each weighted by its proven count (a model that proves
  more correct answers pulls harder; a barely-passing one counts little).
- median: coordinate-wise median of the passing submissions (robust to a minority of outliers
  that pass the threshold; for an even count the floor of the mean of the two middle values).
- trimmed-mean: coordinate-wise mean after dropping the floor(n/5) largest and smallest values
  of each coordinate (Yin et al. 2018); with fewer than 5 submissions it is the plain mean.

Where nothing passes the threshold, the global model carries over unchanged (model is None).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from zkpot import model_codec

DEFAULT_RULE = "fedavg-threshold"
RULES = ("fedavg-threshold", "fedavg-accuracy", "median", "trimmed-mean")
# rules that need only a weighted sum of the models: the ones secure aggregation can compute
SUM_RULES = ("fedavg-threshold", "fedavg-accuracy")
TRIM_DIVISOR = 5  # trimmed-mean drops floor(n / 5) values at each end of every coordinate


class AggregationError(ValueError):
    pass


@dataclass(frozen=True)
class Submission:
    participant: bytes
    claimed_correct: int
    model: bytes  # zkpot.model_codec bytes


@dataclass(frozen=True)
class Aggregate:
    model: bytes | None               # None: nothing qualified; the global model carries over
    included: tuple[bytes, ...]       # participants whose models were aggregated, in key order
    rule: str                         # provenance label, e.g. "fedavg-threshold(min_correct=4)"


def rule_name(name: str) -> str:
    """The canonical rule name ('' -> default); AggregationError for an unknown rule."""
    name = name or DEFAULT_RULE
    if name not in RULES:
        raise AggregationError(f"unknown aggregation rule {name!r} (known: {', '.join(RULES)})")
    return name


def rule_label(name: str, min_correct: int) -> str:
    """What the round summary records as the rule (provenance)."""
    return f"{rule_name(name)}(min_correct={min_correct})"


def passing(submissions: Iterable[Submission], min_correct: int) -> list[Submission]:
    """Submissions that pass the threshold, in participant-key order (the deterministic order)."""
    return sorted((s for s in submissions if s.claimed_correct >= min_correct), key=lambda s: s.participant)


def sum_weight(name: str, claimed_correct: int) -> int:
    """A sum rule's integer weight of one passing submission (its models are sum(w_i x_i) / sum(w_i)).
    Secure aggregation: each member pre-scales its vector by this public weight before masking."""
    rule = rule_name(name)
    if rule not in SUM_RULES:
        raise AggregationError(f"rule {rule!r} is not a weighted sum (secure aggregation needs one of {SUM_RULES})")
    return 1 if rule == "fedavg-threshold" else max(1, claimed_correct)


def aggregate(name: str, submissions: Iterable[Submission], min_correct: int) -> Aggregate:
    rule = rule_name(name)
    chosen = passing(submissions, min_correct)
    if len({s.participant for s in chosen}) != len(chosen):
        raise AggregationError("two submissions from the same participant")
    label = rule_label(rule, min_correct)
    if not chosen:
        return Aggregate(None, (), label)
    models = [s.model for s in chosen]
    if rule == "fedavg-threshold":
        out = model_codec.fedavg_fixed(models)
    elif rule == "fedavg-accuracy":
        # a passing count of 0 (min_correct 0) still gets weight 1: every included model counts
        out = model_codec.fedavg_fixed(models, [sum_weight(rule, s.claimed_correct) for s in chosen])
    elif rule == "median":
        out = _coordinatewise(models, _median)
    else:
        out = _coordinatewise(models, _trimmed_mean)
    return Aggregate(out, tuple(s.participant for s in chosen), label)


def _coordinatewise(models: list[bytes], reduce) -> bytes:  # noqa: ANN001 - (int64 stack) -> int64 array
    decoded = [model_codec.decode_fixed(m) for m in models]
    for other in decoded[1:]:
        if not model_codec.same_layout(decoded[0], other):
            raise model_codec.ModelFormatError("models to aggregate have different layouts")
    out = []
    for i, (name, _) in enumerate(decoded[0]):
        stack = np.stack([np.asarray(d[i][1], dtype=np.int64) for d in decoded])
        out.append((name, reduce(np.sort(stack, axis=0)).astype(np.int32)))
    return model_codec.encode_fixed(out)


def _median(ordered: np.ndarray) -> np.ndarray:
    n = ordered.shape[0]
    if n % 2:
        return ordered[n // 2]
    return np.floor_divide(ordered[n // 2 - 1] + ordered[n // 2], 2)


def _trimmed_mean(ordered: np.ndarray) -> np.ndarray:
    n = ordered.shape[0]
    k = n // TRIM_DIVISOR
    kept = ordered[k : n - k]
    return np.floor_divide(kept.sum(axis=0), kept.shape[0])

"""In-process baselines: centralized training and plain FedAvg with no proofs.

They use exactly what the ZKPoT participants use: the same Dirichlet shards (zkpot.zkp.data), the
same initial model (the task publisher's), the same local training and seeds as the devnet's
provers (zkpot.zkp.model.train_as, seed = seed*1000 + 10*round + index), the same fixed-point
codec and integer aggregation (zkpot.aggregation). Plain FedAvg trusts every submission; the
"rule" simulation applies ZKPoT's admission and aggregation rules in process (its proven count is
the float model's count on the public test set, which the circuit reproduces on these tasks), as
a cross-check of the real runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from zkpot import aggregation, model_codec
from zkpot.experiment.config import ExperimentConfig
from zkpot.zkp import data, model
from zkpot.zkp.prove import DEFAULT_LOCAL_EPOCHS

TASK_MIN_CORRECT = 4  # zkpot.zkp.task.TaskConfig's default (the devnet's task uses it unless told)


@dataclass
class RoundResult:
    round: int
    accuracy: float                    # held-out split, the aggregate after this round
    test_accuracy: float               # the task's public test set
    included: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)   # participant -> reason
    correct: dict[str, int] = field(default_factory=dict)    # participant -> count on the public test set
    global_model_cid: str = ""


@dataclass
class Setting:
    shards: list[data.Dataset]
    test_set: data.Dataset
    holdout: data.Dataset
    initial: bytes
    min_correct: int
    epochs: int


def setting(config: ExperimentConfig) -> Setting:
    torch.set_num_threads(1)  # as the prover's workers: deterministic and the same floats
    arch = model.parse(config.arch)
    initial = model.init_model(arch, config.seed)
    model.clip_(initial, config.weight_bound)
    if config.test_set_file is not None and config.train_data is not None:
        # a user's data, as the devnet takes it: the whole test file, shards cut from the training file
        # (a user's test set has no held-out split behind it: its own samples stand in)
        test = data.load(config.test_set_file, arch)
        shards = data.dirichlet_shards(config.participants, config.alpha, config.seed,
                                       pool=data.load(config.train_data, arch))
        holdout = test
    else:
        test = data.public_test_set(config.test_set_size, config.seed)
        shards = data.dirichlet_shards(config.participants, config.alpha, config.seed)
        holdout = data.held_out(config.seed)
    return Setting(
        shards=shards,
        test_set=test,
        holdout=holdout,
        initial=model.encode(initial),
        min_correct=config.min_correct or min(TASK_MIN_CORRECT, config.test_set_size),
        epochs=config.local_epochs or DEFAULT_LOCAL_EPOCHS,
    )


def _evaluate(config: ExperimentConfig, s: Setting, params: bytes) -> tuple[float, float]:
    net = model.decode(params, model.parse(config.arch))
    return model.float_accuracy(net, s.holdout), model.float_accuracy(net, s.test_set)


def centralized(config: ExperimentConfig, s: Setting) -> list[RoundResult]:
    """One model trained on the union of the shards, `epochs` epochs per round-equivalent."""
    pool = data.Dataset(np.concatenate([sh.x for sh in s.shards]), np.concatenate([sh.y for sh in s.shards]))
    net = model.decode(s.initial, model.parse(config.arch))
    out = []
    for r in range(1, config.rounds + 1):
        net = model.train(net, pool, s.epochs, config.seed * 1000 + r * 10, config.weight_bound)
        acc, test_acc = _evaluate(config, s, model.encode(net))
        out.append(RoundResult(r, acc, test_acc))
    return out


def local_update(config: ExperimentConfig, s: Setting, global_model: bytes, index: int, r: int,
                 behaviour: str) -> bytes:
    """What participant `index` submits in round r (the devnet's prover does the same)."""
    net = model.decode(global_model, model.parse(config.arch))
    kind = "" if behaviour in ("honest", "copy", "silent", "drop_mask", "mask_cheat") else behaviour
    trained = model.train_as(kind, net, s.shards[index], s.epochs, config.seed * 1000 + r * 10 + index,
                             config.weight_bound)
    return model.encode(trained)


def federated(config: ExperimentConfig, s: Setting, behaviours: dict[str, str], zkpot_rules: bool,
              rule: str = aggregation.DEFAULT_RULE) -> list[RoundResult]:
    """Rounds of FedAvg. zkpot_rules=False: plain FedAvg, every submission averaged with equal weight
    (a copier's submission counts as one more copy; silent participants send nothing).
    zkpot_rules=True: the ledger's rules (copies refused by the proof's binding, the unchanged global
    model or a duplicate model refused as free-riding) and aggregation rule `rule` at the threshold.
    Secure-aggregation attacks: drop_mask trains and proves but its update never arrives (left out);
    mask_cheat proves its honest model but sends the sign-flipped one — plain FedAvg averages that in,
    under ZKPoT the commitment check voids the round's aggregate (the global model carries over)."""
    global_model = s.initial
    out = []
    for r in range(1, config.rounds + 1):
        res = RoundResult(r, 0.0, 0.0)
        models: dict[str, bytes] = {}
        for i in range(config.participants):
            name, behaviour = f"p{i}", behaviours.get(f"p{i}", "honest")
            if behaviour == "silent":
                res.excluded[name] = "silent (submitted nothing)"
                continue
            if behaviour == "copy":
                continue  # after the others: copies someone's submission
            models[name] = local_update(config, s, global_model, i, r, behaviour)
            if behaviour == "mask_cheat" and not zkpot_rules:  # what reaches a plain aggregator
                models[name] = model_codec.encode_fixed([(n, -a) for n, a in model_codec.decode_fixed(models[name])])
        for i in range(config.participants):
            name = f"p{i}"
            if behaviours.get(name) == "copy":
                source = next((f"p{j}" for j in range(config.participants) if f"p{j}" in models), None)
                if source is None:
                    res.excluded[name] = "nothing to copy"
                elif zkpot_rules:
                    res.excluded[name] = "proof bound to another submitter (refused at admission)"
                else:
                    models[name] = models[source]
        subs = []
        seen: set[str] = set()
        for name in sorted(models, key=lambda n: int(n[1:])):
            params = models[name]
            cid = model_codec.model_cid(params)
            res.correct[name] = model.correct_count(model.decode(params, model.parse(config.arch)), s.test_set)
            if zkpot_rules and params == global_model:
                res.excluded[name] = "the round's global model unchanged (free-riding)"
                continue
            if zkpot_rules and cid in seen:
                res.excluded[name] = "copies an earlier submission (free-riding)"
                continue
            seen.add(cid)
            subs.append(aggregation.Submission(name.encode(), res.correct[name], params))
        agg = aggregation.aggregate(rule if zkpot_rules else aggregation.DEFAULT_RULE, subs,
                                    s.min_correct if zkpot_rules else 0)
        res.included = [p.decode() for p in agg.included]
        dropped = [n for n in res.included if behaviours.get(n) == "drop_mask"]
        if zkpot_rules and dropped:  # proven, never masked: recovered, left out of the sum
            kept = [sub for sub in subs if sub.participant.decode() in res.included and sub.participant.decode()
                    not in dropped]
            agg = aggregation.aggregate(rule, kept, s.min_correct)
            res.included = [p.decode() for p in agg.included]
            for n in dropped:
                res.excluded[n] = "dropped out of the masking phase (its masks removed from the sum)"
        cheats = [n for n in res.included if behaviours.get(n) == "mask_cheat"]
        if zkpot_rules and cheats:
            agg = aggregation.Aggregate(None, (), agg.rule)
            for n in res.included:
                res.excluded[n] = f"aggregate voided: {', '.join(cheats)} masked another model than proven"
            res.included = []
        for sub in subs:
            name = sub.participant.decode()
            if name not in res.included and name not in res.excluded:
                res.excluded[name] = f"proven {sub.claimed_correct}/{len(s.test_set)} < threshold {s.min_correct}"
        if agg.model is not None:
            global_model = agg.model
        res.accuracy, res.test_accuracy = _evaluate(config, s, global_model)
        res.global_model_cid = model_codec.model_cid(global_model)
        out.append(res)
    return out


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0

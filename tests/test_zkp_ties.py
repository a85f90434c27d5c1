"""The circuit's correct-count rule: the label's logit must strictly beat every other logit; ties never count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zkp_env import shared_env

from zkpot.zkp import circuit, model, prove

ALL_TIED = [0.125] * 10


def _fixed_logits_model(bias: list[float]) -> model.Net:
    """Logits c(x) + bias[j] (every class the same fc2 row, exact at scale 6): ties by construction.

    No zero biases: ezkl 23's prove deadlocked on an all-zero fc2 bias here (its rayon threads log
    through pyo3-log, which waits for the GIL that prove holds; seen in gdb).
    """
    net = model.decode(shared_env().task.initial_model, shared_env().task.arch)
    with torch.no_grad():
        net.fc2.weight.fill_(0.25)
        net.fc2.bias.copy_(torch.tensor(bias))
    return net


def _strict_count(bias: list[float], labels: np.ndarray) -> int:
    b = np.asarray(bias)
    return sum(int(all(b[y] > b[j] for j in range(len(b)) if j != y)) for y in labels)


def test_ties_never_count_and_a_unique_winner_does(tmp_path) -> None:
    env = shared_env()
    task, test = env.task, env.task.test_set
    limbs = task.binding(1, env.alice.public)
    first = int(test.y[0])
    second = int(next(y for y in test.y if y != first))
    cases = {
        "all ten tied": ALL_TIED,
        "label class alone on top": [0.25 if c == first else 0.125 for c in range(10)],
        "two classes tied on top": [0.25 if c in (first, second) else 0.125 for c in range(10)],
    }
    for name, bias in cases.items():
        net = _fixed_logits_model(bias)
        ev = circuit.evaluate(net, test, limbs, task.norm_bound, task.paths["settings"],
                              tmp_path / name.replace(" ", "-"))
        assert ev.correct == _strict_count(bias, test.y), name
    # argmax's first-index rule would have counted the tied samples of the first tied class
    assert model.correct_count(_fixed_logits_model(cases["all ten tied"]), test) == int((test.y == 0).sum()) > 0
    assert _strict_count(cases["two classes tied on top"], test.y) == 0
    assert _strict_count(cases["label class alone on top"], test.y) == int((test.y == first).sum()) > 0


def test_a_proof_cannot_count_a_tie_as_correct(tmp_path) -> None:
    """A real proof of the all-tied model verifies with count 0 and not with argmax's count."""
    env = shared_env()
    task, who = env.task, env.alice.public
    net = _fixed_logits_model(ALL_TIED)
    ev = circuit.evaluate(net, task.test_set, task.binding(1, who), task.norm_bound, task.paths["settings"], tmp_path,
                          task.paths["vk"], task.paths["srs"])
    assert ev.correct == 0
    proof = circuit.prove(ev.witness_path, tmp_path / "model.compiled", task.paths["pk"], tmp_path / "proof.json",
                          task.paths["srs"])
    argmax_count = model.correct_count(net, task.test_set)
    assert argmax_count == int((task.test_set.y == 0).sum()) > 0  # first index wins a tie: class 0's samples
    paths = task.paths
    assert circuit.verify(proof, task.instances(1, who, 0), paths["settings"], paths["vk"], paths["srs"])
    assert not circuit.verify(proof, task.instances(1, who, argmax_count), paths["settings"], paths["vk"],
                              paths["srs"])


def test_a_model_with_an_all_zero_tensor_is_refused_before_proving(tmp_path) -> None:
    # ezkl folds an all-zero constant away and compiles another circuit; its prove never returns
    env = shared_env()
    net = model.decode(env.task.initial_model, env.task.arch)
    with torch.no_grad():
        net.get_parameter("fc2.bias").zero_()
    with pytest.raises(prove.ProveRangeError, match="fc2.bias is all zeros"):
        prove.compile_step(env.task, model.encode(net), tmp_path / "w")

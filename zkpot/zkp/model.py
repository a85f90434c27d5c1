"""The task's MLP (64 -> hidden -> 10, ReLU), its fixed-point wire form and local training.

Models travel as zkpot.model_codec bytes (int32 fixed point, named tensors "fc1.weight", ...).
Weights are clipped to the task's bound during training so that every model a participant can
produce stays inside the circuit's calibrated range (see TaskConfig.weight_bound).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from zkpot import model_codec
from zkpot.model_codec import ModelFormatError
from zkpot.zkp.data import N_CLASSES, N_FEATURES, Dataset

_ARCH = re.compile(r"^mlp:64-(\d+)-10$")


class MLP(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(N_FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(x, dict(self.named_parameters()))

    @staticmethod
    def forward_with(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The forward pass on given tensors (the circuit feeds each parameter through once; the
        ONNX tracer cannot use torch.func.functional_call)."""
        hidden = nn.functional.linear(x, params["fc1.weight"], params["fc1.bias"])
        return nn.functional.linear(torch.relu(hidden), params["fc2.weight"], params["fc2.bias"])


def architecture(hidden: int) -> str:
    return f"mlp:{N_FEATURES}-{hidden}-{N_CLASSES}"


def hidden_of(arch: str) -> int:
    match = _ARCH.match(arch)
    if not match:
        raise ValueError(f"unsupported architecture {arch!r} (expected mlp:64-H-10)")
    return int(match.group(1))


def layout(hidden: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        ("fc1.weight", (hidden, N_FEATURES)),
        ("fc1.bias", (hidden,)),
        ("fc2.weight", (N_CLASSES, hidden)),
        ("fc2.bias", (N_CLASSES,)),
    ]


def init_model(hidden: int, seed: int) -> MLP:
    """Deterministic initial model (same seed: same weights on every machine)."""
    gen = torch.Generator().manual_seed(seed)
    model = MLP(hidden)
    with torch.no_grad():
        for name, shape in layout(hidden):
            fan_in = shape[-1] if name.endswith("weight") else (N_FEATURES if name.startswith("fc1") else hidden)
            bound = 1.0 / np.sqrt(fan_in)
            model.get_parameter(name).copy_(torch.empty(shape).uniform_(-bound, bound, generator=gen))
    return model


def to_tensors(model: MLP) -> model_codec.Tensors:
    return [(name, model.get_parameter(name).detach().cpu().numpy().astype(np.float32)) for name, _ in
            layout(model.hidden)]


def from_tensors(tensors: model_codec.Tensors, hidden: int) -> MLP:
    """Build the MLP from named tensors, checking names and shapes (ModelFormatError)."""
    got = [(name, tuple(arr.shape)) for name, arr in tensors]
    want = layout(hidden)
    if got != want:
        raise ModelFormatError(f"model layout {got} does not match the task's architecture {want}")
    model = MLP(hidden)
    with torch.no_grad():
        for name, arr in tensors:
            if not np.all(np.isfinite(arr)):
                raise ModelFormatError(f"tensor {name} has non-finite values")
            model.get_parameter(name).copy_(torch.from_numpy(np.asarray(arr, dtype=np.float32)))
    return model.eval()


def encode(model: MLP) -> bytes:
    return model_codec.encode(to_tensors(model))


def decode(data: bytes, hidden: int) -> MLP:
    """Decode model_codec bytes into the task's MLP (ModelFormatError on any mismatch)."""
    return from_tensors(model_codec.decode(data), hidden)


def max_abs_weight(model: MLP) -> float:
    return max(float(p.detach().abs().max()) for p in model.parameters())


def clip_(model: MLP, bound: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.clamp_(-bound, bound)


def train(
    model: MLP,
    data: Dataset,
    epochs: int,
    seed: int,
    weight_bound: float,
    lr: float = 0.1,
    batch_size: int = 32,
) -> MLP:
    """Plain minibatch SGD, seeded (deterministic on CPU); weights clipped to ±weight_bound."""
    if len(data) == 0:
        raise ValueError("empty training shard")
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    clip_(model, weight_bound)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            clip_(model, weight_bound)
    return model.eval()


def correct_count(model: MLP, data: Dataset) -> int:
    """Correct predictions of the float model (argmax ties resolve to the first index, as in torch)."""
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x)).argmax(dim=1)
    return int((pred == torch.from_numpy(data.y)).sum())


def float_accuracy(model: MLP, data: Dataset) -> float:
    return correct_count(model, data) / max(len(data), 1)


# -- Byzantine behaviours (experiments) -------------------------------------------------------------
# A participant's prover can be told to train badly on purpose. The proof stays honest: it proves
# the accuracy of whatever model results, so a poisoned model proves a low count and falls below
# the task's threshold. "copy" and "silent" need no prover (the participant's client does them).

BEHAVIOURS = ("honest", "label_flip", "scaled", "random", "free_ride")
SCALED_UPDATE_FACTOR = -10.0  # "scaled": the local update, sign-flipped and boosted (then clipped)


def flip_labels(data: Dataset) -> Dataset:
    """Label flipping: class c becomes 9 - c (every label wrong, systematically)."""
    return Dataset(data.x, (N_CLASSES - 1 - data.y).astype(np.int64))


def train_as(behaviour: str, model: MLP, data: Dataset, epochs: int, seed: int, weight_bound: float) -> MLP:
    """Local training as `behaviour` ('' or 'honest': model.train). Weights always stay in bounds,
    as they must for the model to be provable at all."""
    if behaviour in ("", "honest"):
        return train(model, data, epochs, seed, weight_bound)
    if behaviour == "label_flip":
        return train(model, flip_labels(data), epochs, seed, weight_bound)
    if behaviour == "free_ride":  # no work: the unchanged global model
        clip_(model, weight_bound)
        return model.eval()
    if behaviour == "random":
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.empty(p.shape).uniform_(-weight_bound, weight_bound, generator=gen))
        return model.eval()
    if behaviour == "scaled":
        start = [p.detach().clone() for p in model.parameters()]
        trained = train(model, data, epochs, seed, weight_bound)
        with torch.no_grad():
            for p, p0 in zip(trained.parameters(), start, strict=True):
                p.copy_(p0 + SCALED_UPDATE_FACTOR * (p - p0))
        clip_(trained, weight_bound)
        return trained.eval()
    raise ValueError(f"unknown behaviour {behaviour!r} (known: {', '.join(BEHAVIOURS)})")

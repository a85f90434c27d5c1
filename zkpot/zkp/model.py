"""The task's model (zkpot.zkp.arch: an Arch spec turned into a torch module), its fixed-point
wire form and local training.

Models travel as zkpot.model_codec bytes (int32 fixed point, named tensors in the Arch's layout:
"fc1.weight", ... for an MLP, "l0.weight", ... for a layer list). Weights are clipped to the
task's bound during training so that every model a participant can produce stays inside the
circuit's calibrated range (see TaskConfig.weight_bound).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zkpot import model_codec
from zkpot.model_codec import ModelFormatError
from zkpot.zkp.arch import Arch, Net, parse
from zkpot.zkp.data import Dataset

DEFAULT_ARCH = "mlp:64-16-10"  # the devnet's task: the digits' 64 pixels, 16 hidden units, 10 classes

__all__ = ["DEFAULT_ARCH", "Arch", "Net", "parse", "init_model", "from_weights", "to_tensors", "from_tensors",
           "encode", "decode", "train", "train_as", "correct_count", "float_accuracy", "BEHAVIOURS"]


def init_model(arch: Arch, seed: int) -> Net:
    """Deterministic initial model (same seed: same weights on every machine): each tensor in
    layout order uniform in ±1/sqrt(fan in of its layer), as torch's default init bounds it."""
    gen = torch.Generator().manual_seed(seed)
    net = Net(arch)
    with torch.no_grad():
        for layer in arch.layers:
            if not layer.name:
                continue
            bound = 1.0 / np.sqrt(arch.fan_in(layer))
            for suffix in ("weight", "bias"):
                p = net.get_parameter(f"{layer.name}.{suffix}")
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))
    return net


def from_weights(arch: Arch, weights: dict[str, torch.Tensor]) -> Net:
    """The Arch's module holding given weights (a user's torch module's, zkpot.zkp.arch.from_module)."""
    return from_tensors([(name, weights[name].detach().cpu().numpy().astype(np.float32)) for name, _ in arch.layout],
                        arch)


def to_tensors(net: Net) -> model_codec.Tensors:
    return [(name, net.get_parameter(name).detach().cpu().numpy().astype(np.float32)) for name, _ in
            net.arch.layout]


def from_tensors(tensors: model_codec.Tensors, arch: Arch) -> Net:
    """Build the task's module from named tensors, checking names and shapes (ModelFormatError)."""
    got = [(name, tuple(arr.shape)) for name, arr in tensors]
    want = list(arch.layout)
    if got != want:
        raise ModelFormatError(f"model layout {got} does not match the task's architecture {want}")
    net = Net(arch)
    with torch.no_grad():
        for name, arr in tensors:
            if not np.all(np.isfinite(arr)):
                raise ModelFormatError(f"tensor {name} has non-finite values")
            net.get_parameter(name).copy_(torch.from_numpy(np.asarray(arr, dtype=np.float32)))
    return net.eval()


def encode(net: Net) -> bytes:
    return model_codec.encode(to_tensors(net))


def decode(data: bytes, arch: Arch) -> Net:
    """Decode model_codec bytes into the task's module (ModelFormatError on any mismatch)."""
    return from_tensors(model_codec.decode(data), arch)


def max_abs_weight(model: Net) -> float:
    return max(float(p.detach().abs().max()) for p in model.parameters())


def clip_(model: Net, bound: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.clamp_(-bound, bound)


def train(
    model: Net,
    data: Dataset,
    epochs: int,
    seed: int,
    weight_bound: float,
    lr: float = 0.1,
    batch_size: int = 32,
) -> Net:
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


def correct_count(model: Net, data: Dataset) -> int:
    """Correct predictions of the float model (argmax ties resolve to the first index, as in torch)."""
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x)).argmax(dim=1)
    return int((pred == torch.from_numpy(data.y)).sum())


def float_accuracy(model: Net, data: Dataset) -> float:
    return correct_count(model, data) / max(len(data), 1)


# -- Byzantine behaviours (experiments) -------------------------------------------------------------
# A participant's prover can be told to train badly on purpose. The proof stays honest: it proves
# the accuracy of whatever model results, so a poisoned model proves a low count and falls below
# the task's threshold. "copy" and "silent" need no prover (the participant's client does them).

BEHAVIOURS = ("honest", "label_flip", "scaled", "random", "free_ride")
SCALED_UPDATE_FACTOR = -10.0  # "scaled": the local update, sign-flipped and boosted (then clipped)


def flip_labels(data: Dataset, n_classes: int) -> Dataset:
    """Label flipping: class c becomes (classes - 1) - c (every label wrong, systematically; for
    an odd class count the middle class keeps its label)."""
    return Dataset(data.x, (n_classes - 1 - data.y).astype(np.int64))


def train_as(behaviour: str, model: Net, data: Dataset, epochs: int, seed: int, weight_bound: float) -> Net:
    """Local training as `behaviour` ('' or 'honest': model.train). Weights always stay in bounds,
    as they must for the model to be provable at all."""
    if behaviour in ("", "honest"):
        return train(model, data, epochs, seed, weight_bound)
    if behaviour == "label_flip":
        return train(model, flip_labels(data, model.arch.n_classes), epochs, seed, weight_bound)
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

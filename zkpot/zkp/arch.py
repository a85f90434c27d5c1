"""A task's model architecture as data: a short spec string, checked and turned into a torch module.

Two spellings, both canonical (the manifest stores the string, so it is part of the task id):

- ``mlp:64-16-10``: a multilayer perceptron, IN-H1-...-OUT, ReLU between the Linear layers;
  parameters ``fc1.weight``, ``fc1.bias``, ... (the devnet's default task since the start).
- ``seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10``: an input shape (features, or
  channels x height x width) and the layers in order, separated by ``-``; parameters ``l<i>.weight``
  and ``l<i>.bias`` for the i-th layer (0-based).

The layers are the ones ezkl lays out as plain arithmetic, cheaply (docs/models.md has costs):

==============  ==================  ====================================================
token           torch               note
==============  ==================  ====================================================
``linearN``     nn.Linear(_, N)     input must be flat (a ``flatten`` after conv layers)
``convCkK``     nn.Conv2d(_, C, K)  also ``convCkKsSpP``: stride S, zero padding P
``relu``        nn.ReLU             one range check per activation
``avgpoolK``    nn.AvgPool2d(K)     kernel = stride = K, must divide height and width
``flatten``     nn.Flatten          (C, H, W) -> C*H*W
==============  ==================  ====================================================

Every parametrised layer has a bias: ezkl commits each parameter once, in a layout the commitment
module learns per task; a layer without one would be a different layout for no gain. The last
layer must be a Linear whose width is the task's class count (the logits). The input is given
flat (n, features) and reshaped to the input shape inside the model, so data files and the
circuit's public inputs are the same for every architecture.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

MAX_PARAMS = 200_000  # the committed vector fills advice rows: beyond this no task fits logrows <= 22
MAX_CLASSES = 1024

_LAYER = re.compile(r"^(?:linear(\d+)|conv(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?|relu|avgpool(\d+)|flatten)$")
SUPPORTED = "linearN, convCkK[sS][pP], relu, avgpoolK, flatten"


class ArchError(ValueError):
    """A spec or torch module the circuit cannot take (the message names the layer and the limit)."""


@dataclass(frozen=True)
class Layer:
    kind: str                     # linear | conv | relu | avgpool | flatten
    out: int = 0                  # linear: features out; conv: channels out
    kernel: int = 0               # conv, avgpool
    stride: int = 1               # conv
    padding: int = 0              # conv
    name: str = ""                # parameter prefix ("fc1", "l0"); "" for layers without parameters

    def token(self) -> str:
        if self.kind == "linear":
            return f"linear{self.out}"
        if self.kind == "conv":
            return f"conv{self.out}k{self.kernel}" + (f"s{self.stride}" if self.stride != 1 else "") + (
                f"p{self.padding}" if self.padding else "")
        if self.kind == "avgpool":
            return f"avgpool{self.kernel}"
        return self.kind


@dataclass(frozen=True)
class Arch:
    """A checked architecture: input shape, layers, and every tensor's name and shape."""

    spec: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    layout: tuple[tuple[str, tuple[int, ...]], ...]  # (parameter name, shape) in the module's order
    shapes: tuple[tuple[int, ...], ...]               # the activation shape after each layer

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_classes(self) -> int:
        return self.shapes[-1][0]

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.layout)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) of one-channel image inputs, for loading a folder of images."""
        if len(self.input_shape) == 3 and self.input_shape[0] == 1:
            return self.input_shape[1], self.input_shape[2]
        if len(self.input_shape) == 1 and math.isqrt(self.input_shape[0]) ** 2 == self.input_shape[0]:
            side = math.isqrt(self.input_shape[0])
            return side, side
        return None

    def fan_in(self, layer: Layer) -> int:
        """Inputs that feed one output of a parametrised layer (its default init's scale)."""
        for name, shape in self.layout:
            if name == f"{layer.name}.weight":
                return math.prod(shape[1:])
        raise KeyError(layer.name)


def mlp(n_features: int, hidden: tuple[int, ...] | int, n_classes: int) -> Arch:
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    return parse("mlp:" + "-".join(str(w) for w in (n_features, *widths, n_classes)))


@functools.lru_cache(maxsize=64)
def parse(spec: str) -> Arch:
    """Check a spec and return its Arch (ArchError naming the layer and the limit otherwise)."""
    spec = spec.strip()
    kind, sep, body = spec.partition(":")
    if not sep or kind not in ("mlp", "seq"):
        raise ArchError(f"architecture {spec!r}: expected 'mlp:IN-H-...-OUT' or 'seq:SHAPE-LAYER-...' "
                        f"(layers: {SUPPORTED})")
    tokens = body.split("-")
    if kind == "mlp":
        if len(tokens) < 2 or not all(t.isdigit() and int(t) > 0 for t in tokens):
            raise ArchError(f"architecture {spec!r}: an MLP is positive widths IN-H1-...-OUT, e.g. mlp:64-16-10")
        widths = [int(t) for t in tokens]
        layers: list[Layer] = []
        for i, width in enumerate(widths[1:], start=1):
            if layers:
                layers.append(Layer("relu"))
            layers.append(Layer("linear", out=width, name=f"fc{i}"))
        return _check("mlp:" + "-".join(map(str, widths)), (widths[0],), layers)
    try:
        input_shape = tuple(int(d) for d in tokens[0].split("x"))
    except ValueError:
        raise ArchError(f"architecture {spec!r}: the input shape {tokens[0]!r} is not FEATURES or CxHxW") from None
    if len(input_shape) not in (1, 3) or min(input_shape) < 1:
        raise ArchError(f"architecture {spec!r}: the input shape {tokens[0]!r} is not FEATURES or CxHxW")
    layers = []
    for i, token in enumerate(tokens[1:]):
        m = _LAYER.match(token)
        if not m:
            raise ArchError(f"architecture {spec!r}: layer {i} {token!r} is not supported (supported: {SUPPORTED})")
        if m.group(1):
            layers.append(Layer("linear", out=int(m.group(1)), name=f"l{i}"))
        elif m.group(2):
            layers.append(Layer("conv", out=int(m.group(2)), kernel=int(m.group(3)), stride=int(m.group(4) or 1),
                                padding=int(m.group(5) or 0), name=f"l{i}"))
        elif m.group(6):
            layers.append(Layer("avgpool", kernel=int(m.group(6))))
        else:
            layers.append(Layer(token))
    return _check(spec, input_shape, layers)


def _check(spec: str, input_shape: tuple[int, ...], layers: list[Layer]) -> Arch:
    shape = input_shape
    shapes: list[tuple[int, ...]] = []
    layout: list[tuple[str, tuple[int, ...]]] = []
    for i, layer in enumerate(layers):
        where = f"architecture {spec!r}: layer {i} ({layer.token()})"
        if layer.kind == "linear":
            if len(shape) != 1:
                raise ArchError(f"{where} takes a flat input, got shape {shape} (add 'flatten' before it)")
            if layer.out < 1:
                raise ArchError(f"{where}: width must be >= 1")
            layout += [(f"{layer.name}.weight", (layer.out, shape[0])), (f"{layer.name}.bias", (layer.out,))]
            shape = (layer.out,)
        elif layer.kind == "conv":
            if len(shape) != 3:
                raise ArchError(f"{where} takes a CxHxW input, got shape {shape}")
            c, h, w = shape
            k, s, p = layer.kernel, layer.stride, layer.padding
            if layer.out < 1 or k < 1 or s < 1 or p < 0:
                raise ArchError(f"{where}: channels, kernel and stride must be >= 1")
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if oh < 1 or ow < 1:
                raise ArchError(f"{where}: a {k}x{k} kernel does not fit the {h}x{w} input (padding {p})")
            layout += [(f"{layer.name}.weight", (layer.out, c, k, k)), (f"{layer.name}.bias", (layer.out,))]
            shape = (layer.out, oh, ow)
        elif layer.kind == "avgpool":
            if len(shape) != 3:
                raise ArchError(f"{where} takes a CxHxW input, got shape {shape}")
            c, h, w = shape
            if layer.kernel < 1 or h % layer.kernel or w % layer.kernel:
                raise ArchError(f"{where}: the kernel {layer.kernel} must divide the {h}x{w} input")
            shape = (c, h // layer.kernel, w // layer.kernel)
        elif layer.kind == "flatten":
            shape = (math.prod(shape),)
        shapes.append(shape)
    if not layers or layers[-1].kind != "linear":
        raise ArchError(f"architecture {spec!r}: the last layer must be linearN (N = the task's classes: the logits)")
    if not 2 <= shape[0] <= MAX_CLASSES:
        raise ArchError(f"architecture {spec!r}: {shape[0]} classes; a task has 2..{MAX_CLASSES}")
    n_params = sum(math.prod(s) for _, s in layout)
    if n_params > MAX_PARAMS:
        biggest = max(layout, key=lambda t: math.prod(t[1]))
        raise ArchError(f"architecture {spec!r}: {n_params:,} parameters, over the limit of {MAX_PARAMS:,} "
                        f"(the largest tensor is {biggest[0]} {biggest[1]}: {math.prod(biggest[1]):,})")
    canonical = spec if spec.startswith("mlp:") else "seq:" + "x".join(map(str, input_shape)) + "".join(
        "-" + layer.token() for layer in layers)
    return Arch(canonical, input_shape, tuple(layers), tuple(layout), tuple(shapes))


class Net(nn.Module):
    """The torch module of an Arch. Its parameters are named as the Arch's layout says."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        shape = arch.input_shape
        for layer, out_shape in zip(arch.layers, arch.shapes, strict=True):
            if layer.kind == "linear":
                self.add_module(layer.name, nn.Linear(shape[0], layer.out))
            elif layer.kind == "conv":
                self.add_module(layer.name, nn.Conv2d(shape[0], layer.out, layer.kernel, layer.stride, layer.padding))
            shape = out_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(x, dict(self.named_parameters()))

    def forward_with(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The forward pass on given tensors (the circuit feeds each parameter through once; the
        ONNX tracer cannot use torch.func.functional_call). x is flat: (n, features)."""
        f = nn.functional
        h = x.reshape(x.shape[0], *self.arch.input_shape) if len(self.arch.input_shape) > 1 else x
        for layer in self.arch.layers:
            if layer.kind == "linear":
                h = f.linear(h, params[f"{layer.name}.weight"], params[f"{layer.name}.bias"])
            elif layer.kind == "conv":
                h = _conv2d(h, params[f"{layer.name}.weight"], params[f"{layer.name}.bias"], layer)
            elif layer.kind == "relu":
                h = torch.relu(h)
            elif layer.kind == "avgpool":
                h = f.avg_pool2d(h, layer.kernel)
            else:
                h = h.reshape(h.shape[0], -1)
        return h


def _conv2d(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layer: Layer) -> torch.Tensor:
    """Conv2d as im2col + MatMul. ezkl's own Conv, given a kernel that is a graph value (as every
    parameter is here, read once as p + 0), commits one extra constant of its own to the parameter
    vector, which a verifier cannot see, and wants its bias at the product's scale; the unfolded
    form commits exactly the parameters and takes ~27 % fewer rows (measured: 6,747 against
    9,225 on a 1x8x8 -> 4 channel k3 layer, 4 samples). Zero padding is built from the input
    (x - x), not a constant, for the same reason."""
    n, c, height, width = h.shape
    k, s, p = layer.kernel, layer.stride, layer.padding
    if p:
        zero_cols = (h[:, :, :, :1] - h[:, :, :, :1]).repeat(1, 1, 1, p)
        h = torch.cat([zero_cols, h, zero_cols], dim=3)
        zero_rows = (h[:, :, :1, :] - h[:, :, :1, :]).repeat(1, 1, p, 1)
        h = torch.cat([zero_rows, h, zero_rows], dim=2)
        height, width = height + 2 * p, width + 2 * p
    oh, ow = (height - k) // s + 1, (width - k) // s + 1
    cols = [h[:, :, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s] for i in range(k) for j in range(k)]
    patches = torch.stack(cols, dim=2).reshape(n, c * k * k, oh * ow)  # (n, C*k*k, oh*ow), C-major like the kernel
    out = torch.matmul(weight.reshape(weight.shape[0], -1), patches) + bias.reshape(1, -1, 1)
    return out.reshape(n, weight.shape[0], oh, ow)


# ---------------------------------------------------------------------------- a user's torch module


def load_module(ref: str) -> nn.Module:
    """NAME in FILE.py: an nn.Module, or a callable (class or function) that returns one when called
    without arguments. ArchError says what is missing."""
    import importlib.util
    from pathlib import Path

    path, sep, name = ref.rpartition(":")
    if not sep or not path.endswith(".py") or not name:
        raise ArchError(f"--torch-model {ref!r}: expected FILE.py:NAME")
    if not Path(path).is_file():
        raise ArchError(f"--torch-model {ref!r}: no file {path}")
    spec = importlib.util.spec_from_file_location(f"zkpot_user_model_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ArchError(f"--torch-model {ref!r}: cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # the user's code: say where it failed, without our stack
        raise ArchError(f"--torch-model {ref!r}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    obj = getattr(mod, name, None)
    if obj is None:
        raise ArchError(f"--torch-model {ref!r}: {path} defines no {name!r}")
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise ArchError(f"--torch-model {ref!r}: calling {name}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, nn.Module):
        raise ArchError(f"--torch-model {ref!r}: {name} is a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def from_module(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[Arch, dict[str, torch.Tensor]]:
    """The Arch of a user's module built only from supported layers (nn.Sequential, nested or not),
    and its weights under the Arch's names (to start the task from them). ArchError names the
    first layer that is not supported and why."""
    leaves = [m for m in module.modules() if not list(m.children())]
    tokens: list[str] = []
    params: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i, m in enumerate(leaves):
        where = f"layer {i} ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            if m.bias is None:
                raise ArchError(f"{where}: bias=False is not supported (every parametrised layer has a bias)")
            tokens.append(f"linear{m.out_features}")
            params.append((m.weight, m.bias))
        elif isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size, m.stride, m.padding
            if (m.groups != 1 or m.dilation != (1, 1) or k[0] != k[1] or s[0] != s[1] or isinstance(p, str)
                    or p[0] != p[1] or m.padding_mode != "zeros" or m.bias is None):
                raise ArchError(f"{where}: only square kernels, equal stride and zero padding, groups=1, "
                                f"dilation=1 and a bias are supported")
            tokens.append(Layer("conv", out=m.out_channels, kernel=k[0], stride=s[0], padding=p[0]).token())
            params.append((m.weight, m.bias))
        elif isinstance(m, nn.ReLU):
            tokens.append("relu")
        elif isinstance(m, nn.AvgPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            stride = m.stride if isinstance(m.stride, int) else (m.stride or (k,))[0]
            if stride != k or m.padding not in (0, (0, 0)) or m.ceil_mode:
                raise ArchError(f"{where}: only kernel = stride, no padding, no ceil_mode is supported")
            tokens.append(f"avgpool{k}")
        elif isinstance(m, nn.Flatten):
            tokens.append("flatten")
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            continue  # nothing at inference
        else:
            raise ArchError(f"{where} is not supported (supported: Linear, Conv2d, ReLU, AvgPool2d, Flatten, "
                            f"Dropout; see docs/models.md for what else ezkl lays out and its cost)")
    return from_layers(input_shape, tokens, params)


def from_layers(input_shape: tuple[int, ...], tokens: list[str], params: list[tuple[object, object]],
                ) -> tuple[Arch, dict[str, torch.Tensor]]:
    """The `seq:` Arch of an input shape and layer tokens read from a user's model (a torch module,
    an ONNX file), and its weights under the Arch's names: `params` holds (weight, bias), tensors
    or arrays, for each parametrised layer in order. ArchError if a tensor's shape is not the
    layer's (a module whose sizes do not chain)."""
    arch = parse("seq:" + "x".join(map(str, input_shape)) + "".join("-" + t for t in tokens))
    named = [layer.name for layer in arch.layers if layer.name]
    weights: dict[str, torch.Tensor] = {}
    for name, (w, b) in zip(named, params, strict=True):
        weights[f"{name}.weight"] = torch.as_tensor(w).detach().clone().float()
        weights[f"{name}.bias"] = torch.as_tensor(b).detach().clone().float()
    for name, shape in arch.layout:
        if tuple(weights[name].shape) != shape:
            raise ArchError(f"{name} has shape {tuple(weights[name].shape)}, the layer needs {shape}")
    return arch, weights

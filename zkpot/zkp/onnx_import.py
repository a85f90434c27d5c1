"""A user's ONNX file as a task's model: its graph read back into a spec and its weights.

The circuit is never built from the user's graph itself: ezkl would lay out its initializers as
constants committed at every use, and the statement needs each parameter read once from the
committed vector (docs/zkpot-statement.md). So the file is read as data — a chain of supported
operators — and becomes the same `seq:` spec and weights as a torch module (arch.from_module); the
task's own graph is exported from that. Anything else is refused naming the node and why:

=========================  ===============================================================
ONNX operator              becomes
=========================  ===============================================================
Gemm (alpha = beta = 1)    linearN (B transposed or not; a bias C is required)
MatMul + Add (constant)    linearN (the Add's constant is the bias)
Conv                       convCkK[sS][pP]: square kernel, equal strides and pads, group 1,
                           dilation 1, a bias
Relu                       relu
AveragePool                avgpoolK: kernel = strides, no pads, ceil_mode 0
Flatten (axis 1)           flatten
Dropout, Identity          nothing (inference)
=========================  ===============================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zkpot.zkp import arch as arch_spec

SKIPPED = {"Dropout", "Identity"}


def load(path: Path) -> tuple[arch_spec.Arch, dict[str, torch.Tensor]]:
    """The Arch of the ONNX file at `path` and its weights under the Arch's names; ArchError says
    which node cannot be taken and why."""
    import onnx
    from onnx import numpy_helper

    where = f"--onnx-model {path}"
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # a missing or malformed file: say so, not onnx's stack
        raise arch_spec.ArchError(f"{where}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise arch_spec.ArchError(f"{where}: the graph must have one input and one output "
                                  f"(has {len(inputs)} and {len(graph.output)})")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        raise arch_spec.ArchError(f"{where}: the input must be (batch, features) or (batch, C, H, W) with "
                                  f"fixed sizes after the batch dimension, got {dims}")
    shape = tuple(dims[1:])

    tokens: list[str] = []
    params: list[tuple[np.ndarray, np.ndarray]] = []
    current = inputs[0].name
    nodes = list(graph.node)
    k = 0
    while k < len(nodes):
        node = nodes[k]
        label = f"node {k} ({node.op_type}{' ' + repr(node.name) if node.name else ''})"
        data = [i for i in node.input if i and i not in consts]
        if data != [current]:
            raise arch_spec.ArchError(f"{where}: {label} does not take the previous layer's output alone "
                                      f"(only a chain of layers is supported)")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op in SKIPPED:
            pass
        elif op == "Gemm":
            tokens.append(_gemm(node, attrs, consts, params, f"{where}: {label}"))
        elif op == "MatMul":
            nxt = nodes[k + 1] if k + 1 < len(nodes) else None
            w = consts.get(node.input[1])
            if w is None or w.ndim != 2 or nxt is None or nxt.op_type != "Add" or node.output[0] not in nxt.input:
                raise arch_spec.ArchError(f"{where}: {label}: a MatMul must multiply by a constant matrix and be "
                                          f"followed by an Add of a constant bias")
            bias = next((consts[i] for i in nxt.input if i in consts), None)
            if bias is None or bias.shape != (w.shape[1],):
                raise arch_spec.ArchError(f"{where}: {label}: the Add after it must add a bias of {w.shape[1]}")
            params.append((w.T.copy(), bias))
            tokens.append(f"linear{w.shape[1]}")
            k += 1  # the Add is the bias
            node = nxt
        elif op == "Conv":
            tokens.append(_conv(node, attrs, consts, params, f"{where}: {label}"))
        elif op == "Relu":
            tokens.append("relu")
        elif op == "AveragePool":
            kernel, strides = list(attrs.get("kernel_shape", [])), list(attrs.get("strides", []))
            if (len(set(kernel)) != 1 or strides != kernel or any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0)
                    or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
                raise arch_spec.ArchError(f"{where}: {label}: only a square kernel equal to its strides, no pads "
                                          f"and ceil_mode 0 are supported")
            tokens.append(f"avgpool{kernel[0]}")
        elif op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise arch_spec.ArchError(f"{where}: {label}: only axis=1 is supported")
            tokens.append("flatten")
        else:
            raise arch_spec.ArchError(f"{where}: {label} is not supported (supported: Gemm, MatMul+Add, Conv, "
                                      f"Relu, AveragePool, Flatten, Dropout, Identity; docs/models.md)")
        current = node.output[0]
        k += 1
    if current != graph.output[0].name:
        raise arch_spec.ArchError(f"{where}: the graph's output is not its last layer's")
    try:
        return arch_spec.from_layers(shape, tokens, params)
    except arch_spec.ArchError as exc:
        raise arch_spec.ArchError(f"{where}: {exc}") from None


def _gemm(node, attrs: dict, consts: dict, params: list, where: str) -> str:  # noqa: ANN001 - onnx NodeProto
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        raise arch_spec.ArchError(f"{where}: only alpha = beta = 1 and transA = 0 are supported")
    w = consts.get(node.input[1])
    b = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if w is None or w.ndim != 2:
        raise arch_spec.ArchError(f"{where}: B must be a constant matrix")
    w = w if attrs.get("transB", 0) else w.T
    if b is None or b.size != w.shape[0]:
        raise arch_spec.ArchError(f"{where}: a bias C of {w.shape[0]} is required (every parametrised layer "
                                  f"has a bias)")
    params.append((w.copy(), b.reshape(-1)))
    return f"linear{w.shape[0]}"


def _conv(node, attrs: dict, consts: dict, params: list, where: str) -> str:  # noqa: ANN001 - onnx NodeProto
    w = consts.get(node.input[1])
    b = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    kernel = list(attrs.get("kernel_shape", w.shape[2:] if w is not None else []))
    strides = list(attrs.get("strides", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if (w is None or w.ndim != 4 or len(set(kernel)) != 1 or len(set(strides)) != 1 or len(set(pads)) != 1
            or attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1]))
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        raise arch_spec.ArchError(f"{where}: only a constant square kernel, equal strides and pads, group 1 "
                                  f"and dilation 1 are supported")
    if b is None or b.shape != (w.shape[0],):
        raise arch_spec.ArchError(f"{where}: a bias of {w.shape[0]} is required (every parametrised layer has "
                                  f"a bias)")
    params.append((w, b))
    return arch_spec.Layer("conv", out=int(w.shape[0]), kernel=int(kernel[0]), stride=int(strides[0]),
                           padding=int(pads[0])).token()

"""Issue 14: a user's ONNX file as a task's model (zkpot/zkp/onnx_import.py): read back into the
same spec and weights as the torch module it came from, and refused, naming the node, when the
circuit cannot take it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from ledger_process import REPO
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from zkpot.zkp import arch, onnx_import


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.onnx.export(module.eval(), torch.zeros(1, *shape), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"])
    return path


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_the_cnn_example_and_an_mlp_read_back_as_their_torch_modules(tmp_path: Path) -> None:
    cnn = arch.load_module(f"{REPO}/examples/digits-cnn/model.py:model")
    got, weights = onnx_import.load(_export(cnn, (1, 8, 8), tmp_path / "cnn.onnx"))
    want, want_weights = arch.from_module(cnn, (1, 8, 8))
    assert got.spec == want.spec == "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10"
    assert _same(weights, want_weights)

    mlp = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    got, weights = onnx_import.load(_export(mlp, (30,), tmp_path / "mlp.onnx"))  # Gemm nodes
    want, want_weights = arch.from_module(mlp, (30,))
    assert got.spec == want.spec == "seq:30-linear16-relu-linear2" and _same(weights, want_weights)
    # the module those weights build computes what the user's module computes
    from zkpot.zkp import model

    net = model.from_weights(got, weights)
    x = torch.rand(5, 30)
    assert torch.allclose(net(x), mlp.eval()(x), atol=1e-5)


def _graph(nodes: list, inits: dict[str, np.ndarray], in_shape: list[int], out: str = "y") -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "user", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(g)


def test_matmul_plus_add_is_a_linear_layer(tmp_path: Path) -> None:
    w, b = np.random.rand(8, 3), np.random.rand(3)  # x @ w + b: w is (in, out)
    m = _graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
               {"w": w, "b": b}, [1, 8])
    onnx.save(m, tmp_path / "mm.onnx")
    got, weights = onnx_import.load(tmp_path / "mm.onnx")
    assert got.spec == "seq:8-linear3"
    assert np.allclose(weights["l0.weight"].numpy(), w.T) and np.allclose(weights["l0.bias"].numpy(), b)


@pytest.mark.parametrize("name, build, says", [
    ("maxpool", lambda p: _export(nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Flatten(),
                                                nn.Linear(36, 10)), (1, 8, 8), p),
     "node 1 (MaxPool '/1/MaxPool') is not supported"),
    ("sigmoid", lambda p: _export(nn.Sequential(nn.Linear(64, 16), nn.Sigmoid(), nn.Linear(16, 10)), (64,), p),
     "(Sigmoid"),
    ("no bias", lambda p: _export(nn.Sequential(nn.Linear(64, 10, bias=False)), (64,), p), "MatMul must"),
    ("grouped conv", lambda p: _export(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(),
                                                     nn.Linear(144, 10)), (2, 8, 8), p), "group 1"),
    ("branch", lambda p: onnx.save(_graph(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Add", ["h", "x"], ["y"])], {}, [1, 8]), p) or p,
     "only a chain of layers"),
    ("dynamic shape", lambda p: onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"])], {}, [1, "n"]), p) or p,
     "fixed sizes after the batch dimension"),
    ("not onnx", lambda p: p.write_bytes(b"\x00junk") and p, "not a readable ONNX file"),
])
def test_what_the_circuit_cannot_take_is_refused_by_node(tmp_path: Path, name: str, build, says: str) -> None:
    path = build(tmp_path / f"{name.replace(' ', '_')}.onnx")
    with pytest.raises(arch.ArchError) as err:
        onnx_import.load(path)
    assert says in str(err.value), str(err.value)


def test_task_plan_and_create_take_an_onnx_file(tmp_path: Path) -> None:
    path = _export(arch.load_module(f"{REPO}/examples/digits-cnn/model.py:model"), (1, 8, 8), tmp_path / "cnn.onnx")

    def zkpot(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zkpot.cli", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=600)

    planned = zkpot("task", "plan", "--onnx-model", str(path), "--test-set-size", "8", "--shard-size", "4", "--json")
    assert planned.returncode == 0, planned.stderr
    p = json.loads(planned.stdout)
    assert p["params"] == p["committed"] == 410 and p["shards"] == 2
    twice = zkpot("task", "plan", "--onnx-model", str(path), "--arch", "mlp:64-16-10")
    assert twice.returncode == 1 and "--arch and --onnx-model name the model twice" in twice.stderr
    shaped = zkpot("task", "plan", "--onnx-model", str(path), "--input-shape", "64")
    assert shaped.returncode == 1 and "read from the ONNX graph" in shaped.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    refused = zkpot("task", "create", "--onnx-model", str(bad), "--out", str(tmp_path / "task"),
                    "--publisher-key", str(tmp_path / "nokey.json"))
    assert refused.returncode != 0 and "not a readable ONNX file" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "task").exists()

"""Architectures as data (issue 14): specs are checked with messages that name the layer and the
limit, the module computes what torch's own layers compute, and a user's torch module of supported
layers becomes a spec with its weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zkpot.zkp import arch, datafiles, model
from zkpot.zkp.arch import ArchError

CNN = "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10"


def test_specs_parse_to_canonical_layouts() -> None:
    mlp = arch.parse("mlp:64-16-10")
    assert mlp.spec == "mlp:64-16-10" and mlp.n_features == 64 and mlp.n_classes == 10
    assert [n for n, _ in mlp.layout] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert mlp.n_params == 64 * 16 + 16 + 16 * 10 + 10
    deep = arch.parse(" mlp:030-8-4-2 ")
    assert deep.spec == "mlp:30-8-4-2" and deep.n_classes == 2 and len(deep.layout) == 6
    cnn = arch.parse(CNN)
    assert cnn.spec == CNN and cnn.input_shape == (1, 8, 8) and cnn.image_shape == (8, 8)
    assert cnn.layout == (("l0.weight", (4, 1, 3, 3)), ("l0.bias", (4,)), ("l4.weight", (10, 36)), ("l4.bias", (10,)))
    assert cnn.shapes == ((4, 6, 6), (4, 6, 6), (4, 3, 3), (36,), (10,))
    assert arch.parse("seq:2x9x9-conv3k3s2p1-relu-flatten-linear5").shapes[0] == (3, 5, 5)
    assert arch.parse("seq:30-linear8-relu-linear2").spec == "seq:30-linear8-relu-linear2"


@pytest.mark.parametrize(("spec", "says"), [
    ("resnet:18", "expected 'mlp:IN-H-...-OUT' or 'seq:SHAPE-LAYER-...'"),
    ("mlp:64-0-10", "positive widths"),
    ("seq:1x8x8-conv4k3-maxpool2-flatten-linear10", "layer 1 'maxpool2' is not supported"),
    ("seq:1x8x8-conv4k3-linear10", "layer 1 (linear10) takes a flat input, got shape (4, 6, 6) (add 'flatten'"),
    ("seq:1x8x8-conv4k9-flatten-linear10", "layer 0 (conv4k9): a 9x9 kernel does not fit the 8x8 input"),
    ("seq:1x8x8-conv4k3-avgpool4-flatten-linear10", "layer 1 (avgpool4): the kernel 4 must divide the 6x6 input"),
    ("seq:64-linear10-relu", "the last layer must be linearN"),
    ("seq:64-linear1", "1 classes; a task has 2..1024"),
    ("seq:64-linear10-conv2k1-flatten-linear10", "layer 1 (conv2k1) takes a CxHxW input"),
    ("mlp:4096-64-10", "over the limit of 200,000 (the largest tensor is fc1.weight (64, 4096): 262,144)"),
    ("seq:axb-linear2", "the input shape 'axb' is not FEATURES or CxHxW"),
])
def test_refusals_name_the_layer_and_the_limit(spec: str, says: str) -> None:
    with pytest.raises(ArchError) as err:
        arch.parse(spec)
    assert says in str(err.value)


@pytest.mark.parametrize("spec", [CNN, "seq:2x9x9-conv3k3s2p1-relu-flatten-linear5",
                                  "seq:1x8x8-conv2k2s2-flatten-linear3", "mlp:64-16-8-10"])
def test_the_module_computes_what_torchs_layers_compute(spec: str) -> None:
    """The circuit's im2col convolution and the layer list against torch's nn layers, same weights."""
    a = arch.parse(spec)
    net = model.init_model(a, seed=1)
    ref: list[nn.Module] = []
    for layer in a.layers:
        if layer.kind == "linear":
            ref.append(net.get_submodule(layer.name))
        elif layer.kind == "conv":
            ref.append(net.get_submodule(layer.name))
        elif layer.kind == "relu":
            ref.append(nn.ReLU())
        elif layer.kind == "avgpool":
            ref.append(nn.AvgPool2d(layer.kernel))
        else:
            ref.append(nn.Flatten())
    x = torch.rand(7, a.n_features)
    with torch.no_grad():
        want = nn.Sequential(*ref)(x.reshape(7, *a.input_shape))
        assert torch.allclose(net(x), want, atol=1e-5)


def test_a_users_torch_module_becomes_a_spec_with_its_weights() -> None:
    torch.manual_seed(0)
    user = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.1),
                         nn.Sequential(nn.Linear(36, 10)))
    a, weights = arch.from_module(user, (1, 8, 8))
    assert a.spec == CNN
    net = model.from_weights(a, weights)
    x = torch.rand(5, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), user.eval()(x.reshape(5, 1, 8, 8)), atol=1e-5)


@pytest.mark.parametrize(("module", "says"), [
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10)),
     "layer 1 (BatchNorm2d) is not supported"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10, bias=False)), "layer 1 (Linear): bias=False is not supported"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.Flatten(), nn.Linear(64, 10)), "layer 0 (Conv2d): only square"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid()), "layer 2 (Sigmoid) is not supported"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(6, 10)), "layer 1 (linear10) takes a flat input"),
])
def test_a_module_with_unsupported_layers_is_refused_by_name(module: nn.Module, says: str) -> None:
    with pytest.raises(ArchError) as err:
        arch.from_module(module, (1, 8, 8))
    assert says in str(err.value)


def test_training_a_cnn_learns_and_label_flip_uses_the_tasks_classes() -> None:
    from zkpot.zkp import data

    a = arch.parse(CNN)
    shard = data.dirichlet_shards(2, alpha=100.0, seed=7)[0]
    test = data.public_test_set(100, 7)
    net = model.train(model.init_model(a, 1), shard, epochs=8, seed=4, weight_bound=1.0)
    assert model.max_abs_weight(net) <= 1.0 and model.float_accuracy(net, test) > 0.6
    two = data.Dataset(np.zeros((3, 30), np.float32), np.array([0, 1, 1]))
    assert model.flip_labels(two, 2).y.tolist() == [1, 0, 0]


def test_data_files_are_checked_against_the_architecture(tmp_path) -> None:
    tab = arch.parse("mlp:30-8-2")
    rows = ["f" + ",f".join(map(str, range(30))) + ",label"] + [",".join(["0.5"] * 30 + [str(i % 2)]) for i in range(6)]
    (tmp_path / "ok.csv").write_text("\n".join(rows) + "\n")
    got = datafiles.load_for(tmp_path / "ok.csv", tab)
    assert got.x.shape == (6, 30) and got.y.tolist() == [0, 1, 0, 1, 0, 1]
    (tmp_path / "three.csv").write_text("\n".join(rows[:3] + [",".join(["0.5"] * 30 + ["2"])]) + "\n")
    with pytest.raises(datafiles.DataFileError, match=r"labels must be 0..1 \(the task has 2 classes\), row\(s\) 4"):
        datafiles.load_for(tmp_path / "three.csv", tab)
    with pytest.raises(datafiles.DataFileError, match="row 2 has 31 columns, expected 65"):
        datafiles.load_for(tmp_path / "ok.csv", arch.parse("mlp:64-16-10"))
    (tmp_path / "imgs").mkdir()
    with pytest.raises(datafiles.DataFileError, match="is not one-channel images"):
        datafiles.load_for(tmp_path / "imgs", tab)


def test_a_module_whose_sizes_do_not_chain_is_refused_naming_the_tensor() -> None:
    """arch.from_layers (shared by --torch-model and --onnx-model) checks each tensor against its layer."""
    broken = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(40, 10))  # 4x6x6 = 144 features, not 40
    with pytest.raises(arch.ArchError, match=r"l2.weight has shape \(10, 40\), the layer needs \(10, 144\)"):
        arch.from_module(broken, (1, 8, 8))

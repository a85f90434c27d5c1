"""Data, model and binding: no proofs here (fast)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from zkpot import model_codec
from zkpot.model_codec import ModelFormatError
from zkpot.zkp import circuit, data, model


def test_public_test_set_is_deterministic_balanced_and_held_out() -> None:
    a = data.public_test_set(20, seed=7)
    b = data.public_test_set(20, seed=7)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert sorted(np.bincount(a.y, minlength=10).tolist()) == [2] * 10  # class-balanced prefix
    assert 0.0 <= a.x.min() and a.x.max() <= 1.0
    pool = data.training_pool(7)
    held = {row.tobytes() for row in data.public_test_set(data.HELD_OUT_SIZE, 7).x}
    assert len(pool) + data.HELD_OUT_SIZE == 1797 and len(data.held_out(3)) == data.HELD_OUT_SIZE
    # no test sample is in the training pool (digits has a few duplicate images; allow them)
    assert sum(row.tobytes() in held for row in pool.x) <= 5
    assert not np.array_equal(data.public_test_set(20, seed=8).x, a.x)


def test_dirichlet_shards_are_disjoint_non_iid_and_roundtrip(tmp_path) -> None:
    shards = data.dirichlet_shards(4, alpha=0.3, seed=7)
    assert len(shards) == 4 and all(len(s) >= 10 for s in shards)
    assert sum(len(s) for s in shards) == len(data.training_pool(7))
    # non-IID: label mixes differ a lot between shards
    mixes = np.array([np.bincount(s.y, minlength=10) / len(s) for s in shards])
    assert np.abs(mixes[0] - mixes[1]).sum() > 0.3
    data.save(tmp_path / "s.npz", shards[2])
    back = data.load(tmp_path / "s.npz")
    assert np.array_equal(back.x, shards[2].x) and np.array_equal(back.y, shards[2].y)
    again = data.dirichlet_shards(4, alpha=0.3, seed=7)
    assert all(np.array_equal(s.y, t.y) for s, t in zip(shards, again, strict=True))


def test_model_codec_roundtrip_and_layout_check() -> None:
    mlp16 = model.parse("mlp:64-16-10")
    m = model.init_model(mlp16, seed=3)
    blob = model.encode(m)
    back = model.decode(blob, mlp16)
    assert model.encode(back) == blob  # decode(encode(.)) is a fixed point: the proven model is the revealed one
    assert [n for n, _ in model_codec.decode(blob)] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    with pytest.raises(ModelFormatError):
        model.decode(blob, model.parse("mlp:64-8-10"))
    with pytest.raises(ModelFormatError):
        model.decode(blob, model.parse("seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10"))
    with pytest.raises(ModelFormatError):
        model.decode(b"garbage", mlp16)
    assert model.encode(model.init_model(mlp16, seed=3)) == blob
    # the same initial model as before architectures were data: the devnet task's id did not move
    assert hashlib.sha256(model.encode(model.init_model(mlp16, seed=3))).hexdigest() == (
        "d10a63b4d4febe715d95824f6401144632979024b23c807f405f1b1cd30fad22")


def test_training_is_deterministic_clipped_and_learns() -> None:
    shard = data.dirichlet_shards(2, alpha=100.0, seed=7)[0]  # near IID
    test = data.public_test_set(100, seed=7)
    a = model.train(model.init_model(model.parse(model.DEFAULT_ARCH), 1), shard, epochs=5, seed=4, weight_bound=0.5)
    b = model.train(model.init_model(model.parse(model.DEFAULT_ARCH), 1), shard, epochs=5, seed=4, weight_bound=0.5)
    assert model.encode(a) == model.encode(b)
    assert model.max_abs_weight(a) <= 0.5
    assert model.float_accuracy(a, test) > 0.7
    assert model.float_accuracy(model.init_model(model.parse(model.DEFAULT_ARCH), 1), test) < 0.3


def test_binding_limbs_cover_256_bits_and_separate_inputs() -> None:
    base = circuit.binding_limbs(b"t" * 32, 1, b"p" * 32)
    assert len(base) == circuit.N_LIMBS and all(0 <= v < 1 << circuit.LIMB_BITS for v in base)
    assert circuit.N_LIMBS * circuit.LIMB_BITS >= 128
    assert circuit.binding_limbs(b"t" * 32, 2, b"p" * 32) != base
    assert circuit.binding_limbs(b"u" * 32, 1, b"p" * 32) != base
    assert circuit.binding_limbs(b"t" * 32, 1, b"q" * 32) != base
    assert circuit.binding_limbs(b"t" * 32, 1, b"p" * 32) == base


def test_felt_encoding_matches_ezkl() -> None:
    import ezkl

    assert circuit.felt(64) == ezkl.float_to_felt(1.0, 6)
    assert circuit.felt(-3) == ezkl.float_to_felt(-3.0, 0)
    assert circuit.felt_to_int(circuit.felt(-12345)) == -12345

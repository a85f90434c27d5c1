"""The proof's model commitment as a homomorphic KZG commitment (zkpot.bn254, zkpot.zkp.commitment).

Real ezkl on the shared small test task (tests/zkp_env.py) and its real honest proof.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from zkp_env import shared_env

from zkpot import bn254, model_codec
from zkpot.zkp import circuit, model
from zkpot.zkp import commitment as cm
from zkpot.zkp.task import Task

# ---------------------------------------------------------------------------- curve arithmetic


def test_constants_and_generator() -> None:
    assert bn254.P == 21888242871839275222246405745257275088696311157297823662689037894645226208583
    assert bn254.R == circuit.FIELD_MODULUS  # the group order is ezkl's scalar field
    assert bn254.is_on_curve(bn254.G1)
    assert bn254.mul(bn254.G1, bn254.R) is None  # order R
    assert bn254.mul(bn254.G1, bn254.R + 5) == bn254.mul(bn254.G1, 5)


def test_point_arithmetic() -> None:
    g = bn254.G1
    a, b = bn254.mul(g, 123456789), bn254.mul(g, 987654321)
    assert bn254.is_on_curve(a) and bn254.is_on_curve(b)
    assert bn254.add(a, None) == a and bn254.add(None, a) == a and bn254.mul(None, 7) is None
    assert bn254.add(a, bn254.neg(a)) is None
    assert bn254.add(a, a) == bn254.double(a) == bn254.mul(a, 2)
    assert bn254.add(a, b) == bn254.add(b, a) == bn254.mul(g, 123456789 + 987654321)
    assert bn254.mul(a, -3) == bn254.neg(bn254.mul(a, 3))
    assert bn254.linear_combination([a, b, g], [2, -1, 0]) == bn254.add(bn254.double(a), bn254.neg(b))
    assert not bn254.is_on_curve((1, 3))
    assert not bn254.is_on_curve((1, 2 + bn254.P))  # coordinates must be reduced


def test_encodings() -> None:
    a = bn254.mul(bn254.G1, 42)
    raw = bn254.to_bytes(a)
    assert len(raw) == 64 and bn254.from_bytes(raw) == a
    assert bn254.to_bytes(None) == bytes(64) and bn254.from_bytes(bytes(64)) is None
    with pytest.raises(bn254.PointError):
        bn254.from_bytes(raw[:32] + (int.from_bytes(raw[32:], "big") + 1).to_bytes(32, "big"))
    with pytest.raises(bn254.PointError):
        bn254.from_bytes(raw[:63])
    for pt in (a, bn254.neg(a)):  # halo2curves' compressed form: x little-endian, bit 255 = y odd
        comp = bytearray(pt[0].to_bytes(32, "little"))
        comp[31] |= (pt[1] & 1) << 7
        assert bn254.from_compressed_le(bytes(comp)) == pt


# ---------------------------------------------------------------------------- facts about ezkl


def _circuit_commitment(task: Task, net: model.Net, workdir) -> bytes:
    ev = circuit.evaluate(net, task.shard(0), [0] * circuit.N_LIMBS, task.norm_bound, task.paths["settings"], workdir,
                          task.paths["vk"], task.paths["srs"])
    return cm.witness_commitment(ev.witness)


def _grid_model(task: Task, seed: int, span: int = 16) -> model.Net:
    """Parameters on each tensor's committed grid (so sums of models quantize to sums of vectors)."""
    gen = torch.Generator().manual_seed(seed)
    net = model.Net(task.arch)
    with torch.no_grad():
        for name, shape, scale in cm.tensor_scales(task):
            step = 1 << max(scale - model_codec.FRAC_BITS, 0)  # the codec keeps 16 fractional bits
            ints = torch.randint(-span, span + 1, shape, generator=gen).double() * step
            net.get_parameter(name).copy_((ints / (1 << scale)).float())
    return net.eval()


def test_real_proof_commits_param_vector(tmp_path) -> None:
    """The commitment inside a real proof == kzg_commit(param_vector) == the witness's polycommit."""
    env = shared_env()
    task, honest = env.task, env.honest
    assert task.n_commitments == 1 and len(honest.model_commitment) == task.commitment_size
    settings = json.loads(task.paths["settings"].read_text())
    lay = cm.layout(task)
    assert settings["module_sizes"]["polycommit"] == [lay.length]
    vec = cm.param_vector(task, honest.model_params)
    assert vec.dtype == np.int64 and len(vec) == cm.vector_length(task) == 1210 <= lay.length
    assert [t.name for t in lay.tensors] == [name for name, _ in task.arch.layout]
    assert cm.commit_vector(task, vec) == cm.commit_vector_ezkl(task, vec) == honest.model_commitment
    assert bn254.from_bytes(honest.model_commitment) is not None  # a point on the curve, big-endian x || y
    net = model.decode(honest.model_params, task.arch)
    # deterministic (no blinding): the circuit gives the same bytes on every run
    assert _circuit_commitment(task, net, tmp_path / "a") == honest.model_commitment
    assert _circuit_commitment(task, net, tmp_path / "b") == honest.model_commitment
    assert cm.recommit_matches(task, honest.model_params, honest.model_commitment)
    assert cm.recommit_matches(task, net, honest.model_commitment)
    assert not cm.recommit_matches(task, task.initial_model, honest.model_commitment)
    assert not cm.recommit_matches(task, honest.model_params, honest.model_commitment[:-1])


def test_layout_scales_and_rounding(tmp_path) -> None:
    """Every tensor at param_scale (each enters the circuit once, as p + 0, not as a Gemm's bias at
    the product's scale) and ties rounded away from zero, as ezkl."""
    task = shared_env().task
    ps = int(task.manifest.param_scale)
    assert [s for _, _, s in cm.tensor_scales(task)] == [ps] * 4
    fixed = [(name, arr.copy()) for name, arr in model_codec.decode_fixed(task.initial_model)]
    rng = np.random.default_rng(3)
    for name, arr in fixed:  # put exact ties (half a quantum) into every tensor quantized below 16 bits
        scale = dict((n, s) for n, _, s in cm.tensor_scales(task))[name]
        if scale >= model_codec.FRAC_BITS:
            continue
        quantum = 1 << (model_codec.FRAC_BITS - scale)
        flat = arr.reshape(-1)
        pick = rng.choice(flat.size, size=min(6, flat.size), replace=False)
        flat[pick] = (np.abs(flat[pick]) // quantum) * quantum + quantum // 2
        flat[pick[:3]] *= -1
    data = model_codec.encode_fixed(fixed)
    vec = cm.param_vector(task, data)
    expected = _circuit_commitment(task, model.decode(data, task.arch), tmp_path)
    assert cm.commit_vector(task, vec) == expected
    # ties to even (numpy's rint) commits something else: the rounding matters and is ezkl's
    alt = np.concatenate([np.rint(model.decode(data, task.arch).get_parameter(n).detach().numpy().astype(np.float64)
                                  .ravel() * (1 << s)) for n, _, s in cm.tensor_scales(task)]).astype(np.int64)
    assert not np.array_equal(alt, vec)
    assert cm.commit_vector(task, alt) != expected


def test_layout_is_learned_from_the_circuit(tmp_path) -> None:
    """discover_layout is deterministic; a whole bias tensor of 0 (which, read directly by a Gemm,
    used to make ezkl fold it and commit another vector) commits what the layout predicts, since the
    circuit reads every parameter once as p + 0."""
    task = shared_env().task
    assert cm.discover_layout(task, tmp_path / "discover") == cm.layout(task)
    net = model.decode(task.initial_model, task.arch)
    with torch.no_grad():
        net.fc2.bias.zero_()
    assert _circuit_commitment(task, net, tmp_path / "zero-bias") == cm.commit_vector(task, cm.param_vector(task, net))


def test_python_commit_equals_kzg_commit() -> None:
    """commit_vector (pure Python over the SRS's Lagrange basis) == ezkl.kzg_commit, any field values."""
    task = shared_env().task
    n = cm.vector_length(task)
    rng = np.random.default_rng(9)
    vectors = [
        [0] * n,
        cm.param_vector(task, task.initial_model).tolist(),
        rng.integers(-(1 << 40), 1 << 40, n).tolist(),
        [int(v) for v in rng.integers(0, 1 << 62, n)] + [],
    ]
    vectors[3][:3] = [bn254.R - 1, -(bn254.R - 2), 1 << 300]  # reduced mod R, as ezkl's field does
    for vec in vectors:
        assert cm.commit_vector(task, vec) == cm.commit_vector_ezkl(task, vec)
    assert cm.zero_commitment(task) == cm.commit_vector_ezkl(task, [0] * n)
    # a vector longer than one column's usable rows becomes len // rows + 1 points, as in ezkl
    rows, basis = cm._srs_basis(task, 1 << 20)
    long = rng.integers(-100, 100, rows + 5).tolist()
    zero = bn254.from_bytes(cm._kzg_commit_paths(task, [0])[:64])
    lay = cm.Layout((cm.Tensor("x", (len(long),), 0, 0),), len(long), rows, (zero, zero), tuple(basis))
    ours = cm._commit(lay, long)
    assert len(ours) == 128 and ours == cm._kzg_commit_paths(task, long)


# ---------------------------------------------------------------------------- homomorphism


def test_sum_of_commitments_is_affine(tmp_path) -> None:
    """C(A) + C(B) = C(A + B) + K, K = C(0) (the 1s in the column's unusable rows), all via the circuit."""
    task = shared_env().task
    a, b = _grid_model(task, 1), _grid_model(task, 2)
    s = model.Net(task.arch)
    with torch.no_grad():
        for name, p in s.named_parameters():
            p.copy_(a.get_parameter(name) + b.get_parameter(name))
    ca, cb, cs = (_circuit_commitment(task, m, tmp_path / t) for m, t in ((a, "a"), (b, "b"), (s, "s")))
    va, vb = cm.param_vector(task, a), cm.param_vector(task, b)
    assert np.array_equal(va + vb, cm.param_vector(task, s))
    assert cs == cm.commit_vector(task, va + vb)
    k = cm.zero_commitment(task)
    assert bn254.from_bytes(k) is not None  # not the identity: the commitment is affine, not linear
    assert cm.combine([ca, cb]) != cs
    assert cm.combine([ca, cb]) == cm.combine([cs, k])
    assert cm.aggregate_matches(task, [ca, cb], None, va + vb)


def test_weighted_aggregate_of_three_models() -> None:
    env = shared_env()
    task = env.task
    models = [env.honest.model_params, task.initial_model, model.encode(_grid_model(task, 5, span=64))]
    commits = [cm.commit_vector(task, cm.param_vector(task, m)) for m in models]
    assert commits[0] == env.honest.model_commitment  # one of them is a real proof's commitment
    vecs = [cm.param_vector(task, m) for m in models]
    weights = [3, 1, 7]
    summed = sum(w * v for w, v in zip(weights, vecs, strict=True))
    assert cm.aggregate_matches(task, commits, weights, summed)
    assert cm.aggregate_matches(task, commits, None, sum(vecs))
    # a wrong vector fails: one unit off in one parameter, or the unweighted sum
    wrong = summed.copy()
    wrong[700] += 1
    assert not cm.aggregate_matches(task, commits, weights, wrong)
    assert not cm.aggregate_matches(task, commits, weights, sum(vecs))
    assert not cm.aggregate_matches(task, commits, [3, 1, 6], summed)
    # a swapped commitment fails: a participant that masks one model but proved another
    swapped = [commits[0], commits[1], cm.commit_vector(task, cm.param_vector(task, _grid_model(task, 6)))]
    assert not cm.aggregate_matches(task, swapped, weights, summed)
    # the next global model from the unmasked sum: integer floor at 16 fractional bits
    avg = cm.model_from_vector(task, summed, sum(weights))
    decoded = dict(model_codec.decode_fixed(avg))
    pos = 0
    for name, shape, scale in cm.tensor_scales(task):
        size = int(np.prod(shape))
        chunk = summed[pos : pos + size]
        pos += size
        want = (chunk << (16 - scale)) // 11 if scale <= 16 else chunk // (11 << (scale - 16))
        assert np.array_equal(decoded[name].ravel(), want), name


def test_model_from_vector_round_trip() -> None:
    env = shared_env()
    task = env.task
    vec = cm.param_vector(task, env.honest.model_params)
    back = cm.model_from_vector(task, vec, 1)
    assert np.array_equal(cm.param_vector(task, back), vec)
    assert cm.commit_vector(task, cm.param_vector(task, back)) == env.honest.model_commitment
    model.decode(back, task.arch)  # a valid model of the task's architecture


def test_bad_input_is_refused() -> None:
    env = shared_env()
    task = env.task
    vec = cm.param_vector(task, task.initial_model)
    c = cm.commit_vector(task, vec)
    with pytest.raises(cm.CommitmentError):
        cm.commit_vector(task, vec[:-1])
    with pytest.raises(cm.CommitmentError):
        cm.aggregate_matches(task, [c[:-1]], None, vec)
    off_curve = c[:32] + bytes(31) + b"\x01"
    with pytest.raises(cm.CommitmentError):
        cm.aggregate_matches(task, [off_curve], None, vec)
    with pytest.raises(cm.CommitmentError):
        cm.combine([c, c], [1])
    for divisor in (0, -1, 1.5):
        with pytest.raises(cm.CommitmentError):
            cm.model_from_vector(task, vec, divisor)  # type: ignore[arg-type]
    with pytest.raises(cm.CommitmentError):
        cm.model_from_vector(task, vec * (1 << 30), 1)  # leaves int32 at 16 fractional bits


def test_ledger_quantization_is_the_committed_vector() -> None:
    """The ledger's free-riding rule compares model_codec.quantized (integers, no ezkl): it must be
    exactly the vector a proof commits to, for any model, ties included."""
    task = shared_env().task
    rng = np.random.default_rng(11)
    for seed in range(3):
        fixed = [(name, arr.copy()) for name, arr in model_codec.decode_fixed(task.initial_model)]
        for _, arr in fixed:
            flat = arr.reshape(-1)
            flat[:] = rng.integers(-(1 << 16), 1 << 16, flat.size)
            flat[: 4 + seed] = (flat[: 4 + seed] >> 10 << 10) + (1 << 9)  # exact ties at scale 6
        data = model_codec.encode_fixed(fixed)
        want = cm.param_vector(task, data).astype(">i8").tobytes()
        assert model_codec.quantized(model_codec.decode_fixed(data), int(task.manifest.param_scale)) == want

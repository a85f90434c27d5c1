"""The accuracy circuit and everything ezkl: settings, witness, proof, verification.

Circuit: Acc(model)(x, y, binding, classes, target, norm_bound) -> (correct_count, binding * 1,
excess), exported to ONNX and compiled by ezkl (Halo2/KZG). Every input and output is a public
instance; the parameters are a private witness with visibility "polycommit": the proof carries a
KZG commitment to them (the first G1 point(s) of the proof bytes), which binds the proof to one model.

What the verifying key fixes and what it does not: ezkl commits EVERY constant of the graph in the
polycommit column, beside the weights, where the verifier cannot see it. So the circuit has no
constants of its own: the class indices, the win target and the norm bound are public inputs the
verifier supplies from the task, and the committed vector is the model's parameters and nothing
else (task creation checks it). A prover who edits the accuracy function therefore changes either
the circuit (another vk: refused) or a public input (rebuilt by the verifier: refused) — in both
modes, whether or not the parameters are ever revealed (issue 18.1).

Soundness rules the verifier follows:
- Only the proof bytes travel. Public instances are rebuilt from the task's own test set, the
  claimed count and the expected binding (`public_instances`), never read from a submitted file.
- The binding is sha256(task id, round, participant) split into 16 limbs of 16 bits (all 256 bits)
  so a proof cannot be replayed under another round, task or submitter.
- A sample counts as correct only if its label's logit is strictly above every other logit: a tie
  never counts (ezkl's SIGN op constrains sign(0) = 0, so a prover cannot turn a tie into a win).
- The model's size is part of the statement: excess = relu(sum of squared parameters - norm_bound)
  must be 0, norm_bound = n_params * weight_bound**2, so a proof shows ||w||_2 <= weight_bound *
  sqrt(n) for the committed model itself (not for revealed bytes, which secure aggregation never
  has). An L2 bound, because a per-weight (L-infinity) check costs one range decomposition per
  parameter: 36,143 rows (logrows 16, 4x the proving time) against 14,980 (logrows 14) measured on
  the devnet task; bounding each participant's L2 norm is also the usual robust-FL defence against
  boosted updates. Honest training still clips every weight to +-weight_bound, which implies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ezkl
import numpy as np
import torch
from torch import nn

from zkpot.zkp.arch import Net
from zkpot.zkp.data import Dataset

N_LIMBS = 16
LIMB_BITS = 16
# BN254 scalar field (the field of ezkl's Halo2 circuits)
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617
G1_UNCOMPRESSED_BYTES = 64  # a commitment inside the proof bytes: x || y, 32 bytes each
BINDING_MAX = [(1 << LIMB_BITS) - 1] * N_LIMBS  # the largest binding: what calibration must cover


class CircuitError(RuntimeError):
    """ezkl failed on something (message says what)."""


class CircuitRangeError(CircuitError):
    """A model's values leave the task's calibrated range: no witness can be generated."""


def norm_bound_of(n_params: int, weight_bound: float) -> float:
    """The proven bound on a model's squared L2 norm: every weight at ±weight_bound (module docstring)."""
    return n_params * weight_bound**2


def binding_limbs(task_id: bytes, round_: int, participant: bytes) -> list[int]:
    """sha256("zkpot/v1/binding" | task id | round | participant) as 16 limbs of 16 bits."""
    h = hashlib.sha256()
    h.update(b"zkpot/v1/binding\x00")
    for part in (task_id, struct.pack(">Q", round_), participant):
        h.update(struct.pack(">I", len(part)) + part)
    digest = h.digest()
    return [int.from_bytes(digest[2 * i : 2 * i + 2], "big") for i in range(N_LIMBS)]


class AccuracyCircuit(nn.Module):
    """(x, y, binding, classes, target, norm_bound) -> (samples classified correctly, binding, excess).

    correct_i = [logit_i[y_i] > logit_i[j] for every j != y_i]: the label's logit strictly beats
    every other one, so a tie never counts (stricter than argmax's first-index rule). Laid out as
    the label's logit (one-hot of y times the logits, summed), then one SIGN per (sample, class)
    of logit[y] - logit[j]: the label's own entry is exactly 0, so the row's signs sum to
    classes - 1 only when all the others are +1. ezkl lays this out in about half the rows of
    ArgMax + Equal (which sorts each row with a shuffle argument and looks the index up in a
    dynamic table): -17 % rows for the whole 16-sample circuit, and no lookup or shuffle columns.
    """

    def __init__(self, model: Net) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor, binding: torch.Tensor, classes: torch.Tensor,
                target: torch.Tensor, norm_bound: torch.Tensor) -> tuple[torch.Tensor, ...]:
        correct, excess = self.correct_per_sample(x, y, classes, target, norm_bound)
        # binding * 1 makes the binding an output, i.e. part of the relation the proof is about
        # (a scalar multiplier is not committed: measured, the vector holds the parameters only)
        return correct.sum(), binding * 1, excess

    def correct_per_sample(self, x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor, target: torch.Tensor,
                           norm_bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """1 where the label's logit strictly beats every other one, else 0; and the norm excess."""
        logits, excess = self.model_outputs(x, norm_bound)
        onehot = y.unsqueeze(1) == classes
        label_logit = (logits * onehot).sum(dim=1, keepdim=True)
        # integer (scale 0) signs and sums; the target (classes - 1) is an input, not a constant
        wins = torch.sign(label_logit - logits).long().sum(dim=1)
        return (wins == target).long(), excess

    def model_outputs(self, x: torch.Tensor, norm_bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the norm excess. Each parameter is read exactly once (p + 0, the 0 made
        from an input so nothing folds it): ezkl commits a parameter once per use, so a second
        direct use would commit it twice and double the vector."""
        zero = norm_bound - norm_bound
        params = {name: p + zero for name, p in self.model.named_parameters()}
        logits = self.model.forward_with(x, params)
        flat = torch.cat([p.reshape(-1) for p in params.values()])
        return logits, torch.relu((flat * flat).sum() - norm_bound)


class MaskedAccuracyCircuit(AccuracyCircuit):
    """The count over the real samples of a padded shard: sum_i mask_i * correct_i, the mask a
    public input (1: a test sample, 0: padding) the verifier rebuilds from the task, so padding
    can neither count nor hide a sample. Used by tasks whose shard size does not divide the test
    set (the last shard is padded to the shard shape: one circuit, one key pair for every shard)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, binding: torch.Tensor, classes: torch.Tensor,  # type: ignore[override]
                target: torch.Tensor, norm_bound: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        correct, excess = self.correct_per_sample(x, y, classes, target, norm_bound)
        return (correct * mask).sum(), binding * 1, excess


class ArgmaxAccuracyCircuit(AccuracyCircuit):
    """The naive export: sum_i [argmax(logits_i) == y_i] (ties go to the first index). Benchmarks only."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, binding: torch.Tensor,  # type: ignore[override]
                norm_bound: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """No classes or target inputs: ArgMax + Equal needs neither (the exporter would drop them)."""
        logits, excess = self.model_outputs(x, norm_bound)
        pred = torch.argmax(logits, dim=1)
        return (pred == y).sum(), binding * 1, excess


# ---------------------------------------------------------------------------- files for ezkl


def export_onnx(model: Net, test: Dataset, path: Path, naive_argmax: bool = False,
                mask: Sequence[int] | None = None) -> None:
    """Export Acc(model) for this test set's shape (opset 17, legacy exporter: what ezkl reads).

    naive_argmax: the ArgMax + Equal form instead (the benchmark's naive baseline; never a task's).
    mask: the masked count of a padded shard's task (MaskedAccuracyCircuit; only its shape matters).
    """
    import warnings

    x = torch.from_numpy(test.x)
    y = torch.from_numpy(test.y)
    b = torch.zeros((1, N_LIMBS), dtype=torch.float32)
    n_classes = model.arch.n_classes
    classes = torch.arange(n_classes).unsqueeze(0)
    target = torch.tensor([n_classes - 1])
    norm = torch.tensor([1.0])  # any value: only shapes and types reach the graph
    args: tuple[torch.Tensor, ...] = (x, y, b, classes, target, norm)
    names = ["x", "y", "binding", "classes", "target", "norm_bound"]
    cls: type[AccuracyCircuit] = AccuracyCircuit
    if naive_argmax:
        args, names, cls = (x, y, b, norm), ["x", "y", "binding", "norm_bound"], ArgmaxAccuracyCircuit
    elif mask is not None:
        args, names, cls = (*args, torch.tensor(list(mask), dtype=torch.int64)), [*names, "mask"], MaskedAccuracyCircuit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            cls(model).eval(),
            args,
            str(path),
            input_names=names,
            output_names=["correct", "binding_out", "excess"],
            opset_version=17,
            dynamo=False,
        )


def write_input(test: Dataset, limbs: Sequence[int], norm_bound: float, path: Path, n_classes: int,
                naive_argmax: bool = False, mask: Sequence[int] | None = None) -> None:
    """The circuit's inputs in order (naive_argmax: the benchmark's ArgMax form, without classes and
    target; mask: a padded shard's task, its per-sample mask last)."""
    constants = [] if naive_argmax else [list(range(n_classes)), [n_classes - 1]]
    masks = [] if mask is None else [[int(v) for v in mask]]
    data = {"input_data": [test.x.flatten().tolist(), test.y.tolist(), [float(v) for v in limbs], *constants,
                           [float(norm_bound)], *masks]}
    Path(path).write_text(json.dumps(data))


def run_args(scale: int, decomp_base: int, decomp_legs: int) -> ezkl.PyRunArgs:
    args = ezkl.PyRunArgs()
    args.input_visibility = "public"
    args.output_visibility = "public"
    args.param_visibility = "polycommit"
    args.input_scale = scale
    args.param_scale = scale
    args.decomp_base = decomp_base
    args.decomp_legs = decomp_legs
    return args


def make_settings(onnx_path: Path, input_path: Path, settings_path: Path, scale: int, decomp_base: int,
                  decomp_legs: int, max_logrows: int | None = None) -> dict:
    """gen_settings + calibrate_settings (skipping calibration costs ~4x, FIELD-NOTES)."""
    ezkl.gen_settings(str(onnx_path), str(settings_path), py_run_args=run_args(scale, decomp_base, decomp_legs))
    ok = ezkl.calibrate_settings(str(input_path), str(onnx_path), str(settings_path), "resources", scales=[scale],
                                 max_logrows=max_logrows)
    if not ok:
        raise CircuitError("ezkl calibrate_settings failed")
    return read_settings(settings_path)


def read_settings(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def compile_model(onnx_path: Path, settings_path: Path, out_path: Path) -> None:
    try:
        ok = ezkl.compile_circuit(str(onnx_path), str(out_path), str(settings_path))
    except Exception as exc:  # ezkl raises plain Exception/RuntimeError with a message
        raise CircuitError(f"compile_circuit: {exc}") from exc
    if not ok:
        raise CircuitError("compile_circuit failed")


def gen_witness(input_path: Path, compiled_path: Path, out_path: Path, vk_path: Path | None = None,
                srs_path: Path | None = None) -> dict:
    """Witness (and, given vk + srs, the polycommit of the parameters). CircuitRangeError if out of range."""
    try:
        ezkl.gen_witness(str(input_path), str(compiled_path), str(out_path),
                         vk_path=str(vk_path) if vk_path else None, srs_path=str(srs_path) if srs_path else None)
    except Exception as exc:
        msg = str(exc)
        if "decomposition" in msg or "too large" in msg or "range" in msg.lower():
            raise CircuitRangeError(f"model leaves the task's calibrated range: {msg}") from exc
        raise CircuitError(f"gen_witness: {msg}") from exc
    return json.loads(Path(out_path).read_text())


def witness_count(witness: dict) -> int:
    return felt_to_int(witness["outputs"][0][0])


def witness_excess(witness: dict) -> int:
    """How far the model's squared norm exceeds the task's bound (0: inside; proofs must show 0)."""
    return felt_to_int(witness["outputs"][2][0])


def n_commitments(witness: dict) -> int:
    commits = (witness.get("processed_params") or {}).get("polycommit") or []
    return sum(len(group) for group in commits)


def prove(witness_path: Path, compiled_path: Path, pk_path: Path, proof_path: Path, srs_path: Path) -> bytes:
    """Prove; returns the proof bytes only (the instances are rebuilt by whoever verifies)."""
    try:
        ezkl.prove(str(witness_path), str(compiled_path), str(pk_path), str(proof_path), str(srs_path))
    except Exception as exc:
        raise CircuitError(f"prove: {exc}") from exc
    return bytes(json.loads(Path(proof_path).read_text())["proof"])


# ---------------------------------------------------------------------------- public instances


def felt(value: int) -> str:
    """A field element as ezkl writes it: 32 bytes little-endian, hex."""
    return (int(value) % FIELD_MODULUS).to_bytes(32, "little").hex()


def felt_to_int(hex_felt: str) -> int:
    v = int.from_bytes(bytes.fromhex(hex_felt), "little")
    return v - FIELD_MODULUS if v > FIELD_MODULUS // 2 else v


def quantize(values: np.ndarray, scale: int) -> np.ndarray:
    # round half away from zero, as ezkl's quantize_float does
    scaled = np.asarray(values, dtype=np.float64) * (1 << scale)
    return (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int64)


def public_instances(test: Dataset, limbs: Sequence[int], claimed_correct: int, input_scale: int,
                     norm_bound: float, n_classes: int, mask: Sequence[int] | None = None) -> list[str]:
    """The instance column a valid proof must satisfy, in circuit order: inputs x, y, binding,
    classes, target, norm_bound (and a padded shard task's mask); outputs count, binding, excess
    (always 0: the model is in bounds)."""
    if len(limbs) != N_LIMBS:
        raise ValueError(f"binding must have {N_LIMBS} limbs")
    values: list[int] = []
    values += quantize(test.x.flatten(), input_scale).tolist()
    values += [int(v) for v in test.y]  # integer input: scale 0
    values += [int(v) << input_scale for v in limbs]
    values += list(range(n_classes))  # integer inputs: scale 0
    values += [n_classes - 1]
    values += quantize(np.array([norm_bound]), input_scale).tolist()
    if mask is not None:
        if len(mask) != len(test.y) or any(v not in (0, 1) for v in mask):
            raise ValueError("the mask must hold one 0 or 1 per sample")
        values += [int(v) for v in mask]  # integer input: scale 0
    values += [int(claimed_correct)]  # integer output: scale 0
    values += [int(v) << input_scale for v in limbs]
    values += [0]
    return [felt(v) for v in values]


def witness_instances(witness: dict) -> list[str]:
    return [v for t in witness["inputs"] for v in t] + [v for t in witness["outputs"] for v in t]


# ---------------------------------------------------------------------------- proofs


def proof_commitment(proof: bytes, count: int = 1) -> bytes:
    """The parameter commitment(s) the proof carries: its first `count` uncompressed G1 points."""
    size = G1_UNCOMPRESSED_BYTES * count
    if len(proof) < size:
        raise ValueError("proof too short to hold a commitment")
    return proof[:size]


def _write_proof(path: Path, proof: bytes, instances: list[str]) -> None:
    Path(path).write_text(json.dumps({"instances": [instances], "proof": list(proof)}))


def verify(proof: bytes, instances: list[str], settings_path: Path, vk_path: Path, srs_path: Path,
           workdir: Path | None = None) -> bool:
    """Verify proof bytes against instances WE built (the file holds nothing else of the prover's)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "proof.json"
        _write_proof(path, proof, instances)
        try:
            return bool(ezkl.verify(str(path), str(settings_path), str(vk_path), str(srs_path)))
        except Exception:  # ezkl raises on an unsatisfied constraint system / malformed proof
            return False


def swap_commitment(proof: bytes, witness_path: Path, workdir: Path | None = None) -> bytes:
    """The proof bytes with its parameter commitment replaced by the witness's polycommit."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "proof.json"
        _write_proof(path, proof, [])
        try:
            ezkl.swap_proof_commitments(str(path), str(witness_path))
        except Exception as exc:
            raise CircuitError(f"swap_proof_commitments: {exc}") from exc
        return bytes(json.loads(path.read_text())["proof"])


@dataclass(frozen=True)
class Evaluation:
    """A model run through the task's circuit (no proof): its count and its commitment."""

    correct: int
    witness: dict
    witness_path: Path

    @property
    def excess(self) -> int:
        return witness_excess(self.witness)


def evaluate(model: Net, test: Dataset, limbs: Sequence[int], norm_bound: float, settings_path: Path, workdir: Path,
             vk_path: Path | None = None, srs_path: Path | None = None,
             mask: Sequence[int] | None = None) -> Evaluation:
    """Export + compile with the task's settings + witness, in `workdir` (files kept for proving)."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = ("model.onnx", "model.compiled", "input.json", "witness.json")
    onnx_path, compiled, inp, wit = (workdir / n for n in names)
    export_onnx(model, test, onnx_path, mask=mask)
    compile_model(onnx_path, settings_path, compiled)
    write_input(test, limbs, norm_bound, inp, model.arch.n_classes, mask=mask)
    witness = gen_witness(inp, compiled, wit, vk_path, srs_path)
    return Evaluation(witness_count(witness), witness, wit)


def fresh_workdir(base: Path | None = None, prefix: str = "zkpot-") -> Path:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base or os.environ.get("ZKPOT_TMP")))

"""`zkpot task plan`: what a task will cost, before any key is made.

The circuit of one shard is built for real (the spec's module with its seeded initial weights,
exported and calibrated by ezkl as task creation does, no SRS, no keys: seconds), which gives its
exact rows, logrows and committed parameter count. Time, memory and key sizes come from a cost
model fitted on real proofs by bench/models.py (zkpot/zkp/cost_model.json):

    prove_s  = a * 2^logrows + b * rows          (one shard, one prover process)
    peak_mb  = c + d * 2^logrows
    pk_bytes = e * 2^logrows,  vk_bytes = f * 2^logrows

Figures are for the machine the coefficients were measured on (a 2-core machine of the kind the
project's CI runs on); machines of this kind differ 2-6x, so `bench/models.py --write-cost-model
FILE` refits them on yours and `--cost-model FILE` uses them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from zkpot.zkp import arch as arch_spec
from zkpot.zkp import circuit, data, model
from zkpot.zkp.data import Dataset
from zkpot.zkp.task import shard_count, shard_mask_of

COST_MODEL = Path(__file__).with_name("cost_model.json")
TX_OVERHEAD_BYTES = 400  # signature, keys, ids and framing of a SubmitProof, beside proofs and the model


@dataclass(frozen=True)
class Plan:
    spec: str
    params: int
    test_set_size: int
    shard_size: int
    shards: int
    rows: int                 # per shard
    logrows: int
    committed: int            # values the proof commits (must equal params)
    prove_s_per_shard: float
    prove_s_total: float      # every shard, on the cores the per-shard figure was measured on
    peak_mb_per_prover: float
    pk_bytes: int
    vk_bytes: int
    proof_bytes_per_shard: int
    tx_bytes: int             # a SubmitProof revealing the model (secure aggregation carries no model)
    cost_model: str

    def as_json(self) -> dict:
        return asdict(self)


def load_cost_model(path: Path | None = None) -> dict:
    return json.loads(Path(path or COST_MODEL).read_text())


def circuit_size(arch: arch_spec.Arch, shard: Dataset, scale: int, decomp_base: int, decomp_legs: int,
                 weight_bound: float, mask: list[int] | None = None) -> tuple[int, int, int]:
    """(rows, logrows, committed values) of the task's circuit for one shard, by ezkl's own calibration."""
    work = Path(tempfile.mkdtemp(prefix="zkpot-plan-"))
    try:
        net = model.init_model(arch, seed=7)
        model.clip_(net, weight_bound)
        circuit.export_onnx(net, shard, work / "m.onnx", mask=mask)
        circuit.write_input(shard, circuit.BINDING_MAX, circuit.norm_bound_of(arch.n_params, weight_bound),
                            work / "in.json", arch.n_classes, mask=mask)
        settings = circuit.make_settings(work / "m.onnx", work / "in.json", work / "settings.json", scale,
                                         decomp_base, decomp_legs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    committed = sum((settings.get("module_sizes") or {}).get("polycommit") or [0])
    return int(settings["num_rows"]), int(settings["run_args"]["logrows"]), int(committed)


def plan(spec: str, test_set_size: int, shard_size: int = 0, scale: int = 6,
         decomp_base: int = 1024, decomp_legs: int = 3, weight_bound: float = 1.0, test: Dataset | None = None,
         cost_model: Path | None = None) -> Plan:
    a = arch_spec.parse(spec)
    shard_size = shard_size or test_set_size
    if test_set_size < 1 or not 1 <= shard_size <= test_set_size:
        raise ValueError(f"shard size {shard_size} must be 1..{test_set_size} (the test set size)")
    if test is None:  # the digits' samples stand in for a shard's shape (only shapes reach the circuit)
        if not data.takes_digits(a):
            raise ValueError(f"{a.spec} takes {a.n_features} features and {a.n_classes} classes: plan it with "
                             f"--test-set FILE (your data's shape)")
        test = data.public_test_set(shard_size, 7)
    shard = Dataset(test.x[:shard_size], test.y[:shard_size])
    rows, logrows, committed = circuit_size(a, shard, scale, decomp_base, decomp_legs, weight_bound,
                                            shard_mask_of(test_set_size, shard_size, 0))
    cm = load_cost_model(cost_model)
    padded = 2.0**logrows
    per_shard = cm["prove_s_per_padded_row"] * padded + cm["prove_s_per_row"] * rows
    shards = shard_count(test_set_size, shard_size)
    proof = int(cm["proof_bytes"])
    return Plan(
        spec=a.spec, params=a.n_params, test_set_size=test_set_size, shard_size=shard_size, shards=shards,
        rows=rows, logrows=logrows, committed=committed, prove_s_per_shard=round(per_shard, 1),
        prove_s_total=round(per_shard * shards, 1),
        peak_mb_per_prover=round(cm["peak_mb_base"] + cm["peak_mb_per_padded_row"] * padded),
        pk_bytes=int(cm["pk_bytes_per_padded_row"] * padded), vk_bytes=int(cm["vk_bytes_per_padded_row"] * padded),
        proof_bytes_per_shard=proof, tx_bytes=proof * shards + 4 * a.n_params + TX_OVERHEAD_BYTES,
        cost_model=str(cost_model or COST_MODEL),
    )


def render(p: Plan) -> str:
    mb = 1024 * 1024
    lines = [
        f"model         {p.spec}: {p.params:,} parameters (the proof commits {p.committed:,} values)",
        f"test set      {p.test_set_size} samples in {p.shards} shard(s) of {p.shard_size}"
        + (" (the last padded, every count masked)" if p.test_set_size % p.shard_size else ""),
        f"circuit       {p.rows:,} rows per shard, logrows {p.logrows} (2^{p.logrows} = {2**p.logrows:,} padded rows)",
        f"proving       ~{p.prove_s_per_shard:g} s per shard, ~{p.prove_s_total:g} s for a submission's "
        f"{p.shards} shard(s); ~{p.peak_mb_per_prover:,.0f} MB peak per prover process",
        "              (each proof uses every core: parallel prove workers share them, the total stays)",
        f"keys          pk ~{p.pk_bytes / mb:,.1f} MB, vk ~{p.vk_bytes / 1024:,.1f} KB; SRS 2^{p.logrows} points",
        f"transaction   proof {p.proof_bytes_per_shard:,} B per shard; a SubmitProof ~{p.tx_bytes:,} B with the model",
        f"estimates     from {p.cost_model} (bench/models.py; machines differ 2-6x: refit with "
        f"--write-cost-model)",
    ]
    if p.committed != p.params:
        lines.append(f"REFUSED       the circuit commits {p.committed} values, not the model's {p.params}: "
                     f"zkpot task create would refuse it")
    return "\n".join(lines)

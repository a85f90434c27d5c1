"""Proof cost by architecture (issue 14): how proving grows with the model, measured on real tasks.

  python bench/models.py            # the growth curve: MLP hidden 16/32/64, CNN 4/8/16 channels, 16 samples
  python bench/models.py --quick    # two small specs at 4 samples (a smoke run, < 5 min)
  python bench/models.py --specs mlp:30-16-2 --test-set-size 8
  python bench/models.py --examples # examples/: digits MLP, digits CNN (shards of 4), breast-cancer CSV (6 x 19)

For each spec: a real task (zkpot.zkp.task.create_task: calibrated circuit, keys, self-test proof),
a model trained on a digits shard, one shard proof in a fresh spawned process (prove seconds, the
whole compile + witness + prove, and that process's peak RSS), verification seconds, proof and
transaction bytes, rows and logrows, pk/vk bytes; float accuracy on the whole held-out split against
the circuit's own count on it (witnesses, shard by shard: the quantized model as proven).

Ratios, measured in the same run: each spec's prove seconds against the smallest spec's (the growth
curve), and the cost model's prediction against the measurement: prove_s = a * 2^logrows + b * rows
and peak_mb = c + d * 2^logrows fitted by least squares over this run's specs (zkpot task plan uses
coefficients fitted so, zkpot/zkp/cost_model.json), with each spec's relative error. Ends with ONE
JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from zkpot.zkp.arch import Net
    from zkpot.zkp.data import Dataset
    from zkpot.zkp.task import Task

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_stats import peak_rss_mb  # noqa: E402

GROWTH = ("mlp:64-16-10", "mlp:64-32-10", "mlp:64-64-10", "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10",
          "seq:1x8x8-conv8k3-relu-avgpool2-flatten-linear10", "seq:1x8x8-conv16k3-relu-avgpool2-flatten-linear10")
QUICK = ("mlp:64-16-10", "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10")
ROUND, SEED = 1, 5


def _prove_in_child(task_dir: str, params: bytes, work: str) -> dict:
    """Compile, witness and prove shard 0 in this fresh process; its own peak RSS."""
    import torch

    from zkpot.zkp import prove
    from zkpot.zkp.task import load_task

    torch.set_num_threads(1)
    task = load_task(Path(task_dir))
    t0 = time.perf_counter()
    prove.compile_step(task, params, Path(work))
    witnessed = prove.witness_step(task, Path(work), 0, ROUND, b"\x01" * 32)
    t1 = time.perf_counter()
    proven = prove.prove_shard_step(task, Path(work), 0)
    t2 = time.perf_counter()
    return {"prove_s": t2 - t1, "shard_total_s": t2 - t0, "peak_rss_mb": peak_rss_mb(), "proof": proven.proof,
            "correct": witnessed.correct}


def _quantized_count(task: Task, net: Net, held: Dataset, work: Path) -> tuple[int, int]:
    """The circuit's own count over the held-out split, a shard-sized chunk at a time (witnesses,
    no proofs); a last partial chunk is left out, and the sample count says so."""
    from zkpot.zkp import circuit
    from zkpot.zkp.data import Dataset

    k = task.shard_size
    correct = n = 0
    for lo in range(0, len(held) - k + 1, k):
        chunk = Dataset(held.x[lo:lo + k], held.y[lo:lo + k])
        ev = circuit.evaluate(net, chunk, [0] * circuit.N_LIMBS, task.norm_bound, task.paths["settings"],
                              work / f"q{lo}")
        correct, n = correct + ev.correct, n + k
    return correct, n


def measure(spec: str, root: Path, test_set_size: int, shard_size: int, epochs: int,
            test_file: Path | None = None, train_file: Path | None = None) -> dict:
    """One spec on the digits, or on a user's files (the whole test file; shards from the training file)."""
    from zkpot.crypto import KeyPair
    from zkpot.zkp import circuit, data, model, prove, submission
    from zkpot.zkp.task import TaskConfig, create_task

    t0 = time.perf_counter()
    task = create_task(root / "task", KeyPair.from_seed(b"\x01" * 32),
                       TaskConfig(arch=spec, test_set_size=0 if test_file else test_set_size, shard_size=shard_size,
                                  min_correct=0, reference_models=1, rounds=1, test_set_file=test_file,
                                  calibration_file=train_file))
    create_s = time.perf_counter() - t0
    pool = None if train_file is None else data.load(train_file, task.arch)
    shard = data.dirichlet_shards(4, 100.0, seed=7, pool=pool)[0]  # near IID: a fair model of each architecture
    trained = prove.train_step(task, task.initial_model, shard, epochs, SEED)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # fresh: its VmHWM is this proof's
        child = pool.submit(_prove_in_child, str(task.dir), trained.model_params, str(root / "prove")).result()
    instances = task.instances(ROUND, b"\x01" * 32, child["correct"], 0)
    t0 = time.perf_counter()
    ok = circuit.verify(child["proof"], instances, task.paths["settings"], task.paths["vk"], task.paths["srs"], root)
    verify_s = time.perf_counter() - t0
    assert ok, f"{spec}: the shard proof does not verify"
    held = data.held_out(7) if test_file is None else task.test_set  # a user's test set: its own samples
    net = model.decode(trained.model_params, task.arch)
    q_correct, q_n = _quantized_count(task, net, held, root / "quantized")
    tx = submission.submit_proof_tx(KeyPair.from_seed(b"\x02" * 32), task.task_id, ROUND, child["proof"],
                                    circuit.proof_commitment(child["proof"], task.n_commitments), child["correct"],
                                    trained.model_params)
    settings = circuit.read_settings(task.paths["settings"])
    return {
        "spec": spec, "params": task.arch.n_params, "rows": int(settings["num_rows"]),
        "logrows": int(settings["run_args"]["logrows"]), "shards": task.n_shards, "shard_size": task.shard_size,
        "create_s": round(create_s, 1), "prove_s": round(child["prove_s"], 2),
        "shard_total_s": round(child["shard_total_s"], 2), "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "verify_s": round(verify_s, 3), "proof_bytes": len(child["proof"]), "tx_bytes": tx.ByteSize(),
        "pk_bytes": task.paths["pk"].stat().st_size, "vk_bytes": task.paths["vk"].stat().st_size,
        "float_acc_holdout": round(model.float_accuracy(net, held), 4),
        "quantized_acc_holdout": round(q_correct / q_n, 4), "quantized_samples": q_n,
    }


def fit(results: list[dict]) -> dict:
    """prove_s = a * 2^logrows + b * rows; peak_mb = c + d * 2^logrows (least squares, non-negative
    where the data allow), and each spec's relative error."""
    padded = np.array([2.0 ** r["logrows"] for r in results])
    rows = np.array([float(r["rows"]) for r in results])
    prove_s = np.array([r["prove_s"] for r in results])
    peak = np.array([r["peak_rss_mb"] for r in results])
    (a, b), *_ = np.linalg.lstsq(np.stack([padded, rows], axis=1), prove_s, rcond=None)
    if a < 0 or b < 0:  # too few distinct points: one term
        a, b = float(prove_s @ padded / (padded @ padded)), 0.0
    (c, d), *_ = np.linalg.lstsq(np.stack([np.ones_like(padded), padded], axis=1), peak, rcond=None)
    pk_per_row = float(np.median([r["pk_bytes"] / 2 ** r["logrows"] for r in results]))
    for r, p in zip(results, a * padded + b * rows, strict=True):
        r["prove_s_model"] = round(float(p), 2)
        r["prove_model_error"] = round(float(p) / r["prove_s"] - 1, 3)
    for r, m in zip(results, c + d * padded, strict=True):
        r["peak_mb_model_error"] = round(float(m) / r["peak_rss_mb"] - 1, 3)
    return {"prove_s_per_padded_row": float(a), "prove_s_per_row": float(b), "peak_mb_base": float(c),
            "peak_mb_per_padded_row": float(d), "pk_bytes_per_padded_row": pk_per_row,
            "proof_bytes": int(np.median([r["proof_bytes"] for r in results])),
            "vk_bytes_per_padded_row": float(np.median([r["vk_bytes"] / 2 ** r["logrows"] for r in results]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", default="", help="comma-separated specs (default: the growth curve)")
    ap.add_argument("--test-set-size", type=int, default=16)
    ap.add_argument("--shard-size", type=int, default=0, help="0: one shard of the whole test set")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-cost-model", type=Path, default=None, help="save the fitted coefficients here")
    ap.add_argument("--examples", action="store_true", help="the three tasks of examples/, as their READMEs make them")
    a = ap.parse_args()
    specs = [s for s in a.specs.split(",") if s] or list(QUICK if a.quick else GROWTH)
    size = 4 if a.quick and a.test_set_size == 16 else a.test_set_size
    root = Path(tempfile.mkdtemp(prefix="zkpot-bench-models-"))
    # (spec, test-set size, shard size, test file, training file) per run
    runs: list[tuple[str, int, int, Path | None, Path | None]] = [(s, size, a.shard_size, None, None) for s in specs]
    if a.examples:
        subprocess.run([sys.executable, str(REPO / "examples/breast-cancer/make_data.py"), "--out", str(root / "bc")],
                       check=True, capture_output=True)
        runs = [("mlp:64-16-10", 16, 0, None, None),
                ("seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10", 16, 4, None, None),
                ("mlp:30-16-2", 0, 19, root / "bc" / "test.csv", root / "bc" / "train.csv")]
    results = []
    try:
        for i, (spec, n, k, test_file, train_file) in enumerate(runs):
            r = measure(spec, root / f"s{i}", n, k, a.epochs, test_file, train_file)
            results.append(r)
            print(f"{spec:52s} {r['params']:6d} params  {r['rows']:7d} rows  logrows {r['logrows']:2d}  "
                  f"prove {r['prove_s']:6.2f} s  peak {r['peak_rss_mb']:6.0f} MB  verify {r['verify_s']:.3f} s  "
                  f"proof {r['proof_bytes']} B  acc float {r['float_acc_holdout']:.3f} / "
                  f"circuit {r['quantized_acc_holdout']:.3f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    coeffs = fit(results)
    base = min(results, key=lambda r: r["params"])
    for r in results:
        r["prove_vs_smallest"] = round(r["prove_s"] / base["prove_s"], 2)
        print(f"{r['spec']:52s} prove x{r['prove_vs_smallest']:5.2f} of the smallest; cost model "
              f"{r['prove_s_model']:6.2f} s ({r['prove_model_error']:+.0%}), "
              f"peak model {r['peak_mb_model_error']:+.0%}; "
              f"circuit accuracy {r['quantized_acc_holdout'] - r['float_acc_holdout']:+.3f} vs float")
    if a.write_cost_model:
        a.write_cost_model.write_text(json.dumps({**coeffs, "fitted_on": [r["spec"] for r in results],
                                                  "test_set_size": size}, indent=2) + "\n")
    print(json.dumps({"bench": "models", "test_set_size": size, "specs": results, "cost_model": coeffs,
                      "max_prove_model_error": max(abs(r["prove_model_error"]) for r in results),
                      "max_accuracy_drop": max(r["float_acc_holdout"] - r["quantized_acc_holdout"] for r in results)}))


if __name__ == "__main__":
    main()

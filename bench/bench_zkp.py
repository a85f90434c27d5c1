"""Measure the ZKPoT circuit: setup, prove, verify, commitment recompute, peak memory, proof size.

Each phase runs in its own process so its peak RSS is its own:
  python bench/bench_zkp.py create DIR [--test-set-size N]   # task creation (calibration, SRS, setup)
  python bench/bench_zkp.py prove DIR OUT.tx [--participant I] # train + witness + prove, writes a SubmitProof tx
  python bench/bench_zkp.py verify DIR OUT.tx                  # full verifier check (recommit + SNARK)
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from zkpot.crypto import KeyPair
from zkpot.v1 import types_pb2
from zkpot.zkp import data, prove, submission
from zkpot.zkp.task import TaskConfig, create_task, load_task
from zkpot.zkp.verify import check_submission


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["create", "prove", "verify"])
    p.add_argument("dir", type=Path)
    p.add_argument("tx", type=Path, nargs="?")
    p.add_argument("--test-set-size", type=int, default=TaskConfig().test_set_size)
    p.add_argument("--participant", type=int, default=0)
    a = p.parse_args()
    out: dict = {"phase": a.phase}
    t0 = time.perf_counter()
    if a.phase == "create":
        task = create_task(a.dir, KeyPair.from_seed(b"\x01" * 32), TaskConfig(test_set_size=a.test_set_size))
        out.update(json.loads((a.dir / "task.json").read_text()))
        out["pk_mb"] = task.paths["pk"].stat().st_size / 2**20
        out["vk_kb"] = task.paths["vk"].stat().st_size / 2**10
    elif a.phase == "prove":
        task = load_task(a.dir)
        out["load_task_s"] = time.perf_counter() - t0
        key = KeyPair.from_seed(bytes([10 + a.participant]) * 32)
        shard = data.dirichlet_shards(4, 0.5, 7)[a.participant]
        r = prove.prove_round(task, task.initial_model, shard, 1, key.public, a.dir / f"work{a.participant}")
        tx = submission.submit_proof_tx(key, task.task_id, 1, r.proof, r.model_commitment, r.claimed_correct,
                                   r.model_params)
        a.tx.write_bytes(tx.SerializeToString())
        out.update({k: v for k, v in r.__dict__.items() if k.endswith("seconds") or k.endswith("accuracy")})
        out["proof_bytes"] = len(r.proof)
        out["tx_bytes"] = len(tx.SerializeToString())
    else:
        task = load_task(a.dir)
        out["load_task_s"] = time.perf_counter() - t0
        tx = types_pb2.Transaction.FromString(a.tx.read_bytes())
        t1 = time.perf_counter()
        v = check_submission(task, tx, a.dir)
        out.update(valid=v.valid, check_s=time.perf_counter() - t1, **v.timings)
    out["total_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_mb()
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()

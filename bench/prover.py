"""Prover benchmark: proof time, verify time, memory, proof size, and four ratios measured in one run.

  python bench/prover.py            # 64 test samples: 4 shards of 16 (the task circuit) vs one proof of 64
  python bench/prover.py --test-set-size 90 --shard-size 9 --reps 1   # the best case for sharding on 2 cores
  python bench/prover.py --quick    # 2 samples in shards of 1: a smoke run (< 60 s), figures meaningless

Ratios (each against a baseline measured in the same run, on this machine):
- service overhead: ProveRound through a real `zkpot prover serve` process (gRPC, worker pool) against
  the same steps called directly (torch training, torch.onnx export, ezkl compile_circuit, gen_witness
  and prove per shard) in a pool of the same number of plain worker processes.
- rows: the task's circuit (calibrated scales and ranges, shard-sized, the strict comparison count)
  against a naive export of the same model (ArgMax + Equal, ezkl's default settings, no calibration,
  the whole test set in one circuit); the quantized correct counts of both are reported beside it.
  Also the ArgMax form under the task's own settings at the shard shape: what the cheaper count saves.
- sharded proving: S shard proofs in W worker processes against one proof over the whole test set
  (its own task: same model, same test set, one circuit of that size). Both do the same work per
  sample, so on a fixed number of cores the ratio comes from padding to powers of two (printed as
  the padded-rows ratio 2^mono_logrows / (S * 2^shard_logrows)), from the n log n FFTs of the bigger
  circuit and from how evenly the S proofs fill the W workers (ceil(S / W) waves).
  With a power-of-two number of shards the padded ratio is at most 1 (64 samples in 4 shards of 16:
  4 x 2^14 rows against 2^16: measured 1.05x); it exceeds 1 only when the single circuit spills just
  over a power of two, e.g. `--test-set-size 90 --shard-size 9` (10 x 2^13 against 2^17: 1.6x padded,
  measured 1.39x CPU, 1.25x wall under load). A proof here costs ~0.20 ms of CPU per padded row plus
  ~0.10 ms per used row, which caps the CPU ratio on a fixed core count near 1.66x
  (docs/zkpot-statement.md, "Sharded vs one proof on 2 cores").
- verification: full submission checks (recommit + every shard's SNARK) and SNARK-only checks per
  second, in one process with one rayon thread (per core), the task loaded once.
Ends with ONE JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_stats import peak_rss_mb  # noqa: E402

ROUND, SEED = 1, 5


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # as the prover's workers do (deterministic training)


def _init_direct_worker(task_dir: str, threads: int) -> None:
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # as the prover service's workers
    _init_worker()
    _task(task_dir)


def _pid() -> int:
    return os.getpid()


_tasks: dict[str, object] = {}


def _task(task_dir: str):
    """The task, loaded once per worker process (as the prover's workers do)."""
    from zkpot.zkp.task import load_task

    if task_dir not in _tasks:
        _tasks[task_dir] = load_task(Path(task_dir))
    return _tasks[task_dir]


# ---------------------------------------------------------------- direct path (no zkpot service)


def direct_train(task_dir: str, shard_path: str, epochs: int) -> tuple[bytes, float]:
    """Local training exactly as the service does it (same code, seed and thread count)."""
    from zkpot.zkp import data, model

    task = _task(task_dir)
    t0 = time.perf_counter()
    net = model.train(model.decode(task.initial_model, task.arch), data.load(Path(shard_path)), epochs, SEED,
                      task.weight_bound)
    return model.encode(net), time.perf_counter() - t0


def direct_compile(task_dir: str, params: bytes, work: str) -> float:
    """torch.onnx export of the shard-shaped circuit + ezkl.compile_circuit."""
    import ezkl

    from zkpot.zkp import circuit, model

    task = _task(task_dir)
    w = Path(work)
    w.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    circuit.export_onnx(model.decode(params, task.arch), task.shard(0), w / "model.onnx", mask=task.shard_mask(0))
    assert ezkl.compile_circuit(str(w / "model.onnx"), str(w / "model.compiled"), str(task.paths["settings"]))
    return time.perf_counter() - t0


def direct_witness(task_dir: str, work: str, index: int, participant: bytes) -> float:
    import ezkl

    from zkpot.zkp import circuit

    task = _task(task_dir)
    w = Path(work)
    d = w / f"s{index}"
    d.mkdir(exist_ok=True)
    circuit.write_input(task.shard(index), task.binding(ROUND, participant), task.norm_bound, d / "input.json",
                        task.arch.n_classes, mask=task.shard_mask(index))
    t0 = time.perf_counter()
    ezkl.gen_witness(str(d / "input.json"), str(w / "model.compiled"), str(d / "witness.json"),
                     vk_path=str(task.paths["vk"]), srs_path=str(task.paths["srs"]))
    return time.perf_counter() - t0


def direct_prove(task_dir: str, work: str, index: int) -> tuple[float, int, float, float]:
    """ezkl.prove of one shard: (seconds, proof bytes, this process's peak RSS in MB, CPU seconds)."""
    import ezkl

    w = Path(work)
    d = w / f"s{index}"
    t0, c0 = time.perf_counter(), time.process_time()
    ezkl.prove(str(d / "witness.json"), str(w / "model.compiled"), str(Path(task_dir) / "pk.key"),
               str(d / "proof.json"), str(Path(task_dir) / "kzg.srs"))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, len(json.loads((d / "proof.json").read_text())["proof"]), peak_rss_mb(), cpu


def direct_round(pool: ProcessPoolExecutor, task_dir: Path, shard_path: Path, epochs: int, participant: bytes,
                 n_shards: int, work: Path) -> dict:
    """One whole round called directly, shards in parallel across the pool's workers."""
    t0 = time.perf_counter()
    params, train_s = pool.submit(direct_train, str(task_dir), str(shard_path), epochs).result()
    compile_s = pool.submit(direct_compile, str(task_dir), params, str(work)).result()
    wits = [pool.submit(direct_witness, str(task_dir), str(work), i, participant) for i in range(n_shards)]
    witness_s = [f.result() for f in wits]
    t_prove = time.perf_counter()
    proofs = [pool.submit(direct_prove, str(task_dir), str(work), i) for i in range(n_shards)]
    results = [f.result() for f in proofs]
    t_end = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)
    return {"round_s": t_end - t0, "prove_wall_s": t_end - t_prove, "train_s": train_s, "compile_s": compile_s,
            "witness_s": sum(witness_s), "shard_prove_s": [r[0] for r in results],
            "proof_bytes": [r[1] for r in results], "peak_rss_mb": max(r[2] for r in results),
            "prove_cpu_s": sum(r[3] for r in results), "params": params}


def mono_prove(task_dir: str, params: bytes, work: str, participant: bytes) -> dict:
    """One proof over the whole test set (its own task/circuit), in a fresh process: time and peak RSS."""
    _init_worker()
    from zkpot.zkp import circuit, model
    from zkpot.zkp.task import load_task

    task = load_task(Path(task_dir))
    w = Path(work)
    w.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ev = circuit.evaluate(model.decode(params, task.arch), task.test_set, task.binding(ROUND, participant),
                          task.norm_bound, task.paths["settings"], w, task.paths["vk"], task.paths["srs"])
    t1, c1 = time.perf_counter(), time.process_time()
    proof = circuit.prove(ev.witness_path, w / "model.compiled", task.paths["pk"], w / "proof.json", task.paths["srs"])
    t2, c2 = time.perf_counter(), time.process_time()
    ok = circuit.verify(proof, task.instances(ROUND, participant, ev.correct), task.paths["settings"],
                        task.paths["vk"], task.paths["srs"], w)
    return {"witness_s": t1 - t0, "prove_s": t2 - t1, "prove_cpu_s": c2 - c1, "correct": ev.correct, "verified": ok,
            "proof_bytes": len(proof), "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------- the service path


def start_prover(task_dir: Path, shard_path: Path, workers: int, root: Path) -> tuple[subprocess.Popen, str, Path]:
    from zkpot.ports import free_port

    port = free_port()
    log_path = root / "prover.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "zkpot.cli", "prover", "serve", "--task-dir", str(task_dir),
                             "--shard", str(shard_path), "--listen", f"127.0.0.1:{port}", "--node", "bench",
                             "--prove-workers", str(workers), "--workdir", str(root)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, f"127.0.0.1:{port}", log_path


async def wait_healthy(proc: subprocess.Popen, target: str, log_path: Path, timeout_s: float = 120.0) -> None:
    from zkpot import grpcutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prover exited {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            await grpcutil.wait_healthy(target, timeout_s=2.0)
            return
        except TimeoutError:
            continue
    raise RuntimeError("prover not healthy in time")


async def service_round(target: str, request) -> tuple[object, float]:
    from services.prover.client import prove_round

    t0 = time.perf_counter()
    result = await prove_round(target, request, timeout_s=1800)
    return result, time.perf_counter() - t0


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- rows: naive export vs the task's circuit


def naive_rows(params: bytes, task_dir: str, work: str) -> dict:
    """The same model and test set, exported naively: ezkl defaults, no calibration, one circuit for all."""
    _init_worker()
    import ezkl

    from zkpot.zkp import circuit, model
    from zkpot.zkp.task import load_task

    task = load_task(Path(task_dir))
    w = Path(work)
    w.mkdir(parents=True, exist_ok=True)
    net = model.decode(params, task.arch)
    out = {}
    for name, test in (("whole_set", task.test_set), ("one_shard", task.shard(0))):
        circuit.export_onnx(net, test, w / f"{name}.onnx", naive_argmax=True)
        circuit.write_input(test, task.binding(ROUND, b"\x00" * 32), task.norm_bound, w / f"{name}.json",
                            task.arch.n_classes, naive_argmax=True)
        args = ezkl.PyRunArgs()  # defaults: scales 7, lookup range ±32768, decomposition 16384^2
        args.input_visibility, args.output_visibility, args.param_visibility = "public", "public", "polycommit"
        assert ezkl.gen_settings(str(w / f"{name}.onnx"), str(w / f"{name}.settings"), py_run_args=args)
        settings = json.loads((w / f"{name}.settings").read_text())
        assert ezkl.compile_circuit(str(w / f"{name}.onnx"), str(w / f"{name}.compiled"), str(w / f"{name}.settings"))
        ezkl.gen_witness(str(w / f"{name}.json"), str(w / f"{name}.compiled"), str(w / f"{name}.wit"))
        wit = json.loads((w / f"{name}.wit").read_text())
        out[name] = {"rows": int(settings["num_rows"]), "logrows": int(settings["run_args"]["logrows"]),
                     "correct": circuit.witness_count(wit), "samples": len(test)}
    # the ArgMax form with the task's own (calibrated) settings procedure, at the shard shape
    run = json.loads(task.paths["settings"].read_text())["run_args"]
    s = circuit.make_settings(w / "one_shard.onnx", w / "one_shard.json", w / "argmax.settings",
                              int(run["input_scale"]), int(run["decomp_base"]), int(run["decomp_legs"]))
    out["argmax_task_settings"] = {"rows": int(s["num_rows"]), "logrows": int(s["run_args"]["logrows"])}
    return out


# ---------------------------------------------------------------- verification throughput (one core)


def verify_rate(task_dir: str, tx_bytes: bytes, seconds: float) -> dict:
    """Submissions and SNARKs verified per second in this process (RAYON_NUM_THREADS=1 set by the parent)."""
    _init_worker()
    from zkpot.v1 import types_pb2
    from zkpot.zkp import circuit, verify
    from zkpot.zkp.task import load_task

    task = load_task(Path(task_dir))  # settings, vk, test set: once
    tx = types_pb2.Transaction.FromString(tx_bytes)
    shards = verify.shard_proofs(task, tx.submit_proof)
    assert not isinstance(shards, verify.Verdict), shards
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < seconds:
            v = verify.check_submission(task, tx, work)
            assert v.valid, v
            n += 1
        full_s = (time.perf_counter() - t0) / n
        insts = [task.instances(ROUND, tx.submit_proof.participant, c, i) for i, (_, c) in enumerate(shards)]
        m, t0 = 0, time.perf_counter()
        while m < 4 or time.perf_counter() - t0 < seconds:
            i = m % len(shards)
            assert circuit.verify(shards[i][0], insts[i], task.paths["settings"], task.paths["vk"],
                                  task.paths["srs"], work)
            m += 1
        snark_s = (time.perf_counter() - t0) / m
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"submission_s": full_s, "snark_s": snark_s, "shards": len(shards)}


# ---------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures meaningless")
    p.add_argument("--test-set-size", type=int, default=None)
    p.add_argument("--shard-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="prove workers (service and direct pool)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--reps", type=int, default=None, help="service/direct rounds each (alternating)")
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args()
    n = a.test_set_size or (2 if a.quick else 64)
    k = a.shard_size or (1 if a.quick else 16)
    epochs = a.epochs or 3
    reps = a.reps or (1 if a.quick else 2)
    verify_s = 1.0 if a.quick else 5.0

    from zkpot import model_codec
    from zkpot.crypto import KeyPair
    from zkpot.v1 import prover_pb2
    from zkpot.zkp import data, submission
    from zkpot.zkp.task import TaskConfig, create_task
    from zkpot.zkp.verify import check_submission

    root = Path(tempfile.mkdtemp(prefix="zkpot-bench-prover-", dir=a.workdir))
    proc = None
    load_start = os.getloadavg()[0]  # other work on the machine skews every wall-clock figure: recorded
    try:
        say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
        publisher, alice = KeyPair.from_seed(b"\x01" * 32), KeyPair.from_seed(b"\x02" * 32)
        base = dict(min_correct=0, reference_models=1)
        say(f"creating the task: {n} test samples in shards of {k}")
        t0 = time.perf_counter()
        task = create_task(root / "task", publisher, TaskConfig(test_set_size=n, shard_size=k, **base))
        create_sharded_s = time.perf_counter() - t0
        say(f"creating the monolithic baseline task: one circuit over {n} samples")
        t0 = time.perf_counter()
        mono = create_task(root / "mono", publisher, TaskConfig(test_set_size=n, **base))
        create_mono_s = time.perf_counter() - t0
        shard_path = root / "shard.npz"
        data.save(shard_path, data.dirichlet_shards(4, 0.5, seed=7)[0])

        ctx = get_context("spawn")
        # plain workers that load the task once at start, as the service's workers do
        pool = ProcessPoolExecutor(max_workers=a.workers, mp_context=ctx, initializer=_init_direct_worker,
                                   initargs=(str(task.dir), max(1, (os.cpu_count() or 1) // a.workers)))
        for f in [pool.submit(_pid) for _ in range(a.workers)]:
            f.result()
        say(f"starting the prover service ({a.workers} workers)")
        proc, target, log_path = start_prover(task.dir, shard_path, a.workers, root)
        asyncio.run(wait_healthy(proc, target, log_path))
        request = prover_pb2.ProveRoundRequest(task_id=task.task_id, round=ROUND, participant=alice.public,
                                               global_model=task.initial_model, local_epochs=epochs, seed=SEED)
        direct_runs, service_runs = [], []
        for rep in range(reps):  # alternate which goes first, keep each one's best
            say(f"round {rep + 1}/{reps}: direct ezkl calls and ProveRound through the service")
            for first in ((True, False) if rep % 2 == 0 else (False, True)):
                if first:
                    direct_runs.append(direct_round(pool, task.dir, shard_path, epochs, alice.public, task.n_shards,
                                                    root / f"direct{rep}"))
                else:
                    service_runs.append(asyncio.run(service_round(target, request)))
        pool.shutdown()
        stop(proc)
        proc = None
        result = service_runs[-1][0]
        direct = min(direct_runs, key=lambda d: d["round_s"])
        service_s = min(s for _, s in service_runs)
        assert result.model_cid == model_codec.model_cid(direct["params"]), "service and direct trained apart"

        tx = submission.submit_proof_tx(alice, task.task_id, ROUND, result.proof, result.model_commitment,
                                   result.claimed_correct, result.model_params, shards=list(result.shards))
        verdict = check_submission(task, tx, root)
        assert verdict.valid, verdict
        tx_bytes = tx.SerializeToString()

        say("one proof over the whole test set (monolithic baseline)")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as one:
            mono_r = one.submit(mono_prove, str(mono.dir), direct["params"], str(root / "mono-work"),
                                alice.public).result()
            assert mono_r["verified"]
            say("naive export (ezkl defaults) of the same model")
            naive = one.submit(naive_rows, direct["params"], str(task.dir), str(root / "naive")).result()
        say("verification throughput, one core")
        os.environ["RAYON_NUM_THREADS"] = "1"  # inherited by the spawned child: a per-core figure
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as one:
                ver = one.submit(verify_rate, str(task.dir), tx_bytes, verify_s).result()
        finally:
            os.environ.pop("RAYON_NUM_THREADS", None)
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)

    rows = int(task.params["num_rows"])
    logrows = int(task.manifest.logrows)
    s = task.n_shards
    fig = {
        "bench": "prover",
        "quick": a.quick,
        "test_set_size": n, "shard_size": k, "shards": s, "prove_workers": a.workers, "cpus": os.cpu_count(),
        "insecure_dev_srs": bool(task.manifest.insecure_dev_srs),
        # proof time / size / memory
        "shard_prove_s": round(sum(direct["shard_prove_s"]) / s, 3),
        "round_prove_wall_s": round(direct["prove_wall_s"], 3),
        "service_round_s": round(service_s, 3),
        "direct_round_s": round(direct["round_s"], 3),
        "overhead_vs_raw_ezkl": round(service_s / direct["round_s"], 3),
        "proof_bytes_per_shard": direct["proof_bytes"][0],
        "proof_bytes_sent": sum(len(sh.proof) for sh in tx.submit_proof.shards) + len(tx.submit_proof.proof),
        "submit_tx_bytes": len(tx_bytes),
        "prove_peak_rss_mb_per_worker": round(direct["peak_rss_mb"], 1),
        "mono_prove_peak_rss_mb": round(mono_r["peak_rss_mb"], 1),
        "memory_ratio_mono_vs_worker": round(mono_r["peak_rss_mb"] / direct["peak_rss_mb"], 2),
        # sharded vs one proof
        "mono_prove_s": round(mono_r["prove_s"], 3),
        "mono_logrows": int(mono.manifest.logrows),
        "sharded_speedup_vs_mono": round(mono_r["prove_s"] / direct["prove_wall_s"], 2),
        "mono_rows": int(mono.params["num_rows"]),
        # the structural bound on a fixed core count: padded rows of one proof vs all shards'
        "padded_rows_ratio_mono_vs_sharded": round(2 ** int(mono.manifest.logrows) / (s * 2**logrows), 2),
        "shard_waves": -(-s // a.workers),
        # CPU seconds (all threads) spent proving: the work itself, whatever else the machine runs
        "sharded_prove_cpu_s": round(direct["prove_cpu_s"], 2), "mono_prove_cpu_s": round(mono_r["prove_cpu_s"], 2),
        "cpu_ratio_mono_vs_sharded": round(mono_r["prove_cpu_s"] / direct["prove_cpu_s"], 2),
        # rows
        "rows_per_shard": rows, "logrows": logrows,
        "naive_rows": naive["whole_set"]["rows"], "naive_logrows": naive["whole_set"]["logrows"],
        "rows_ratio_naive_vs_shard": round(naive["whole_set"]["rows"] / rows, 2),
        "padded_rows_ratio_naive_vs_shard": round(2 ** naive["whole_set"]["logrows"] / 2**logrows, 2),
        "rows_ratio_naive_vs_all_shards": round(naive["whole_set"]["rows"] / (rows * s), 2),
        "padded_rows_ratio_naive_vs_all_shards": round(2 ** naive["whole_set"]["logrows"] / (s * 2**logrows), 2),
        "naive_one_shard_rows": naive["one_shard"]["rows"], "naive_one_shard_logrows": naive["one_shard"]["logrows"],
        "rows_ratio_same_shape": round(naive["one_shard"]["rows"] / rows, 2),
        "argmax_rows_task_settings": naive["argmax_task_settings"]["rows"],
        "argmax_logrows_task_settings": naive["argmax_task_settings"]["logrows"],
        "rows_ratio_argmax_vs_strict_count": round(naive["argmax_task_settings"]["rows"] / rows, 3),
        "quantized_correct": int(result.claimed_correct), "naive_quantized_correct": naive["whole_set"]["correct"],
        "mono_quantized_correct": mono_r["correct"],
        "float_accuracy": round(result.float_accuracy, 4), "quantized_accuracy": round(result.quantized_accuracy, 4),
        # verification
        "verify_submission_s": round(ver["submission_s"], 4),
        "verify_snark_s": round(ver["snark_s"], 4),
        "verify_snark_per_s_per_core": round(1 / ver["snark_s"], 1),
        "verify_shard_proofs_per_s_per_core": round(ver["shards"] / ver["submission_s"], 1),
        "verify_submissions_per_s_per_core": round(1 / ver["submission_s"], 2),
        "create_task_s": round(create_sharded_s, 1), "create_mono_task_s": round(create_mono_s, 1),
        "load_avg_start": round(load_start, 2), "load_avg_end": round(os.getloadavg()[0], 2),
    }
    print(f"machine: {os.cpu_count()} cpus, load average {fig['load_avg_start']} at start, "
          f"{fig['load_avg_end']} at end")
    print(f"task: {n} samples in {s} shard(s) of {k}, logrows {logrows} ({rows} rows), "
          f"{'INSECURE dev SRS' if fig['insecure_dev_srs'] else 'ceremony SRS'}; {a.workers} prove workers")
    print(f"proof: {fig['shard_prove_s']} s per shard, {fig['round_prove_wall_s']} s for all {s} (wall); "
          f"{fig['proof_bytes_per_shard']} B per shard proof, {fig['proof_bytes_sent']} B of proofs sent, "
          f"SubmitProof tx {fig['submit_tx_bytes']} B; peak RSS {fig['prove_peak_rss_mb_per_worker']} MB per worker")
    print(f"accuracy: float {fig['float_accuracy']}, quantized {fig['quantized_accuracy']} "
          f"({fig['quantized_correct']}/{n}); naive export {fig['naive_quantized_correct']}/{n}, "
          f"monolithic {fig['mono_quantized_correct']}/{n}")
    print(f"service overhead: ProveRound {service_s:.2f} s vs direct ezkl {direct['round_s']:.2f} s "
          f"= {fig['overhead_vs_raw_ezkl']}x (target <= 1.10)")
    print(f"rows: naive export {fig['naive_rows']} rows (logrows {fig['naive_logrows']}) vs {rows} per shard "
          f"(logrows {logrows}) = {fig['rows_ratio_naive_vs_shard']}x rows, {fig['padded_rows_ratio_naive_vs_shard']}x "
          f"padded rows (target >= 2); same {k}-sample shape: {fig['rows_ratio_same_shape']}x rows, "
          f"{2 ** fig['naive_one_shard_logrows'] // 2**logrows}x padded; all {s} shards together: "
          f"{fig['rows_ratio_naive_vs_all_shards']}x rows, {fig['padded_rows_ratio_naive_vs_all_shards']}x padded")
    print(f"correct count: ArgMax + Equal with the task's settings {fig['argmax_rows_task_settings']} rows (logrows "
          f"{fig['argmax_logrows_task_settings']}) vs the strict comparison {rows} = "
          f"{fig['rows_ratio_argmax_vs_strict_count']}x")
    print(f"sharded: {s} shards in {a.workers} workers {fig['round_prove_wall_s']} s vs one proof over {n} "
          f"{fig['mono_prove_s']} s (logrows {fig['mono_logrows']}) = {fig['sharded_speedup_vs_mono']}x "
          f"(target >= 1.6); padded rows 2^{fig['mono_logrows']} vs {s} x 2^{logrows} = "
          f"{fig['padded_rows_ratio_mono_vs_sharded']}x, {fig['shard_waves']} wave(s) of shards; "
          f"CPU {fig['mono_prove_cpu_s']} s vs {fig['sharded_prove_cpu_s']} s = "
          f"{fig['cpu_ratio_mono_vs_sharded']}x; peak RSS {fig['mono_prove_peak_rss_mb']} MB vs "
          f"{fig['prove_peak_rss_mb_per_worker']} MB per worker")
    print(f"verify (one core, vk loaded once): SNARK {fig['verify_snark_s']} s = {fig['verify_snark_per_s_per_core']} "
          f"proofs/s (target >= 10); whole submission (recommit + {s} SNARKs) {fig['verify_submission_s']} s = "
          f"{fig['verify_shard_proofs_per_s_per_core']} shard proofs/s")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())

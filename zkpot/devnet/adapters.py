"""The devnet's glue to the task publisher, the data shards and the observers' queries."""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from zkpot import grpcutil
from zkpot.crypto import KeyPair
from zkpot.devnet.plan import DevnetPlan
from zkpot.v1 import ledger_pb2, ledger_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from zkpot.devnet.network import DevnetConfig
    from zkpot.devnet.progress import Progress


def task_arch(config: DevnetConfig) -> Any:  # zkpot.zkp.arch.Arch
    """The architecture the run's task has (--task's, --arch's or the default); SystemExit if unusable."""
    from zkpot.zkp import arch
    from zkpot.zkp.task import MANIFEST_FILE, TaskConfig

    try:
        if config.task_dir is not None:
            # the manifest's spec alone: the whole task (every artefact's content id, the pk's too) was
            # checked once when --task was read (devnet/cli.py) and is again where the devnet copies it
            manifest = types_pb2.TaskManifest.FromString((config.task_dir / MANIFEST_FILE).read_bytes())
            return arch.parse(manifest.architecture)
        return arch.parse(config.arch or TaskConfig.arch)
    except arch.ArchError as exc:
        raise SystemExit(f"--arch: {exc}") from None
    except (OSError, ValueError) as exc:  # no manifest, or not one (DecodeError)
        raise SystemExit(f"--task: {config.task_dir}: not a task directory ({exc})") from None


def publish_task(plan: DevnetPlan, config: DevnetConfig, progress: Progress) -> dict[str, float]:
    """Create the task (or reuse the one in the data dir, or copy --task's); returns its timings."""
    from zkpot.zkp.task import TaskConfig, create_task, load_task

    publisher_key = plan.data_dir / "keys" / "publisher.json"
    if config.task_dir is not None:  # the user's task, as it is (its artefacts are content-checked on load)
        if plan.task_dir.exists():
            shutil.rmtree(plan.task_dir)
        shutil.copytree(config.task_dir, plan.task_dir, ignore=shutil.ignore_patterns("work"))
        task = load_task(plan.task_dir)
        progress.say(f"running the task {task.task_id.hex()[:16]} of {config.task_dir} ({task.manifest.architecture})")
        return {}
    arch_spec = config.arch or TaskConfig.arch
    if plan.task_dir.exists() and any(plan.task_dir.iterdir()):
        try:
            task = load_task(plan.task_dir)
            m = task.manifest
            source = "digits" if config.test_set_file is None else config.test_set_file.name
            if (m.rounds == config.rounds and config.test_set_size in (0, m.test_set_size)
                    and m.architecture == arch_spec
                    and task.params.get("test_set_source", "digits") == source
                    and config.shard_size in (0, m.shard_size) and m.aggregation_rule == config.aggregation_rule
                    and m.secure_aggregation == config.secure_aggregation
                    and m.secagg_threshold == config.secagg_threshold):
                progress.say(f"reusing the task in {plan.task_dir}")
                return {}
            progress.say("the earlier task has other rounds or test-set size; creating a new task")
        except Exception as exc:  # a stale or damaged task: make a new one
            progress.say(f"cannot reuse {plan.task_dir} ({exc}); creating a new task")
        shutil.rmtree(plan.task_dir)
    if not publisher_key.exists():
        publisher_key.parent.mkdir(parents=True, exist_ok=True)
        KeyPair.generate().save(publisher_key)
    # the blocks' worth of idle chain time as a floor: junk that hurries blocks cannot close a round early
    kwargs: dict[str, Any] = {"rounds": config.rounds, "round_deadline_blocks": config.round_deadline_blocks,
                              "round_deadline_s": config.round_deadline_blocks * config.idle_block_ms / 1000,
                              "seed": config.seed, "arch": arch_spec}
    if config.test_set_size:
        kwargs["test_set_size"] = config.test_set_size
    if config.test_set_file is not None:  # the user's public test set: all of it unless a size is named
        kwargs["test_set_file"] = config.test_set_file
        kwargs["test_set_size"] = config.test_set_size
    if config.train_data is not None:  # reference models calibrate on the data participants train on
        kwargs["calibration_file"] = config.train_data
    if config.min_correct:
        kwargs["min_correct"] = config.min_correct
    if config.shard_size:
        kwargs["shard_size"] = config.shard_size
    if config.aggregation_rule:
        kwargs["aggregation_rule"] = config.aggregation_rule
    if config.secure_aggregation:
        kwargs["secure_aggregation"] = True
        kwargs["secagg_threshold"] = config.secagg_threshold
    t0 = time.monotonic()
    task = create_task(plan.task_dir, KeyPair.load(publisher_key), TaskConfig(**kwargs),
                       progress=lambda step: progress.say(f"task set-up ({time.monotonic() - t0:.0f}s): {step}"))
    return dict(getattr(task, "timings", {}) or {})


def load_publish_tx(task_dir: Path) -> types_pb2.Transaction:
    from zkpot.zkp.task import load_task

    return load_task(task_dir).publish_tx


def make_shards(plan: DevnetPlan, config: DevnetConfig) -> None:
    """Non-IID private shards (Dirichlet alpha), one file per prover: per participant, or, with a
    shared pool of --provers, one per pool member (the participants sharing a prover train on its
    shard, with their own seeds; shards cut N ways for N participants would hold a few dozen
    samples, one batch, and make training seed-independent: identical models, refused as copies)."""
    from zkpot.zkp import data

    owners = plan.participants[:config.provers] if config.provers else plan.participants
    if all(p.shard_path.exists() for p in owners):
        return
    pool = None
    if config.train_data is not None:
        from zkpot.zkp.datafiles import load_for

        # checked (DataFileError names the file and row) in preflight too
        pool = load_for(config.train_data, task_arch(config))
    try:
        shards = data.dirichlet_shards(len(owners), config.alpha, config.seed, pool=pool)
    except ValueError as exc:  # too few samples for this many shards
        raise SystemExit(f"private shards: {exc}{f' from {config.train_data}' if config.train_data else ''}") from None
    for p, shard in zip(owners, shards, strict=True):
        p.shard_path.parent.mkdir(parents=True, exist_ok=True)
        data.save(p.shard_path, shard)


_tasks: dict[Path, Any] = {}


def _task_and_holdout(task_dir: Path) -> tuple[Any, Any]:
    """The task (loaded once per directory) and the held-out split of its seed."""
    if task_dir not in _tasks:
        from zkpot.zkp import data
        from zkpot.zkp.task import load_task

        task = load_task(task_dir)
        # a user's test set has no digits held-out split behind it: its own samples stand in
        digits = task.params.get("test_set_source", "digits") == "digits"
        _tasks[task_dir] = (task, data.held_out(int(task.params.get("seed", 7))) if digits else task.test_set)
    return _tasks[task_dir]


def param_vector(task_dir: Path, model_params: bytes):  # noqa: ANN201 - np.ndarray
    """The committed parameter vector of a model (what a secure-aggregation member masks)."""
    from zkpot.zkp.commitment import param_vector as committed

    return committed(_task_and_holdout(task_dir)[0], model_params)


def global_accuracy(task_dir: Path, global_model: bytes) -> tuple[float, float]:
    """Float accuracy of an aggregated model (observer's view): on the task's public test set,
    and on the whole held-out split, which is larger and so a steadier figure."""
    from zkpot.zkp import model

    task, holdout = _task_and_holdout(task_dir)
    net = model.decode(global_model, task.arch)
    return model.float_accuracy(net, task.test_set), model.float_accuracy(net, holdout)


async def compare_ledgers(plan: DevnetPlan, settle_s: float = 10.0) -> dict[str, Any]:
    """Every validator's chain, block by block: hashes and state roots must be identical."""
    channels = [grpcutil.channel(v.ledger) for v in plan.validators]
    stubs = [ledger_pb2_grpc.LedgerStub(c) for c in channels]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settle_s
        while True:
            heads = [await s.Head(ledger_pb2.HeadRequest(), timeout=5) for s in stubs]
            if len({h.height for h in heads}) == 1 or loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        upto = min(h.height for h in heads)
        mismatches = []
        chain_bytes, tx_bytes = 0, {}  # what a validator stores and every participant could download
        h = 0
        while h <= upto:
            pages = [await s.GetBlocks(ledger_pb2.GetBlocksRequest(from_height=h, limit=200), timeout=30)
                     for s in stubs]
            n = min(len(p.blocks) for p in pages)
            if n == 0:
                break
            for i in range(n):
                block = pages[0].blocks[i].block
                chain_bytes += block.ByteSize()
                for tx in block.txs:
                    kind = tx.WhichOneof("body") or "none"
                    tx_bytes[kind] = tx_bytes.get(kind, 0) + tx.ByteSize()
                ids = {(p.blocks[i].block_hash, p.blocks[i].state_root) for p in pages}
                if len(ids) != 1 and h + i <= upto:
                    mismatches.append(h + i)
            h += n
        return {"agree": not mismatches, "heights": [hd.height for hd in heads], "compared_up_to": upto,
                "mismatched_heights": mismatches[:20], "chain_bytes": chain_bytes, "tx_bytes": tx_bytes,
                "state_roots": sorted({hd.state_root.hex() for hd in heads if hd.height == upto})}
    finally:
        for c in channels:
            await c.close()


def _metric_families(ports: list[int]) -> Iterator[Any]:
    """Every metric family the processes on these /metrics ports export (a dead one is skipped)."""
    for port in ports:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            continue
        yield from text_string_to_metric_families(text.decode())


def scrape_fallbacks(plan: DevnetPlan) -> dict[str, float]:
    """The replicas' asynchronous-fallback counters, summed (their /metrics): entries and exits by outcome."""
    out: dict[str, float] = {}
    for family in _metric_families([v.consensus_metrics for v in plan.validators]):
        if family.name in ("zkpot_consensus_fallback_entries", "zkpot_consensus_fallback_exits"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = "entries" if "entries" in family.name else f"exits_{sample.labels.get('outcome', '')}"
                    out[key] = out.get(key, 0.0) + sample.value
    return out


def scrape_verify_seconds(plan: DevnetPlan) -> dict[str, float]:
    """Sum of the verifiers' own proof-verification histograms (their /metrics)."""
    total, count = 0.0, 0.0
    for family in _metric_families([v.verifier_metrics for v in plan.validators]):
        if "verify" in family.name and family.name.endswith("_seconds") and family.type == "histogram":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
    return {"sum": total, "count": count}

"""`zkpot devnet`: a whole ZKPoT network on this machine, real proofs (the digits by default, or your task)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from zkpot import aggregation

if TYPE_CHECKING:
    from zkpot.devnet.network import DevnetConfig


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Publish a task, start validators (consensus + verifier + ledger each) and provers as local "
        "processes on loopback, and run federated-learning rounds with real ezkl proofs."
    )
    parser.add_argument("action", nargs="?", default="run", choices=["run", "status", "stop"],
                        help="run a devnet (default); status: is the one in --data-dir running, where are its "
                             "endpoints; stop: stop it")
    parser.add_argument("--validators", type=int, default=4, help="validator nodes, n = 3f+1 (default 4)")
    parser.add_argument("--participants", type=int, default=4, help="participants (default 4, one per validator)")
    parser.add_argument("--rounds", type=int, default=3, help="FL rounds (default 3)")
    parser.add_argument("--data-dir", type=Path, default=Path("devnet-data"), help="default ./devnet-data")
    parser.add_argument("--base-port", type=int, default=26000, help="first port of the port plan (default 26000)")
    parser.add_argument("--existing", choices=["replace", "reuse-task", "fail"], default="replace",
                        help="what to do with an earlier devnet in --data-dir: replace it (default), keep its "
                             "task, keys and shards and start a fresh chain (skips the slow setup), or stop")
    parser.add_argument("--test-set-size", type=int, default=0,
                        help="public test set samples (0: the task default, 16)")
    parser.add_argument("--shard-size", type=int, default=0,
                        help="prove the public test set in shards of this many samples (0: one proof)")
    parser.add_argument("--prove-workers", type=int, default=1,
                        help="worker processes per prover; shards are proven in parallel across them")
    parser.add_argument("--provers", type=int, default=0,
                        help="scale tests: participants share this many prover processes (participant j uses "
                             "prover j mod N and trains on its shard); 0: one prover per participant")
    parser.add_argument("--local-epochs", type=int, default=0, help="local epochs per round (0: prover default)")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of the non-IID shards")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--round-deadline-blocks", type=int, default=300,
                        help="a round closes after this many blocks even if not everyone submitted, and no sooner "
                             "than the chain time those blocks take when idle (x --idle-block-ms)")
    parser.add_argument("--min-correct", type=int, default=0,
                        help="proven count needed to be aggregated (0: task default)")
    parser.add_argument("--aggregation-rule", default="", choices=["", *aggregation.RULES],
                        help="the task's aggregation rule (default fedavg-threshold)")
    parser.add_argument("--secure-aggregation", action="store_true",
                        help="pairwise-masked secure aggregation: validators see only the sum of the models, "
                             "checked against the proofs' commitments (docs/privacy.md)")
    parser.add_argument("--secagg-threshold", type=int, default=0,
                        help="with --secure-aggregation: Shamir threshold t, also the least mask-set size "
                             "(default ceil(2n/3) of n participants)")
    parser.add_argument("--report", type=Path, default=None, help="report path (default DATA_DIR/report.json)")
    parser.add_argument("--idle-block-ms", type=int, default=1000, help="empty block interval when idle")
    parser.add_argument("--no-attack-checks", dest="attack_checks", action="store_false",
                        help="skip submitting forged copies of a real proof (tampered, inflated, copied, replayed)")
    parser.add_argument("--no-async-fallback", dest="async_fallback", action="store_false",
                        help="fast path only (no common coin dealt): live only while the network is timely")
    parser.add_argument("--test-set", type=Path, default=None, metavar="FILE|DIR",
                        help="the task's public test set from your data (.npz, CSV or per-class image folders; "
                             "all of it unless --test-set-size names its count); default: sklearn's digits")
    parser.add_argument("--train-data", type=Path, default=None, metavar="FILE|DIR",
                        help="the participants' private shards are cut (non-IID, --alpha) from this file; "
                             "default: the digits' training split")
    parser.add_argument("--arch", default="", metavar="SPEC",
                        help="the task's model: 'mlp:IN-H-...-OUT' or 'seq:SHAPE-LAYER-...' (zkpot task create "
                             "--help); default mlp:64-16-10")
    parser.add_argument("--task", type=Path, default=None, metavar="DIR",
                        help="run a task you created with `zkpot task create` (its model, test set, rounds and "
                             "deadlines); participants train on --train-data (default: the digits' training split)")
    parser.add_argument("--attack-leader-delay", type=float, default=0.0, metavar="SECONDS",
                        help="run under an asynchronous network adversary: every message of each view's leader "
                             "is delayed SECONDS (>= 2; view timers are capped below it), nothing is dropped; the "
                             "fast path alone would stall, the fallback keeps the rounds going")
    parser.add_argument("--tls", action="store_true",
                        help="mutual TLS between every process: a dev CA and one certificate per node in DATA_DIR/tls")
    parser.add_argument("--prometheus", action="store_true",
                        help="also run a real Prometheus (Debian's prometheus) scraping every process")
    parser.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                        help="keep the network (and Prometheus) up this long after the last round ('inf': until "
                             "`zkpot devnet stop` or Ctrl-C)")
    parser.add_argument("--behaviour", action="append", default=[], metavar="NAME=KIND",
                        help="make participant NAME (p0, p1, ...) Byzantine: label_flip, scaled, random, free_ride, "
                             "copy or silent (repeatable; experiments, see `zkpot experiment`)")
    parser.set_defaults(func=_run)


def parse_behaviours(items: list[str], participants: int) -> dict[str, str]:
    from zkpot.devnet.run import BEHAVIOURS

    out: dict[str, str] = {}
    names = {f"p{j}" for j in range(participants)}
    for item in items:
        name, sep, kind = item.partition("=")
        if not sep or name not in names or kind not in BEHAVIOURS:
            raise SystemExit(f"--behaviour {item!r}: expected NAME=KIND with NAME one of p0..p{participants - 1} "
                             f"and KIND one of {', '.join(BEHAVIOURS)}")
        out[name] = kind
    return out


def _run(args: argparse.Namespace) -> int:
    from zkpot import log
    from zkpot.devnet import state
    from zkpot.devnet.network import DevnetConfig
    from zkpot.devnet.run import main

    if args.action == "status":
        return state.status(args.data_dir.resolve())
    if args.action == "stop":
        return state.stop(args.data_dir.resolve())

    log.setup("devnet", "orchestrator", "WARNING")
    # ezkl logs its numerical-fidelity tables and scale hints at WARNING; the task publisher
    # prints what matters (the insecure-SRS warning) itself
    logging.getLogger("ezkl").setLevel(logging.ERROR)
    if args.validators < 1 or args.participants < 1 or args.rounds < 1:
        raise SystemExit("--validators, --participants and --rounds must be at least 1")
    config = DevnetConfig(
        data_dir=args.data_dir.resolve(), validators=args.validators, participants=args.participants,
        rounds=args.rounds, base_port=args.base_port, existing=args.existing, test_set_size=args.test_set_size,
        shard_size=args.shard_size, prove_workers=args.prove_workers, provers=args.provers,
        local_epochs=args.local_epochs, alpha=args.alpha, seed=args.seed,
        round_deadline_blocks=args.round_deadline_blocks, min_correct=args.min_correct,
        report_path=args.report, idle_block_ms=args.idle_block_ms, attack_checks=args.attack_checks,
        prometheus=args.prometheus, linger_s=args.linger, tls=args.tls, async_fallback=args.async_fallback,
        attack_leader_delay_s=args.attack_leader_delay,
        test_set_file=args.test_set.resolve() if args.test_set else None,
        train_data=args.train_data.resolve() if args.train_data else None,
        behaviours=parse_behaviours(args.behaviour, args.participants),
        aggregation_rule=args.aggregation_rule, secure_aggregation=args.secure_aggregation,
        secagg_threshold=args.secagg_threshold, arch=args.arch,
        task_dir=args.task.resolve() if args.task else None,
    )
    if config.task_dir is not None:
        config = _with_task(config)
    return main(config)


def _with_task(config: DevnetConfig) -> DevnetConfig:
    """--task: the task fixes its model, test set, rounds and deadlines; refuse flags that would
    contradict it, take its rounds."""
    import dataclasses

    from zkpot.zkp.task import TaskError, load_task

    clash = [flag for flag, value in (("--test-set", config.test_set_file), ("--arch", config.arch),
                                      ("--test-set-size", config.test_set_size), ("--shard-size", config.shard_size),
                                      ("--min-correct", config.min_correct),
                                      ("--aggregation-rule", config.aggregation_rule),
                                      ("--secure-aggregation", config.secure_aggregation)) if value]
    if clash:
        raise SystemExit(f"--task {config.task_dir}: the task fixes {', '.join(clash)}; drop them")
    try:
        task = load_task(config.task_dir)
    except TaskError as exc:
        raise SystemExit(f"--task: {exc}") from None
    m = task.manifest
    print(f"task {task.task_id.hex()[:16]} from {config.task_dir}: {m.architecture}, {m.test_set_size} test samples, "
          f"{m.rounds} rounds", flush=True)
    return dataclasses.replace(config, rounds=m.rounds, secure_aggregation=m.secure_aggregation,
                               secagg_threshold=m.secagg_threshold, aggregation_rule=m.aggregation_rule)

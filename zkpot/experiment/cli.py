"""`zkpot experiment`: federated learning under attack — centralized, plain FedAvg and ZKPoT."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from zkpot.experiment.config import ATTACKS, ExperimentConfig


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from exc
    if not values or any(not 0.0 <= v <= 0.5 for v in values):
        raise argparse.ArgumentTypeError("fractions must be in 0..0.5")
    return values


def _attacks(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in values if v not in ATTACKS]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"attacks must be among {', '.join(ATTACKS)}; got {text!r}")
    return values


def _with_data_files(config: ExperimentConfig) -> ExperimentConfig:
    """A user's test set is used whole: the config's test-set size becomes its count (the task's)."""
    if config.test_set_file is None or config.train_data is None:
        return config
    import dataclasses

    from zkpot.zkp import data, model

    arch = model.parse(config.arch)
    test = data.load(config.test_set_file, arch)
    data.load(config.train_data, arch)  # checked before anything runs
    return dataclasses.replace(config, test_set_size=len(test))


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run federated learning under attack on the digits data: centralized training and plain FedAvg "
        "(in process) and ZKPoT (a real devnet per scenario) at each attacker fraction; write results.json, "
        "results.md and PNG plots (accuracy per round, validators' shares of views per round, proof time per round)."
    )
    parser.add_argument("--out", type=Path, default=Path("experiment-out"), help="output folder")
    parser.add_argument("--participants", type=int, default=None, help="participants (default 10; --quick 4)")
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=None, help="FL rounds (default 5; --quick 2)")
    parser.add_argument("--fractions", type=_fractions, default=None,
                        help="attacker fractions, comma-separated (default 0,0.2,0.3; --quick 0,0.25)")
    parser.add_argument("--attack", type=_attacks, default=("label_flip",),
                        help=f"attack kind(s), comma-separated, dealt out to attackers in turn: {', '.join(ATTACKS)}")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of the non-IID shards")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--local-epochs", type=int, default=0, help="0: the prover's default")
    parser.add_argument("--test-set-size", type=int, default=16, help="the task's public test set")
    parser.add_argument("--arch", default="mlp:64-16-10", metavar="SPEC",
                        help="the task's model (zkpot task create --help), e.g. "
                             "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10; another input shape than the "
                             "digits' needs --test-set and --train-data")
    parser.add_argument("--test-set", type=Path, default=None, metavar="FILE|DIR",
                        help="your public test set (.npz, CSV or image folders; all of it) instead of the digits'")
    parser.add_argument("--train-data", type=Path, default=None, metavar="FILE|DIR",
                        help="with --test-set: the participants' shards are cut (non-IID, --alpha) from this file")
    parser.add_argument("--min-correct", type=int, default=0, help="aggregation threshold (0: the task default)")
    parser.add_argument("--base-port", type=int, default=27300, help="first port of each devnet's port plan")
    parser.add_argument("--round-deadline-blocks", type=int, default=600,
                        help="the task's round deadline (default 600, ~10 min idle). A round closes early only when "
                             "every participant has an accepted submission, so with silent, copy or free_ride "
                             "attackers every round waits for it: lower it (e.g. 180) for those")
    parser.add_argument("--secure-aggregation", action="store_true",
                        help="run the ZKPoT scenarios with secure aggregation (models never revealed; docs/privacy.md)")
    parser.add_argument("--secagg-threshold", type=int, default=0,
                        help="with --secure-aggregation: Shamir threshold and least mask-set size (0: ceil(2n/3))")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the real-services scenario reports already in --out (same settings!)")
    parser.add_argument("--no-zkpot", dest="zkpot", action="store_false",
                        help="skip the real-services runs (in-process scenarios only)")
    parser.add_argument("--quick", action="store_true", help="a small scenario: 4 participants, 2 rounds, 0 and 25%%")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from zkpot import log
    from zkpot.experiment.run import run

    log.setup("experiment", "experiment", "WARNING")
    logging.getLogger("ezkl").setLevel(logging.ERROR)
    quick = args.quick
    config = ExperimentConfig(
        out_dir=args.out.resolve(),
        participants=args.participants or (4 if quick else 10),
        validators=args.validators,
        rounds=args.rounds or (2 if quick else 5),
        fractions=args.fractions or ((0.0, 0.25) if quick else (0.0, 0.2, 0.3)),
        attacks=args.attack, alpha=args.alpha, seed=args.seed, local_epochs=args.local_epochs,
        test_set_size=args.test_set_size, min_correct=args.min_correct, base_port=args.base_port,
        zkpot=args.zkpot, round_deadline_blocks=args.round_deadline_blocks,
        secure_aggregation=args.secure_aggregation, secagg_threshold=args.secagg_threshold,
        resume=args.resume, arch=args.arch,
        test_set_file=args.test_set.resolve() if args.test_set else None,
        train_data=args.train_data.resolve() if args.train_data else None,
    )
    try:
        config.check()
        config = _with_data_files(config)
    except ValueError as exc:  # a bad spec or data file (DataFileError names the file and row)
        raise SystemExit(str(exc)) from exc
    try:
        results = run(config)
    except asyncio.CancelledError:
        from zkpot.devnet import procs

        print(f"\ninterrupted: {procs.stopped_message()}")
        return 130
    print(f"results: {config.out_dir / 'results.json'}, {config.out_dir / 'results.md'}, plots in {config.out_dir}")
    for name, t in results["targets"].items():
        if isinstance(t, dict) and "met" in t:
            print(f"  {name}: {'met' if t['met'] else 'NOT met'} ({t['target']})")
    return 0

"""`zkpot task`: create a learning task (publisher), show one, cut private shards."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    from zkpot.zkp.task import TaskConfig

    d = TaskConfig()
    sub = parser.add_subparsers(dest="task_command", required=True)
    c = sub.add_parser("create", help="publish a task: data, calibrated circuit, SRS, keys, signed PublishTask")
    c.add_argument("--out", type=Path, required=True, help="task directory to write")
    c.add_argument("--publisher-key", type=Path, required=True, help="publisher's key file (zkpot keys gen)")
    c.add_argument("--name", default=None, help=f"the task's name (default {d.name} for the default model, "
                                                   f"else user-model)")
    c.add_argument("--test-set-size", type=int, default=None,
                   help=f"public test set samples (default {d.test_set_size} of the digits; with --test-set: the "
                        f"file's count, and a different number is refused)")
    c.add_argument("--test-set", type=Path, default=None, metavar="FILE|DIR",
                   help="the public test set from your data: .npz (x, y), CSV (the model's feature columns in [0, 1] + "
                        "a label column) or a folder of per-class image folders (default: sklearn's digits)")
    c.add_argument("--calibration-data", type=Path, default=None, metavar="FILE|DIR",
                   help="data the reference models train on to calibrate the circuit (default: the digits' "
                        "training split); same formats")
    c.add_argument("--shard-size", type=int, default=d.shard_size,
                   help="samples per shard proof (0: one proof over the whole set); when it does not divide the "
                        "test set, the last shard is padded and every shard's count masked")
    c.add_argument("--arch", default=None, metavar="SPEC",
                   help=f"the model: 'mlp:IN-H-...-OUT' or 'seq:SHAPE-LAYER-...' with layers linearN, convCkK[sS][pP], "
                        f"relu, avgpoolK, flatten (default {d.arch}; docs/models.md)")
    c.add_argument("--torch-model", default=None, metavar="FILE.py:NAME",
                   help="the model from your torch code instead: NAME in FILE.py, an nn.Module or a function "
                        "returning one, of supported layers only; the task starts from its weights")
    c.add_argument("--input-shape", default=None, metavar="CxHxW|FEATURES",
                   help="with --torch-model: one sample's shape (default: 64, or 1x8x8 when it starts with a Conv2d)")
    c.add_argument("--onnx-model", type=Path, default=None, metavar="FILE.onnx",
                   help="the model from an ONNX file instead: a chain of Gemm/MatMul+Add, Conv, Relu, AveragePool, "
                        "Flatten; the input shape is the graph's; the task starts from its weights")
    c.add_argument("--scale", type=int, default=d.scale, help="ezkl input/param scale (log2)")
    c.add_argument("--max-logrows", type=int, default=d.max_logrows,
                   help="refuse a circuit above 2^N rows per shard (keys, SRS and proving time grow with it)")
    c.add_argument("--decomp-base", type=int, default=d.decomp_base)
    c.add_argument("--decomp-legs", type=int, default=d.decomp_legs)
    c.add_argument("--weight-bound", type=float, default=d.weight_bound)
    c.add_argument("--rounds", type=int, default=d.rounds)
    c.add_argument("--min-correct", type=int, default=d.min_correct)
    c.add_argument("--round-deadline-blocks", type=int, default=d.round_deadline_blocks)
    c.add_argument("--round-deadline-s", type=float, default=d.round_deadline_s,
                   help="a round (and each secure-aggregation phase) also lasts at least this long in chain time "
                        "(block timestamps), so traffic that speeds up blocks cannot shorten it (0: blocks alone)")
    c.add_argument("--seed", type=int, default=d.seed)
    c.add_argument("--aggregation-rule", default=d.aggregation_rule,
                   help="fedavg-threshold (default), fedavg-accuracy, median or trimmed-mean (zkpot.aggregation)")
    c.add_argument("--srs", type=Path, default=None,
                   help="KZG SRS from a real ceremony (default: INSECURE dev SRS from ezkl.gen_srs)")
    c.set_defaults(func=_create)

    pl = sub.add_parser("plan", help="before any key is made: a model's circuit rows and logrows per shard, "
                        "shards, estimated proving time and memory, key, proof and transaction sizes")
    pl.add_argument("--arch", default=None, metavar="SPEC", help=f"as for create (default {d.arch})")
    pl.add_argument("--torch-model", default=None, metavar="FILE.py:NAME", help="as for create")
    pl.add_argument("--input-shape", default=None, metavar="CxHxW|FEATURES", help="as for create")
    pl.add_argument("--onnx-model", type=Path, default=None, metavar="FILE.onnx", help="as for create")
    pl.add_argument("--test-set-size", type=int, default=None, help=f"default {d.test_set_size} (or the file's count)")
    pl.add_argument("--test-set", type=Path, default=None, metavar="FILE|DIR", help="your test set (its shape, count)")
    pl.add_argument("--shard-size", type=int, default=0, help="samples per shard proof (0: one proof)")
    pl.add_argument("--scale", type=int, default=d.scale)
    pl.add_argument("--decomp-base", type=int, default=d.decomp_base)
    pl.add_argument("--decomp-legs", type=int, default=d.decomp_legs)
    pl.add_argument("--weight-bound", type=float, default=d.weight_bound)
    pl.add_argument("--cost-model", type=Path, default=None, help="coefficients (bench/models.py --write-cost-model)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.set_defaults(func=_plan)

    s = sub.add_parser("show", help="check a task directory and print its manifest")
    s.add_argument("dir", type=Path)
    s.set_defaults(func=_show)

    ev = sub.add_parser("evaluate", help="a model's float accuracy on the task's public test set and on the "
                        "whole held-out split (e.g. a round's global model: zkpot ledger model CID --out FILE)")
    ev.add_argument("dir", type=Path, help="task directory")
    ev.add_argument("model", type=Path, help="model file (zkpot model codec bytes)")
    ev.set_defaults(func=_evaluate)

    sh = sub.add_parser("shards", help="write non-IID (Dirichlet) private shards of the training split")
    sh.add_argument("--out", type=Path, required=True, help="directory; writes shard-<i>.npz")
    sh.add_argument("--participants", type=int, required=True)
    sh.add_argument("--alpha", type=float, default=0.5)
    sh.add_argument("--seed", type=int, default=d.seed)
    sh.set_defaults(func=_shards)


def _create(args: argparse.Namespace) -> int:
    from zkpot.crypto import KeyPair
    from zkpot.zkp.task import TaskConfig, TaskError, create_task

    size = args.test_set_size if args.test_set_size is not None else (0 if args.test_set else TaskConfig.test_set_size)
    try:
        spec, weights = _architecture(args)
    except ValueError as exc:  # ArchError, or a torch module that cannot be loaded
        print(f"error: {exc}", file=sys.stderr)
        return 1
    config = TaskConfig(
        name=args.name or (TaskConfig.name if spec == TaskConfig.arch else "user-model"), test_set_size=size,
        arch=spec, scale=args.scale,
        decomp_base=args.decomp_base, decomp_legs=args.decomp_legs, weight_bound=args.weight_bound,
        rounds=args.rounds, min_correct=args.min_correct, round_deadline_blocks=args.round_deadline_blocks,
        round_deadline_s=args.round_deadline_s,
        seed=args.seed, srs=args.srs, shard_size=args.shard_size, max_logrows=args.max_logrows,
        aggregation_rule=args.aggregation_rule,
        test_set_file=args.test_set, calibration_file=args.calibration_data,
    )
    try:
        task = create_task(args.out, KeyPair.load(args.publisher_key), config, initial_weights=weights)
    except TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"task_id": task.task_id.hex(), "dir": str(task.dir)}))
    return 0


def _plan(args: argparse.Namespace) -> int:
    import logging

    from zkpot.zkp import plan

    logging.getLogger("ezkl").setLevel(logging.ERROR)  # its calibration's fidelity table: the plan is the output
    from zkpot.zkp.datafiles import load_for
    from zkpot.zkp.task import TaskConfig

    try:
        spec, _ = _architecture(args)
        test = None
        if args.test_set is not None:
            from zkpot.zkp import arch

            test = load_for(args.test_set, arch.parse(spec))
        size = args.test_set_size or (len(test) if test is not None else TaskConfig.test_set_size)
        if test is not None and size > len(test):
            raise ValueError(f"--test-set-size {size}: {args.test_set} holds {len(test)} samples")
        result = plan.plan(spec, size, args.shard_size, args.scale, args.decomp_base, args.decomp_legs,
                           args.weight_bound, test, args.cost_model)
    except (ValueError, OSError) as exc:  # ArchError, DataFileError, a bad cost model file
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_json(), indent=2) if args.json else plan.render(result))
    return 0 if result.committed == result.params else 1


def _architecture(args: argparse.Namespace) -> tuple[str, dict | None]:
    """The spec (and the starting weights) from --arch, --torch-model or --onnx-model."""
    from zkpot.zkp import arch, onnx_import
    from zkpot.zkp.task import TaskConfig

    given = [flag for flag, value in (("--arch", args.arch), ("--torch-model", args.torch_model),
                                      ("--onnx-model", args.onnx_model)) if value]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} name the model {'twice' if len(given) == 2 else 'three times'}: "
                         f"give one")
    if args.onnx_model:
        if args.input_shape:
            raise ValueError("--input-shape is read from the ONNX graph's input: drop it")
        spec, weights = onnx_import.load(args.onnx_model)
        return spec.spec, weights
    if not args.torch_model:
        return arch.parse(args.arch or TaskConfig.arch).spec, None
    module = arch.load_module(args.torch_model)
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.split("x"))
        except ValueError:
            raise ValueError(f"--input-shape {args.input_shape!r} is not CxHxW or FEATURES") from None
    else:
        import torch

        first = next((m for m in module.modules() if not list(m.children())), None)
        shape = (1, 8, 8) if isinstance(first, torch.nn.Conv2d) else (64,)
    spec, weights = arch.from_module(module, shape)
    return spec.spec, weights


def _show(args: argparse.Namespace) -> int:
    from zkpot.zkp.task import SUMMARY_FILE, TaskError, load_task, summarize

    try:
        task = load_task(args.dir)
    except TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = {"task_id": task.task_id.hex(), **summarize(task.manifest), "params": task.params}
    summary = task.dir / SUMMARY_FILE
    if summary.is_file():
        out["created"] = {k: v for k, v in json.loads(summary.read_text()).items()
                          if k in ("setup_seconds", "total_seconds", "reference_correct")}
    print(json.dumps(out, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from zkpot.model_codec import ModelFormatError, model_cid
    from zkpot.zkp import data, model
    from zkpot.zkp.task import TaskError, load_task

    try:
        task = load_task(args.dir)
        raw = args.model.read_bytes()
        net = model.decode(raw, task.arch)
    except (TaskError, OSError, ModelFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = {"model_cid": model_cid(raw), "test_set_accuracy": model.float_accuracy(net, task.test_set),
           "test_set_size": len(task.test_set)}
    if task.params.get("test_set_source", "digits") == "digits":  # a user's test set has no digits split behind it
        holdout = data.held_out(int(task.params.get("seed", 7)))
        out.update(held_out_accuracy=model.float_accuracy(net, holdout), held_out_size=len(holdout))
    print(json.dumps(out, indent=2))
    return 0


def _shards(args: argparse.Namespace) -> int:
    from zkpot.zkp import data

    shards = data.dirichlet_shards(args.participants, args.alpha, args.seed)
    for i, shard in enumerate(shards):
        path = args.out / f"shard-{i}.npz"
        data.save(path, shard)
        print(f"{path}\t{len(shard)} samples\tlabels {sorted(set(shard.y.tolist()))}")
    return 0

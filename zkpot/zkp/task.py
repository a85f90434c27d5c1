"""Learning tasks: created once by the (trusted) publisher, loaded by provers and verifiers.

A task directory holds every artefact named in the manifest (each checked against its content id
on load), the manifest itself and the signed PublishTask transaction that genesis carries.
One setup (pk / vk) serves every participant and every round: the parameters are a private
witness, so only the weights baked into each participant's compiled circuit change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ezkl
import numpy as np
import torch

from zkpot import aggregation, chain
from zkpot.codec import content_id
from zkpot.crypto import KeyPair
from zkpot.v1 import types_pb2
from zkpot.zkp import arch as arch_spec
from zkpot.zkp import circuit, data, datafiles, model
from zkpot.zkp.data import Dataset

log = logging.getLogger("zkpot.task")

# artefact name -> file name in the task directory
ARTEFACTS = {
    "settings": "settings.json",
    "vk": "vk.key",
    "pk": "pk.key",
    "srs": "kzg.srs",
    "test_set": "test_set.npz",
    "initial_model": "initial_model.zkpm",
    "params": "params.json",
}
MANIFEST_FILE = "manifest.pb"
PUBLISH_TX_FILE = "publish_task.tx"
SUMMARY_FILE = "task.json"


class TaskError(ValueError):
    pass


@dataclass(frozen=True)
class TaskConfig:
    """What the publisher chooses. Defaults are the devnet's (16 samples, logrows 14, ~5 s proofs)."""

    name: str = "digits-mlp"
    test_set_size: int = 16
    arch: str = model.DEFAULT_ARCH  # zkpot.zkp.arch spec: "mlp:64-16-10", "seq:1x8x8-conv4k3-relu-...-linear10"
    scale: int = 6                  # ezkl input and param scale (log2); pixels/16 are exact at >= 4
    decomp_base: int = 1024         # range decomposition: base**legs; 1024**3 keeps logrows at 14
    decomp_legs: int = 3
    weight_bound: float = 1.0       # every weight/bias is clipped to ±bound; checked to fit the circuit
    rounds: int = 3
    min_correct: int = 4            # 25% of the default test set: above chance (10%), reachable in round 1
    round_deadline_blocks: int = 50
    round_deadline_s: float = 0.0   # and at least this much chain time (block timestamps); 0: blocks alone
    seed: int = 7
    reference_models: int = 3       # trained to calibrate the settings on realistic models
    shard_size: int = 0             # samples per shard proof; 0: one shard. Not dividing test_set_size:
                                    # the last shard is padded and every shard's count masked (circuit.py)
    aggregation_rule: str = ""      # zkpot.aggregation rule; "": fedavg-threshold (manifest unchanged)
    secure_aggregation: bool = False  # pairwise-masked aggregation: models never leave participants
    secagg_threshold: int = 0       # shares that recover a dropped member's mask key; 0: zkpot.secagg default
    srs: Path | None = None         # a real ceremony's SRS; None: ezkl.gen_srs (INSECURE, dev only)
    # the public test set from a user's file (zkpot.zkp.datafiles: .npz, CSV, image folders);
    # None: the bundled digits' class-balanced held-out prefix. test_set_size 0: the file's count
    test_set_file: Path | None = None
    calibration_file: Path | None = None  # reference models' training data; None: the digits pool
    # the largest circuit a task may have: keys, SRS and each proof grow with 2^logrows (zkpot task plan
    # prints the cost); 2^20 rows is ~15 min of proving and ~10 GB per shard on a 2-core machine
    max_logrows: int = 20

    def check(self) -> None:
        if self.test_set_file is None and not 1 <= self.test_set_size <= data.HELD_OUT_SIZE:
            raise TaskError(f"test_set_size must be 1..{data.HELD_OUT_SIZE} (the digits' held-out split)")
        if self.test_set_file is not None and self.test_set_size < 0:
            raise TaskError("test_set_size must be >= 0 (0: every sample of the test-set file)")
        try:
            arch_spec.parse(self.arch)
        except arch_spec.ArchError as exc:
            raise TaskError(str(exc)) from None
        if not 4 <= self.scale <= 12:
            raise TaskError("scale must be 4..12")
        if self.weight_bound <= 0:
            raise TaskError("weight_bound must be positive")
        counted = self.test_set_size > 0  # 0: a file's count, checked again once it is read
        if self.shard_size < 0 or (counted and self.shard_size > self.test_set_size):
            raise TaskError(f"shard_size must be 0..test_set_size ({self.test_set_size}); got {self.shard_size}")
        if counted and self.min_correct > self.test_set_size:
            raise TaskError("min_correct exceeds the test set size")
        if self.aggregation_rule and self.aggregation_rule not in aggregation.RULES:
            raise TaskError(f"aggregation_rule must be one of {', '.join(aggregation.RULES)}")
        if self.secure_aggregation and (self.aggregation_rule or aggregation.DEFAULT_RULE) not in aggregation.SUM_RULES:
            raise TaskError(f"secure aggregation reveals only a (weighted) sum: aggregation_rule must be one of "
                            f"{', '.join(aggregation.SUM_RULES)}")
        if self.secagg_threshold < 0 or (self.secagg_threshold and not self.secure_aggregation):
            raise TaskError("secagg_threshold needs secure_aggregation (and must be >= 0)")
        if self.rounds < 1 or self.round_deadline_blocks < 1:
            raise TaskError("rounds and round_deadline_blocks must be >= 1")
        if self.round_deadline_s < 0:
            raise TaskError("round_deadline_s must be >= 0")


@dataclass(frozen=True)
class Task:
    dir: Path
    manifest: types_pb2.TaskManifest
    task_id: bytes
    publish_tx: types_pb2.Transaction
    initial_model: bytes
    test_set: Dataset
    params: dict
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def arch(self) -> arch_spec.Arch:
        return arch_spec.parse(self.manifest.architecture)  # cached: one Arch per spec

    @property
    def weight_bound(self) -> float:
        return float(self.params["weight_bound"])

    @property
    def norm_bound(self) -> float:
        """The proven bound on a model's squared L2 norm: n_params * weight_bound**2 (circuit.py)."""
        return float(self.params["norm_bound"])

    @property
    def input_scale(self) -> int:
        return int(self.manifest.input_scale)

    @property
    def n_commitments(self) -> int:
        return int(self.params["n_commitments"])

    @property
    def proof_size(self) -> int:
        return int(self.params["proof_bytes"])

    @property
    def commitment_size(self) -> int:
        return circuit.G1_UNCOMPRESSED_BYTES * self.n_commitments

    @property
    def shard_size(self) -> int:
        """Samples per shard proof (legacy manifests without shard_size: the whole test set)."""
        return int(self.manifest.shard_size or self.manifest.test_set_size)

    @property
    def n_shards(self) -> int:
        return shard_count(int(self.manifest.test_set_size), self.shard_size)

    @property
    def masked(self) -> bool:
        """The shard size does not divide the test set: the last shard is padded, counts are masked."""
        return bool(int(self.manifest.test_set_size) % self.shard_size)

    def shard(self, index: int) -> Dataset:
        """Shard `index` of the public test set: samples [index * shard_size, (index + 1) * shard_size),
        the last one padded to shard_size with zero samples when the size does not divide the set."""
        return shard_of(self.test_set, self.shard_size, index)

    def shard_mask(self, index: int) -> list[int] | None:
        """The circuit's mask input of shard `index` (1 per test sample, 0 per padding), or None for
        a task whose shards are all full (its circuit has no mask input)."""
        return shard_mask_of(len(self.test_set), self.shard_size, index)

    def shard_samples(self, index: int) -> int:
        """Test samples (not padding) in shard `index`: the most it can prove correct."""
        return min(self.shard_size, len(self.test_set) - index * self.shard_size)

    def binding(self, round_: int, participant: bytes) -> list[int]:
        return circuit.binding_limbs(self.task_id, round_, participant)

    def instances(self, round_: int, participant: bytes, claimed_correct: int, shard: int = 0) -> list[str]:
        """The public instances of shard `shard`'s proof for (this task, round, participant, claim)."""
        return circuit.public_instances(self.shard(shard), self.binding(round_, participant), claimed_correct,
                                        self.input_scale, self.norm_bound, self.arch.n_classes, self.shard_mask(shard))


def shard_of(test: Dataset, shard_size: int, index: int) -> Dataset:
    """Samples [index * shard_size, ...) of `test`, padded with zero samples (label 0) to shard_size."""
    n = shard_count(len(test), shard_size)
    if not 0 <= index < n:
        raise IndexError(f"shard {index} of {n}")
    lo = index * shard_size
    x, y = test.x[lo : lo + shard_size], test.y[lo : lo + shard_size]
    pad = shard_size - len(y)
    if pad:
        x = np.concatenate([x, np.zeros((pad, x.shape[1]), dtype=x.dtype)])
        y = np.concatenate([y, np.zeros(pad, dtype=y.dtype)])
    return Dataset(x, y)


def shard_count(n_samples: int, shard_size: int) -> int:
    return -(-n_samples // shard_size)


def shard_mask_of(n_samples: int, shard_size: int, index: int) -> list[int] | None:
    """The circuit's mask input of shard `index` (1 per sample, 0 per padding), or None when the shard
    size divides the set: every shard is full and the circuit has no mask input."""
    if n_samples % shard_size == 0:
        return None
    real = min(shard_size, n_samples - index * shard_size)
    return [1] * real + [0] * (shard_size - real)


def _heaviest_shard(test: Dataset, shard_size: int) -> int:
    """The shard holding the sample with the largest feature sum: the worst case for activations."""
    return int(test.x.sum(axis=1).argmax()) // shard_size


def _worst_case_models(arch: arch_spec.Arch, bound: float) -> list[model.Net]:
    """Largest activations and logit gaps a model inside ±bound can produce on [0,1] inputs: every
    weight and bias +bound (ReLU passes everything, so each layer's activations are as large as
    they can be), the logit layer's rows alternating in sign (the largest gaps between classes)."""
    last = arch.layers[-1].name
    out = []
    for first in (1.0, -1.0):
        m = model.Net(arch)
        signs = torch.tensor([first * (-1.0) ** i for i in range(arch.n_classes)])
        with torch.no_grad():
            for p in m.parameters():
                p.fill_(bound)
            m.get_parameter(f"{last}.weight").mul_(signs[:, None])
            m.get_parameter(f"{last}.bias").mul_(signs)
        out.append(m.eval())
    return out


def _public_test_set(config: TaskConfig) -> tuple[Dataset, TaskConfig]:
    """The digits' prefix, or the user's file with its exact count (the config then says it)."""
    if config.test_set_file is None:
        return data.public_test_set(config.test_set_size, config.seed), config
    try:
        test = datafiles.load_for(config.test_set_file, arch_spec.parse(config.arch))
    except datafiles.DataFileError as exc:
        raise TaskError(f"test set: {exc}") from exc
    if config.test_set_size and config.test_set_size != len(test):
        raise TaskError(f"test_set_size {config.test_set_size}, but {config.test_set_file} holds {len(test)} "
                        f"samples (a test set is never cut silently: pass its count or 0)")
    config = dataclasses.replace(config, test_set_size=len(test))
    config.check()  # the shard size and threshold against the real count
    return test, config


def _calibration_pool(config: TaskConfig) -> Dataset:
    if config.calibration_file is None:
        return data.training_pool(config.seed)
    try:
        return datafiles.load_for(config.calibration_file, arch_spec.parse(config.arch))
    except datafiles.DataFileError as exc:
        raise TaskError(f"calibration data: {exc}") from exc


def create_task(out_dir: Path, publisher: KeyPair, config: TaskConfig = TaskConfig(),
                progress: Callable[[str], None] | None = None,
                initial_weights: dict[str, torch.Tensor] | None = None) -> Task:
    """Publish a task: data, calibrated settings, SRS, keys, manifest and the signed PublishTask.
    `progress` hears each slow step as it starts (the devnet prints them); `initial_weights`
    start the task from a user's module (zkpot.zkp.arch.from_module) instead of a seeded init."""
    say = progress or (lambda step: None)
    config.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / fname for name, fname in ARTEFACTS.items()}
    work = out / "work"
    work.mkdir(exist_ok=True)
    t0 = time.perf_counter()

    test, config = _public_test_set(config)
    data.save(paths["test_set"], test)
    pool = _calibration_pool(config)

    # initial global model: deterministic from the seed (or the user's module's weights), inside
    # the bound, in fixed point
    arch = arch_spec.parse(config.arch)
    initial = model.init_model(arch, config.seed) if initial_weights is None else model.from_weights(
        arch, initial_weights)
    model.clip_(initial, config.weight_bound)
    initial_bytes = model.encode(initial)
    paths["initial_model"].write_bytes(initial_bytes)

    # calibrate on a trained reference model (realistic activations), then check the rest fit
    say("training reference models and calibrating the circuit")
    refs = [
        model.train(model.decode(initial_bytes, arch), pool, epochs=3, seed=config.seed + i,
                    weight_bound=config.weight_bound)
        for i in range(max(config.reference_models, 1))
    ]
    limbs_max = circuit.BINDING_MAX
    n_params = arch.n_params
    norm_bound = circuit.norm_bound_of(n_params, config.weight_bound)
    # one circuit (settings, pk, vk) for the shard shape; every shard is proven with it
    shard_size = config.shard_size or config.test_set_size
    first = shard_of(test, shard_size, 0)
    heavy_index = _heaviest_shard(test, shard_size)
    heavy = shard_of(test, shard_size, heavy_index)
    first_mask = shard_mask_of(len(test), shard_size, 0)  # None unless a padded last shard masks every count
    heavy_mask = shard_mask_of(len(test), shard_size, heavy_index)
    circuit.export_onnx(refs[0], first, work / "ref.onnx", mask=first_mask)
    circuit.write_input(first, limbs_max, norm_bound, work / "input.json", arch.n_classes, mask=first_mask)
    settings = circuit.make_settings(work / "ref.onnx", work / "input.json", paths["settings"], config.scale,
                                     config.decomp_base, config.decomp_legs)
    logrows = int(settings["run_args"]["logrows"])
    log.info("calibrated: %s rows, logrows %d", settings.get("num_rows"), logrows)
    if logrows > config.max_logrows:
        widest = max(zip(arch.layers, arch.shapes, strict=True), key=lambda ls: math.prod(ls[1]))
        raise TaskError(f"the circuit of a {shard_size}-sample shard needs logrows {logrows} "
                        f"({settings.get('num_rows'):,} rows), over the task's limit of {config.max_logrows}: use a "
                        f"smaller --shard-size, or a smaller model (its widest layer is {widest[0].token()}, "
                        f"{math.prod(widest[1]):,} values per sample)")
    committed = (settings.get("module_sizes") or {}).get("polycommit") or []
    if committed != [n_params]:
        # anything else in the committed column is invisible to a verifier who never sees the model
        raise TaskError(f"the circuit commits {committed} values, not exactly the model's {n_params} parameters")
    for i, m in enumerate([*refs[1:], *_worst_case_models(arch, config.weight_bound)]):
        try:
            ev = circuit.evaluate(m, heavy, limbs_max, norm_bound, paths["settings"], work / f"check{i}",
                                  mask=heavy_mask)
            fits = bool(ezkl.mock(str(ev.witness_path), str(work / f"check{i}" / "model.compiled")))
            fits = fits and ev.excess == 0
        except Exception as exc:  # CircuitError, or ezkl's own on an unsatisfied mock
            log.warning("range check model %d: %s", i, exc)
            fits = False
        if not fits:
            raise TaskError(f"a model inside ±{config.weight_bound} does not satisfy the circuit; "
                            "lower weight_bound or raise decomp_legs")
    # and the norm bound is part of the statement: just outside it, the excess is no longer 0
    outside = _worst_case_models(arch, config.weight_bound * 1.01)[0]
    ev = circuit.evaluate(outside, heavy, limbs_max, norm_bound, paths["settings"], work / "outside", mask=heavy_mask)
    if ev.excess <= 0:
        raise TaskError("the circuit does not detect a model outside its norm bound")

    insecure = config.srs is None
    if insecure:
        print(f"WARNING: INSECURE DEV SRS — generating a local KZG SRS (logrows {logrows}) with ezkl.gen_srs; "
              "its toxic waste is known to this machine. Pass --srs FILE from a real ceremony for production.",
              flush=True)
        log.warning("INSECURE DEV SRS (ezkl.gen_srs, logrows %d)", logrows)
        ezkl.gen_srs(str(paths["srs"]), logrows)
    else:
        shutil.copyfile(config.srs, paths["srs"])

    circuit.compile_model(work / "ref.onnx", paths["settings"], work / "ref.compiled")
    say(f"key generation (ezkl setup, logrows {logrows})")
    t_setup = time.perf_counter()
    if not ezkl.setup(str(work / "ref.compiled"), str(paths["vk"]), str(paths["pk"]), str(paths["srs"])):
        raise TaskError("ezkl setup failed")
    setup_s = time.perf_counter() - t_setup

    # self-check: the instances we rebuild equal the ones ezkl lays out, and learn the commitment count
    # (on the padded last shard of a masked task: the path only such tasks take)
    n_shards = shard_count(len(test), shard_size)
    self_index = n_shards - 1 if first_mask is not None else 0
    self_shard = shard_of(test, shard_size, self_index)
    self_mask = shard_mask_of(len(test), shard_size, self_index)
    ev = circuit.evaluate(refs[0], self_shard, limbs_max, norm_bound, paths["settings"], work / "self", paths["vk"],
                          paths["srs"], mask=self_mask)
    rebuilt = circuit.public_instances(self_shard, limbs_max, ev.correct, config.scale, norm_bound, arch.n_classes,
                                       self_mask)
    if circuit.witness_instances(ev.witness) != rebuilt:
        raise TaskError("rebuilt public instances differ from ezkl's layout (circuit changed?)")
    n_commit = circuit.n_commitments(ev.witness)
    if n_commit < 1:
        raise TaskError("the witness carries no parameter commitment (param_visibility must be polycommit)")
    # end-to-end self-test: one real proof, verified on rebuilt instances; fixes the proof length
    # (Halo2 proofs of one circuit have one length; verifiers refuse any other, e.g. trailing bytes)
    say("self-test: one real proof, verified on rebuilt public instances")
    t_prove = time.perf_counter()
    self_dir = work / "self"
    ref_proof = circuit.prove(ev.witness_path, self_dir / "model.compiled", paths["pk"], self_dir / "proof.json",
                              paths["srs"])
    prove_s = time.perf_counter() - t_prove
    if not circuit.verify(ref_proof, rebuilt, paths["settings"], paths["vk"], paths["srs"], work):
        raise TaskError("self-test proof does not verify")

    params = {
        "weight_bound": config.weight_bound,
        "norm_bound": norm_bound,
        "seed": config.seed,
        "n_commitments": n_commit,
        "proof_bytes": len(ref_proof),
        "binding": f"sha256 -> {circuit.N_LIMBS} limbs x {circuit.LIMB_BITS} bits",
        "decomp_base": config.decomp_base,
        "decomp_legs": config.decomp_legs,
        "num_rows": settings.get("num_rows"),
        "shard_size": shard_size,
        "n_shards": n_shards,
        # where the public test set came from: "digits" (held-out prefix of the seed) or a user's file
        "test_set_source": "digits" if config.test_set_file is None else Path(config.test_set_file).name,
    }
    paths["params"].write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")

    manifest = types_pb2.TaskManifest(
        name=config.name,
        architecture=arch.spec,
        test_set_size=config.test_set_size,
        input_scale=int(settings["run_args"]["input_scale"]),
        param_scale=int(settings["run_args"]["param_scale"]),
        logrows=logrows,
        insecure_dev_srs=insecure,
        rounds=config.rounds,
        min_correct=config.min_correct,
        round_deadline_blocks=config.round_deadline_blocks,
        round_deadline_ms=round(config.round_deadline_s * 1000),  # 0 keeps older manifests' task ids
        publisher=publisher.public,
        shard_size=config.shard_size,  # 0 (one shard) keeps the manifest, and so the task id, of older tasks
        aggregation_rule=config.aggregation_rule,  # "" likewise
        secure_aggregation=config.secure_aggregation,  # False likewise
        secagg_threshold=config.secagg_threshold,
    )
    for name, path in paths.items():
        manifest.artefacts[name] = content_id(path.read_bytes())
    task_id = chain.task_id(manifest)
    tx = types_pb2.Transaction(
        publish_task=types_pb2.PublishTask(manifest=manifest, task_id=task_id, initial_model=initial_bytes)
    )
    chain.sign_tx(publisher, tx)
    (out / MANIFEST_FILE).write_bytes(manifest.SerializeToString())
    (out / PUBLISH_TX_FILE).write_bytes(tx.SerializeToString())
    summary = {
        "task_id": task_id.hex(),
        "setup_seconds": round(setup_s, 2),
        "self_test_prove_seconds": round(prove_s, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "reference_correct": [model.correct_count(m, test) for m in refs],
        **summarize(manifest),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    task = load_task(out)
    from zkpot.zkp import commitment  # learns the layout from the circuit (~0.5 s)

    scales = {t.scale for t in commitment.layout(task).tensors}
    if scales != {task.manifest.param_scale}:
        # ledgers judge free-riding on the model rounded to param_scale (model_codec.quantized)
        raise TaskError(f"the circuit commits parameters at scales {sorted(scales)}, not param_scale "
                        f"{task.manifest.param_scale} alone")
    return task


def summarize(manifest: types_pb2.TaskManifest) -> dict:
    return {
        "name": manifest.name,
        "architecture": manifest.architecture,
        "test_set_size": manifest.test_set_size,
        "shard_size": manifest.shard_size or manifest.test_set_size,
        "input_scale": manifest.input_scale,
        "param_scale": manifest.param_scale,
        "logrows": manifest.logrows,
        "rounds": manifest.rounds,
        "min_correct": manifest.min_correct,
        "aggregation_rule": manifest.aggregation_rule or "fedavg-threshold",
        "secure_aggregation": manifest.secure_aggregation,
        "round_deadline_blocks": manifest.round_deadline_blocks,
        "round_deadline_ms": manifest.round_deadline_ms,
        "insecure_dev_srs": manifest.insecure_dev_srs,
        "publisher": manifest.publisher.hex(),
        "artefacts": dict(sorted(manifest.artefacts.items())),
    }


def load_task(task_dir: Path) -> Task:
    """Load a task directory, re-checking every artefact against its content id (TaskError)."""
    d = Path(task_dir)
    try:
        manifest = types_pb2.TaskManifest.FromString((d / MANIFEST_FILE).read_bytes())
        tx = types_pb2.Transaction.FromString((d / PUBLISH_TX_FILE).read_bytes())
    except (OSError, ValueError) as exc:
        raise TaskError(f"{d}: not a task directory ({exc})") from exc
    if tx.WhichOneof("body") != "publish_task" or tx.publish_task.manifest != manifest:
        raise TaskError(f"{d}: the PublishTask transaction does not carry this manifest")
    task_id = chain.task_id(manifest)
    if tx.publish_task.task_id != task_id:
        raise TaskError(f"{d}: task id in the transaction does not match the manifest")
    if not chain.tx_signature_ok(tx) or tx.sender != manifest.publisher:
        raise TaskError(f"{d}: PublishTask is not validly signed by the manifest's publisher")
    paths: dict[str, Path] = {}
    for name, fname in ARTEFACTS.items():
        cid = manifest.artefacts.get(name)
        if cid is None:
            raise TaskError(f"{d}: manifest names no artefact {name!r}")
        path = d / fname
        if not path.is_file():
            raise TaskError(f"{d}: artefact {fname} is missing")
        if content_id(path.read_bytes()) != cid:
            raise TaskError(f"{d}: artefact {fname} does not match its content id {cid}")
        paths[name] = path
    initial = paths["initial_model"].read_bytes()
    if tx.publish_task.initial_model != initial:
        raise TaskError(f"{d}: initial model differs from the one in the PublishTask")
    try:
        test = datafiles.load_for(paths["test_set"], arch_spec.parse(manifest.architecture))
    except (datafiles.DataFileError, arch_spec.ArchError) as exc:
        raise TaskError(f"{d}: {exc}") from None
    if len(test) != manifest.test_set_size:
        raise TaskError(f"{d}: test set has {len(test)} samples, manifest says {manifest.test_set_size}")
    if manifest.shard_size > manifest.test_set_size:
        raise TaskError(f"{d}: shard size {manifest.shard_size} exceeds the test set ({len(test)})")
    params = json.loads(paths["params"].read_text())
    try:
        task_arch = arch_spec.parse(manifest.architecture)
    except arch_spec.ArchError as exc:
        raise TaskError(f"{d}: {exc}") from None
    model.decode(initial, task_arch)  # layout check
    return Task(d, manifest, task_id, tx, initial, test, params, paths)

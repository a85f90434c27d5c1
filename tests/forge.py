"""What an adversary holding the task's public files does: proofs of other statements than the task's.

Each helper runs the real ezkl pipeline (compile, witness, prove with the task's own proving key),
changing only what an attacker controls: the public inputs it writes into its witness, and the
model it commits to. The proofs are genuine proofs, just not of the task's statement.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from zkpot import chain
from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis, Member
from zkpot.v1 import types_pb2
from zkpot.zkp import circuit, model
from zkpot.zkp.data import N_CLASSES
from zkpot.zkp.task import MANIFEST_FILE, PUBLISH_TX_FILE, Task, load_task


@dataclass(frozen=True)
class Forged:
    proof: bytes
    count: int       # the count the forged statement proves, and the attacker claims
    commitment: bytes
    excess: int      # the norm excess the proof's instances carry


def prove_statement(task: Task, net: model.Net, round_: int, participant: bytes, work: Path,
                    target: int = N_CLASSES - 1, classes: list[int] | None = None, prove: bool = True) -> Forged:
    """A real proof of `net` with the task's keys, the accuracy function's constants (which ezkl
    used to commit beside the weights) replaced: the win `target`, the `classes` of the one-hot.
    prove=False: the witness only (what the statement counts), no proof."""
    work.mkdir(parents=True, exist_ok=True)
    circuit.export_onnx(net, task.shard(0), work / "model.onnx", mask=task.shard_mask(0))
    circuit.compile_model(work / "model.onnx", task.paths["settings"], work / "model.compiled")
    circuit.write_input(task.shard(0), task.binding(round_, participant), task.norm_bound, work / "input.json",
                        task.arch.n_classes, mask=task.shard_mask(0))
    doc = json.loads((work / "input.json").read_text())
    doc["input_data"][4] = [target]
    if classes is not None:
        doc["input_data"][3] = list(classes)
    (work / "input.json").write_text(json.dumps(doc))
    wit = circuit.gen_witness(work / "input.json", work / "model.compiled", work / "witness.json", task.paths["vk"],
                              task.paths["srs"])
    if not prove:
        return Forged(b"", circuit.witness_count(wit), b"", circuit.witness_excess(wit))
    proof = circuit.prove(work / "witness.json", work / "model.compiled", task.paths["pk"], work / "proof.json",
                          task.paths["srs"])
    return Forged(proof, circuit.witness_count(wit), circuit.proof_commitment(proof, task.n_commitments),
                  circuit.witness_excess(wit))


def relabelled(task: Task, net: model.Net) -> list[int]:
    """One-hot classes permuted so that each sample's predicted class plays its label wherever the
    samples agree: the forged function counts a sample when the model predicts sigma^-1(label)."""
    with torch.no_grad():
        pred = net(torch.from_numpy(task.shard(0).x)).argmax(dim=1).tolist()
    sigma: dict[int, int] = {}
    for a, y in zip(pred, task.shard(0).y.tolist(), strict=True):
        if a not in sigma and y not in sigma.values():
            sigma[a] = y
    free = [c for c in range(N_CLASSES) if c not in sigma.values()]
    return [sigma[j] if j in sigma else free.pop(0) for j in range(N_CLASSES)]


def best_forgery(task: Task, net: model.Net, round_: int, participant: bytes, work: Path) -> Forged:
    """The forged accuracy function that scores `net` highest among: relabelled classes, or a
    label that beats exactly t classes instead of all nine."""
    candidates = [{"classes": relabelled(task, net)}, *({"target": t} for t in range(N_CLASSES - 1))]
    counts = [prove_statement(task, net, round_, participant, work / f"c{i}", prove=False, **c).count  # type: ignore[arg-type]
              for i, c in enumerate(candidates)]
    best = candidates[counts.index(max(counts))]
    return prove_statement(task, net, round_, participant, work / "best", **best)  # type: ignore[arg-type]


def boosted(net: model.Net, factor: float = 128.0) -> model.Net:
    """The same predictions from a model `factor` times too large (the output layer scaled)."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        out.fc2.weight.mul_(factor)
        out.fc2.bias.mul_(factor)
    return out.eval()


def secure_variant(task: Task, publisher: KeyPair, out: Path) -> Task:
    """The same circuit and artefacts published as a secure-aggregation task (models never revealed)."""
    shutil.copytree(task.dir, out)
    manifest = types_pb2.TaskManifest()
    manifest.CopyFrom(task.manifest)
    manifest.secure_aggregation = True
    tx = types_pb2.Transaction(publish_task=types_pb2.PublishTask(
        manifest=manifest, task_id=chain.task_id(manifest), initial_model=task.initial_model))
    chain.sign_tx(publisher, tx)
    (out / MANIFEST_FILE).write_bytes(manifest.SerializeToString())
    (out / PUBLISH_TX_FILE).write_bytes(tx.SerializeToString())
    return load_task(out)


def genesis_for(task: Task, validator: KeyPair, participants: dict[str, KeyPair], path: Path) -> Path:
    Genesis(chain_id="forge-test", genesis_time_ms=0, validators=(Member("v0", validator.public),),
            participants=tuple(Member(n, k.public, validator.public) for n, k in participants.items()),
            publish_task=task.publish_tx).save(path)
    return path


def private_submission(key: KeyPair, task: Task, round_: int, forged: Forged) -> types_pb2.Transaction:
    """A SubmitProof as secure aggregation sends it: commitment and proof, no parameters."""
    return chain.sign_tx(key, types_pb2.Transaction(submit_proof=types_pb2.SubmitProof(
        task_id=task.task_id, round=round_, participant=key.public, model_commitment=forged.commitment,
        claimed_correct=forged.count, proof=forged.proof)))

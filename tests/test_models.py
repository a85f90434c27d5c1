"""Your own model (issue 14): `zkpot task create --arch/--torch-model` refuses what the circuit
cannot take by the layer and the limit, and a CNN task made from a user's torch module runs on
the devnet (`zkpot devnet --task DIR`) with real proofs, real services and every ledger agreeing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from zkp_env import REPO, run_devnet

from zkpot.devnet.plan import free_base_port

USER_MODEL = '''
from torch import nn


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 10))


normed = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))
not_a_module = 3
'''


def _zkpot(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zkpot.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    (d / "user_model.py").write_text(USER_MODEL)
    assert _zkpot("keys", "gen", d / "publisher.json").returncode == 0
    return d


@pytest.mark.parametrize(("args", "says"), [
    (["--arch", "seq:1x8x8-conv4k3-linear10"], "layer 1 (linear10) takes a flat input, got shape (4, 6, 6)"),
    (["--arch", "seq:1x8x8-conv4k3-maxpool2-flatten-linear10"], "layer 1 'maxpool2' is not supported"),
    (["--arch", "mlp:4096-64-10"], "over the limit of 200,000"),
    (["--torch-model", "{d}/user_model.py:normed"], "layer 1 (BatchNorm2d) is not supported"),
    (["--torch-model", "{d}/user_model.py:not_a_module"], "not_a_module is a int, not a torch.nn.Module"),
    (["--torch-model", "{d}/user_model.py:missing"], "defines no 'missing'"),
    (["--torch-model", "{d}/user_model.py:cnn", "--arch", "mlp:64-16-10"], "name the model twice"),
    (["--arch", "mlp:30-8-2"], "features per sample, the task's model takes 30"),
])
def test_task_create_refuses_what_the_circuit_cannot_take(user_files: Path, args: list[str], says: str) -> None:
    """Refused before any key is made, with the layer and the limit; nothing is written."""
    out = user_files / "refused"
    args = [a.format(d=user_files) for a in args]
    extra = ["--calibration-data", str(_digits_npz(user_files))] if args == ["--arch", "mlp:30-8-2"] else []
    proc = _zkpot("task", "create", "--out", out, "--publisher-key", user_files / "publisher.json", *args, *extra)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (out / "manifest.pb").exists()


def _digits_npz(d: Path) -> Path:
    from zkpot.zkp import data

    path = d / "digits.npz"
    if not path.exists():
        data.save(path, data.public_test_set(20, 7))
    return path


@pytest.mark.parametrize(("args", "says"), [
    (["--arch", "mlp:30-8-2"], "takes 30 features and 2 classes, not the digits' 64 and 10: pass the participants' "
                               "data with --train-data"),
    (["--arch", "seq:1x8x8-relu"], "the last layer must be linearN"),
    (["--task", "/nonexistent", "--arch", "mlp:64-8-10"], "the task fixes --arch; drop them"),
    (["--task", "/nonexistent"], "--task: /nonexistent: not a task directory"),
])
def test_devnet_refuses_a_model_its_data_cannot_feed(tmp_path: Path, args: list[str], says: str) -> None:
    proc = _zkpot("devnet", "--data-dir", tmp_path / "run", "--base-port", free_base_port(4, 4), *args, timeout=120)
    assert proc.returncode != 0 and says in proc.stderr + proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_cnn_from_a_torch_module_runs_on_the_devnet(user_files: Path) -> None:
    """A user's nn.Sequential (Conv2d, ReLU, AvgPool2d, Flatten, Linear) becomes the task's
    architecture; four validators and two participants run a round of it: each participant trains
    the CNN, proves its accuracy (real ezkl proof of the CNN circuit), the verifiers accept, the
    validators aggregate CNN models, and every ledger holds the same chain."""
    task = user_files / "cnn-task"
    proc = _zkpot("task", "create", "--out", task, "--publisher-key", user_files / "publisher.json", "--torch-model",
                  f"{user_files}/user_model.py:cnn", "--test-set-size", "4", "--rounds", "1", "--min-correct", "1",
                  "--round-deadline-blocks", "120")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(_zkpot("task", "show", task).stdout)
    assert shown["architecture"] == "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10"
    assert shown["params"]["norm_bound"] == 410.0  # n_params * weight_bound**2: the CNN's 410 parameters
    # the plan, made before any key, named the circuit the task got
    planned = json.loads(_zkpot("task", "plan", "--torch-model", f"{user_files}/user_model.py:cnn",
                                "--test-set-size", "4", "--json").stdout)
    assert (planned["rows"], planned["logrows"]) == (shown["params"]["num_rows"], shown["logrows"])
    run = user_files / "run"
    code, stdout, stderr = run_devnet(["--task", str(task), "--validators", "4", "--participants", "2",
                                       "--data-dir", str(run), "--base-port", str(free_base_port(4, 2)),
                                       "--no-attack-checks"], "CNN devnet")
    assert code == 0, f"devnet exited {code}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    report = json.loads((run / "report.json").read_text())
    assert report["ok"] and report["ledgers"]["agree"]
    (r1,) = report["rounds"]
    assert r1["closed"] and r1["accepted_submissions"] == 2, r1
    assert all(s["aggregated"] for s in r1["submissions"]), r1["submissions"]
    # the round's global model is a CNN of the task's layout (the observer decoded and scored it)
    assert 0 < r1["global_accuracy_holdout"] <= 1


def test_task_plan_names_the_circuit_before_any_key(tmp_path: Path) -> None:
    proc = _zkpot("task", "plan", "--arch", "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10", "--test-set-size",
                  "8", "--shard-size", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)
    assert p["params"] == p["committed"] == 410 and p["shards"] == 2 and p["shard_size"] == 4
    assert p["rows"] > 10_000 and 2 ** p["logrows"] >= p["rows"]
    assert p["prove_s_per_shard"] > 0 and abs(p["prove_s_total"] - 2 * p["prove_s_per_shard"]) <= 0.1
    assert p["pk_bytes"] > 0 and p["tx_bytes"] > 2 * p["proof_bytes_per_shard"]
    assert list(tmp_path.iterdir()) == []  # nothing written: no SRS, no keys
    text = _zkpot("task", "plan", "--test-set-size", "16")
    assert text.returncode == 0 and "mlp:64-16-10: 1,210 parameters" in text.stdout and "logrows" in text.stdout
    bad = _zkpot("task", "plan", "--arch", "mlp:30-8-2")
    assert bad.returncode == 1 and "plan it with --test-set FILE" in bad.stderr
    padded = json.loads(_zkpot("task", "plan", "--test-set-size", "10", "--shard-size", "4", "--json").stdout)
    assert padded["shards"] == 3 and padded["committed"] == padded["params"]  # 4 + 4 + 2 and 2 padding, masked
    bad = _zkpot("task", "plan", "--test-set-size", "10", "--shard-size", "11")
    assert bad.returncode == 1 and "must be 1..10" in bad.stderr


def test_the_examples_files_are_what_their_readmes_say(tmp_path: Path) -> None:
    """examples/: the CNN file is the spec its README names; the breast-cancer script writes CSVs
    the tabular task's architecture accepts (30 features in [0, 1], 2 classes, every sample)."""
    from zkpot.zkp import arch, datafiles

    module = arch.load_module(str(REPO / "examples/digits-cnn/model.py") + ":model")
    spec, _ = arch.from_module(module, (1, 8, 8))
    assert spec.spec == "seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10"
    assert spec.spec in (REPO / "examples/digits-cnn/README.md").read_text()
    proc = subprocess.run([sys.executable, str(REPO / "examples/breast-cancer/make_data.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tab = arch.parse("mlp:30-16-2")
    train = datafiles.load_for(tmp_path / "train.csv", tab)
    test = datafiles.load_for(tmp_path / "test.csv", tab)
    assert (len(train), len(test)) == (455, 114) and set(test.y.tolist()) == {0, 1}
    assert "mlp:30-16-2" in (REPO / "examples/breast-cancer/README.md").read_text()


def test_an_experiment_runs_on_a_users_csv_files(tmp_path: Path) -> None:
    """`zkpot experiment` on the tabular example's CSV files (in-process scenarios: centralized,
    plain FedAvg, the ZKPoT rules; the real-services runs use the devnet's --test-set/--train-data)."""
    proc = subprocess.run([sys.executable, str(REPO / "examples/breast-cancer/make_data.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "exp"
    run = _zkpot("experiment", "--quick", "--no-zkpot", "--arch", "mlp:30-8-2", "--test-set", tmp_path / "test.csv",
                 "--train-data", tmp_path / "train.csv", "--min-correct", "80", "--out", out, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["test_set_size"] == 114 and results["config"]["arch"] == "mlp:30-8-2"
    (central,) = [sc for sc in results["scenarios"] if sc["kind"] == "centralized"]
    assert central["rounds"][-1]["accuracy"] > 0.9  # on the file's 114 test samples
    refused = _zkpot("experiment", "--quick", "--no-zkpot", "--arch", "mlp:30-8-2", "--out", out)
    assert refused.returncode != 0 and "pass --test-set and --train-data" in refused.stderr


@pytest.mark.slow
def test_an_experiment_on_a_users_csv_runs_a_real_devnet(tmp_path: Path) -> None:
    """The same with the real-services scenario: a devnet on the CSV files and the tabular model,
    real proofs of a 12-sample test set, a label flipper among 4 participants, every ledger equal."""
    proc = subprocess.run([sys.executable, str(REPO / "examples/breast-cancer/make_data.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "test.csv").read_text().splitlines()
    (tmp_path / "small.csv").write_text("\n".join(lines[:13]) + "\n")  # the header and 12 samples
    out = tmp_path / "exp"
    run = _zkpot("experiment", "--quick", "--rounds", "1", "--fractions", "0.25", "--arch", "mlp:30-8-2",
                 "--test-set", tmp_path / "small.csv", "--train-data", tmp_path / "train.csv", "--min-correct", "8",
                 "--round-deadline-blocks", "240", "--base-port", free_base_port(4, 4), "--out", out, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    (zk,) = [sc for sc in results["scenarios"] if sc["kind"] == "zkpot"]
    assert zk["ok"] and zk["ledgers_agree"] and zk["attackers"] == {"p0": "label_flip"}
    (r1,) = zk["rounds"]
    assert set(r1["correct"]) == {"p0", "p1", "p2", "p3"} and all(0 <= c <= 12 for c in r1["correct"].values())
    assert {p for p, c in r1["correct"].items() if c >= 8} == set(r1["included"])  # the threshold, proven
    assert 0 < r1["accuracy"] <= 1

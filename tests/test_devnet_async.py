"""End to end under an asynchronous network adversary (issue 15), on a user's own data files
(issue 14): a devnet whose every consensus link runs through zkpot/devnet/netdelay.py, with each
view's leader slowed past every view timer for the whole run (`zkpot devnet
--attack-leader-delay`), its public test set from a CSV file and its participants' private shards
cut from an .npz (`--test-set`, `--train-data`), every process on mutual TLS (the adversary's
polling too: without the devnet's certificate it was blind and the run unattacked). The fast
path alone would commit nothing; with the fallback (the devnet's default) the FL round still
closes with real proofs on exactly the file's test samples, every ledger agrees, and the report
counts the fallbacks that committed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_datafiles import write_csv
from zkp_env import run_devnet

from zkpot.devnet.plan import free_base_port
from zkpot.zkp import data

pytestmark = pytest.mark.slow

VALIDATORS, PARTICIPANTS = 4, 2


def test_a_round_closes_while_every_leader_is_slowed(tmp_path) -> None:
    base = free_base_port(VALIDATORS, PARTICIPANTS)
    test = data.public_test_set(12, 3)  # not the default task's samples (another seed, another size)
    test_csv = write_csv(tmp_path / "public.csv", test.x, test.y)
    data.save(tmp_path / "train.npz", data.training_pool(3))
    run_dir = tmp_path / "run"
    code, stdout, stderr = run_devnet(
        ["--validators", str(VALIDATORS), "--participants", str(PARTICIPANTS), "--rounds", "1", "--test-set",
         str(test_csv), "--train-data", str(tmp_path / "train.npz"), "--data-dir", str(run_dir), "--base-port",
         str(base), "--no-attack-checks", "--attack-leader-delay", "3", "--tls"], "attacked devnet")
    assert code == 0, f"devnet exited {code}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["test_set_size"] == 12
    from zkpot.zkp.task import load_task

    task = load_task(run_dir / "task")
    assert np.array_equal(task.test_set.x, test.x) and task.params["test_set_source"] == "public.csv"
    assert report["ok"] and report["ledgers"]["agree"]
    (r1,) = report["rounds"]
    assert r1["closed"] and r1["accepted_submissions"] == PARTICIPANTS, r1
    cons = report["consensus"]
    assert cons["async_fallback"] and cons["leader_delay_s"] == 3
    assert sum(cons["leaders_slowed"].values()) >= 2, cons  # the adversary followed the leader
    assert cons["adversary_failed_polls"] == 0, cons  # and saw every replica (over mutual TLS)
    fallbacks = cons["fallbacks"]
    assert fallbacks["entries"] > 0 and fallbacks.get("exits_commit", 0) > 0, fallbacks
    assert "asynchronous fallback:" in stdout and "adversary slowed each view's leader 3 s" in stdout

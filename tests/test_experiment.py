"""Federated learning under attack: Byzantine behaviours, the in-process baselines, and
`zkpot experiment` end to end on the real services (slow)."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import pytest
from proc_tree import run_tree

from zkpot import model_codec
from zkpot.devnet.cli import parse_behaviours
from zkpot.devnet.plan import free_base_port
from zkpot.experiment import simulate
from zkpot.experiment.config import ExperimentConfig, attackers
from zkpot.zkp import data, model


def _config(tmp_path: Path, **kw) -> ExperimentConfig:
    base = {"participants": 4, "rounds": 2, "fractions": (0.0, 0.5), "zkpot": False}
    return ExperimentConfig(out_dir=tmp_path, **{**base, **kw})


def test_attackers_are_the_first_participants_by_fraction(tmp_path):
    cfg = ExperimentConfig(out_dir=tmp_path, participants=10, attacks=("label_flip", "copy"))
    assert attackers(cfg, 0.0) == {}
    assert attackers(cfg, 0.2) == {"p0": "label_flip", "p1": "copy"}
    assert len(attackers(cfg, 0.3)) == 3 and len(attackers(cfg, 0.4)) == 4
    with pytest.raises(ValueError):
        ExperimentConfig(out_dir=tmp_path, attacks=("krum",)).check()


def test_devnet_behaviour_flag_parsing():
    assert parse_behaviours(["p0=label_flip", "p2=silent"], 3) == {"p0": "label_flip", "p2": "silent"}
    for bad in (["p3=copy"], ["p0"], ["p0=evil"]):
        with pytest.raises(SystemExit):
            parse_behaviours(bad, 3)


def test_behaviours_stay_provable_and_differ_as_described():
    shard = data.dirichlet_shards(4, 0.5, seed=7)[0]
    test = data.public_test_set(16, seed=7)
    start = model.init_model(model.parse(model.DEFAULT_ARCH), 7)
    model.clip_(start, 1.0)
    start_bytes = model.encode(start)
    out = {}
    for b in model.BEHAVIOURS:
        start_net = model.decode(start_bytes, model.parse(model.DEFAULT_ARCH))
        net = model.train_as(b, start_net, shard, 3, seed=5, weight_bound=1.0)
        assert model.max_abs_weight(net) <= 1.0  # inside the circuit's range: the prover can prove it
        out[b] = net
    assert model.encode(out["free_ride"]) == start_bytes
    honest = model.correct_count(out["honest"], test)
    assert model.correct_count(out["label_flip"], test) < 4 <= honest  # below the task's threshold
    assert model.correct_count(out["random"], test) < honest
    with pytest.raises(ValueError, match="unknown behaviour"):
        model.train_as("evil", start, shard, 1, 0, 1.0)


def test_label_flippers_are_excluded_for_their_proven_count(tmp_path):
    cfg = _config(tmp_path)
    s = simulate.setting(cfg)
    flippers = attackers(cfg, 0.5)
    zk = simulate.federated(cfg, s, flippers, zkpot_rules=True)
    plain = simulate.federated(cfg, s, flippers, zkpot_rules=False)
    for r in zk:
        for name in flippers:
            assert r.correct[name] < s.min_correct
            assert r.excluded[name] == f"proven {r.correct[name]}/16 < threshold {s.min_correct}"
        assert set(r.included) == {"p2", "p3"}
    assert all(not r.excluded for r in plain)  # plain FedAvg averages everyone, flippers included
    assert zk[-1].accuracy > plain[-1].accuracy
    # same shards and training: with no attackers the two agree within a point
    honest_zk = simulate.federated(cfg, s, {}, zkpot_rules=True)
    honest_plain = simulate.federated(cfg, s, {}, zkpot_rules=False)
    assert abs(honest_zk[-1].accuracy - honest_plain[-1].accuracy) <= 0.01


def test_free_riders_and_copiers_are_excluded_for_the_right_reason(tmp_path):
    cfg = _config(tmp_path, rounds=1)
    s = simulate.setting(cfg)
    (r,) = simulate.federated(cfg, s, {"p0": "free_ride", "p1": "copy", "p2": "silent"}, zkpot_rules=True)
    assert r.excluded == {"p0": "the round's global model unchanged (free-riding)",
                          "p1": "proof bound to another submitter (refused at admission)",
                          "p2": "silent (submitted nothing)"}
    assert r.included == ["p3"]
    (plain,) = simulate.federated(cfg, s, {"p0": "free_ride", "p1": "copy"}, zkpot_rules=False)
    assert plain.included == ["p0", "p1", "p2", "p3"]


def test_simulated_updates_match_the_provers_training(tmp_path):
    """The in-process FedAvg trains exactly as the devnet's prover (prove.train_step) does."""
    from zkpot.zkp.prove import train_step

    cfg = _config(tmp_path)
    s = simulate.setting(cfg)

    class _Task:  # the three attributes train_step reads
        arch, weight_bound = model.parse(model.DEFAULT_ARCH), 1.0
        test_set = s.test_set

    for behaviour in ("honest", "label_flip", "scaled"):
        ours = simulate.local_update(cfg, s, s.initial, 1, 1, behaviour)
        theirs = train_step(_Task(), s.initial, s.shards[1], s.epochs, cfg.seed * 1000 + 10 + 1,  # type: ignore[arg-type]
                            "" if behaviour == "honest" else behaviour)
        assert ours == theirs.model_params
    assert model_codec.decode_fixed(ours)  # decodes


@pytest.mark.slow
def test_experiment_quick_end_to_end(tmp_path):
    """`zkpot experiment --quick`, shrunk to one ZKPoT scenario of one round: real task, real devnet,
    a label flipper whose real proof shows a count below the threshold; table, JSON and plots."""
    out = tmp_path / "exp"
    # The round closes once all four proofs are in: 26-36 s after the chain starts, 97 s with two
    # experiments at once (measured). The deadline is only a ceiling for a lost submission: at the
    # experiment's default (600 blocks and 600 s) the test passed after waiting it out (a 675 s CI
    # run is ~75 s of work plus those 600 s); now a lost proof costs at most 4 min and is reported.
    deadline_blocks = 240
    cmd = [sys.executable, "-m", "zkpot.cli", "experiment", "--quick", "--out", str(out), "--rounds", "1",
           "--fractions", "0.25", "--test-set-size", "8", "--min-correct", "4",
           "--round-deadline-blocks", str(deadline_blocks), "--base-port", str(free_base_port(4, 4))]
    t0 = time.monotonic()
    proc = run_tree(cmd, timeout=1500, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # kills the tree on timeout
    print(proc.stdout[-4000:], proc.stderr[-3000:], f"took {time.monotonic() - t0:.0f}s", sep="\n")
    assert proc.returncode == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("accuracy.png", "leaders.png", "proof_time.png", "results.md"):
        assert (out / name).stat().st_size > 1000, name
    kinds = {sc["kind"] for sc in results["scenarios"]}
    assert kinds == {"centralized", "fedavg", "zkpot-rule-sim", "zkpot"}
    (zk,) = [sc for sc in results["scenarios"] if sc["kind"] == "zkpot"]
    assert zk["ok"] and zk["ledgers_agree"] and zk["attackers"] == {"p0": "label_flip"}
    (r1,) = zk["rounds"]
    _assert_closed_with_everyone_in(json.loads(Path(zk["report"]).read_text()), deadline_blocks)
    assert r1["correct"]["p0"] < 4 and r1["excluded"]["p0"] == f"proven {r1['correct']['p0']}/8 < threshold 4"
    assert "p0" not in r1["included"] and len(r1["included"]) >= 2
    assert r1["aggregation_rule"] == "fedavg-threshold(min_correct=4)"
    assert not r1["leader_is_attacker"] and r1["prove_s_mean"] > 0
    assert abs(sum(r1["view_shares"].values()) - 1) < 0.01
    if sum(c >= 4 for p, c in r1["correct"].items() if int(p[1:]) < 4) >= 3:  # 2f+1 validators qualified
        assert r1["view_shares"].get("v0", 0) == 0  # the flipper's validator leads no view
    assert 0 < r1["accuracy"] <= 1 and "leadership" in results["targets"]
    assert "| zkpot-25% |" in (out / "results.md").read_text()


def _assert_closed_with_everyone_in(report: dict, deadline_blocks: int) -> None:
    """Every participant's proof, the flipper's too, was committed in the round, so the round closed
    when the last one came in and not at its deadline. The assertions after this one can hold either
    way (they read each participant's own report), so without it a lost submission only showed as a
    run that waited out the deadline.

    One CI run took 675 s, which fits a round that waited out its 600 s deadline; no local run of
    this test (idle or loaded) has lost a proof since. The likely cause, found since: gRPC cut any
    call that streamed nothing for ~90 s under our clients' keepalive pings ('Too many pings'), so
    a ProveRound slowed by a loaded machine was proven again from the start and came in late
    (fixed: grpcutil.server_keepalive_options, tests/test_grpc_keepalive.py). Until CI runs show
    it gone, a lost proof is reported as a warning naming each participant's stage (CI's summary
    shows it) rather than an assertion that would turn the whole CI red."""
    (rr,) = report["rounds"]
    stages = {s["participant"]: (s["stage"], s["height"], s["admission_reason"] or s["ledger_reason"])
              for s in rr["submissions"]}
    committed = [p for p, (_, height, _) in stages.items() if 0 < height <= rr["close_height"]]
    if sorted(committed) != ["p0", "p1", "p2", "p3"] or rr["close_height"] >= rr["open_height"] + deadline_blocks:
        warnings.warn(f"LOST PROOF? not every proof was committed before the round's deadline: {stages}, "
                      f"round {rr.get('open_height')}..{rr.get('close_height')}", stacklevel=2)


def test_summary_reports_the_attackers_share_of_leadership() -> None:
    """Issue 21: per round, the share of the next epoch's views and of the round's committed blocks
    that attacker-operated validators lead (from the devnet report's next_view_shares and
    blocks_proposed)."""
    from zkpot.experiment.config import ExperimentConfig
    from zkpot.experiment.zkpot_runs import summarize

    sub = {"aggregated": True, "admitted": True, "admission_reason": "", "claimed_correct": 7, "test_set_size": 8,
           "prove_s": 1.0, "ledger_reason": ""}
    report = {"ok": True, "ledgers": {"agree": True}, "rounds": [{
        "round": 1, "aggregation_rule": "fedavg-threshold(min_correct=4)", "next_leaders": ["v1", "v2", "v3", "v0"],
        "next_leader_scores": [7, 7, 6, 2], "next_view_shares": {"v1": 0.4, "v2": 0.4, "v3": 0.2, "v0": 0.0},
        "blocks_proposed": {"v0": 3, "v1": 4, "v2": 2, "v3": 1}, "global_accuracy_holdout": 0.8,
        "global_accuracy": 0.75, "next_global_model_cid": "cid", "wall_s": 10.0,
        "submissions": [{**sub, "participant": p} for p in ("p1", "p2", "p3")]
        + [{**sub, "participant": "p0", "aggregated": False, "claimed_correct": 2}]}]}
    (r,) = summarize(report, ExperimentConfig(out_dir=Path(".")), {"p0": "label_flip"})["rounds"]
    assert r["attacker_view_share"] == 0.0 and r["attacker_block_share"] == 0.3
    (r,) = summarize(report, ExperimentConfig(out_dir=Path(".")), {"p1": "label_flip"})["rounds"]
    assert r["attacker_view_share"] == 0.4 and r["leader_is_attacker"]


def test_the_leaders_plot_shows_each_validators_share_of_views(tmp_path):
    """Issue 21: the plot stacks every validator's share of the next epoch's views per round."""
    from zkpot.experiment import plots

    def rnd(r: int, shares: dict[str, float]) -> dict:
        return {"round": r, "view_shares": shares, "leader": "v1", "leader_operator": "p1", "leader_is_attacker": False}

    results = {"config": {"validators": 4}, "scenarios": [
        {"name": "zkpot-25%", "kind": "zkpot", "attackers": {"p0": "label_flip"},
         "rounds": [rnd(1, {"v1": 0.4, "v2": 0.4, "v3": 0.2}), rnd(2, {"v1": 0.5, "v2": 0.25, "v3": 0.25})]},
    ]}
    path = plots.leaders(results, tmp_path / "leaders.png")
    assert path is not None and path.stat().st_size > 1000

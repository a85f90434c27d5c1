"""End to end: a devnet with secure aggregation, as real processes with real proofs.

One of three participants proves and then drops out of the masking phase; the other two must
recover its mask key from their Shamir shares, remove every mask, and form an aggregate that the
ledgers check against the proofs' KZG commitments. No model parameters may appear on chain.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from zkp_env import free_port, run_devnet, start_service, stop_service, wait_serving

from zkpot import grpcutil
from zkpot.devnet.plan import free_base_port
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2, ledger_pb2_grpc

pytestmark = pytest.mark.slow

VALIDATORS, PARTICIPANTS = 4, 3


@pytest.fixture(scope="module")
def secure_devnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, int]:
    data_dir = tmp_path_factory.mktemp("devnet-secure")
    base = free_base_port(VALIDATORS, PARTICIPANTS)
    code, stdout, stderr = run_devnet(
        ["--secure-aggregation", "--validators", str(VALIDATORS), "--participants", str(PARTICIPANTS),
         "--rounds", "1", "--test-set-size", "8", "--min-correct", "1", "--data-dir", str(data_dir),
         "--base-port", str(base), "--round-deadline-blocks", "50", "--idle-block-ms", "800", "--no-attack-checks",
         "--behaviour", "p2=drop_mask"],
        "secure devnet")
    if code != 0:
        pytest.fail(f"devnet exited {code}\n{stdout[-4000:]}\n{stderr[-4000:]}")
    return data_dir, json.loads((data_dir / "report.json").read_text()), base


def test_dropped_member_is_recovered_and_the_aggregate_checks_against_the_commitments(secure_devnet) -> None:
    _, report, _ = secure_devnet
    assert report["ok"], report
    (r1,) = report["rounds"]
    assert r1["secure_aggregation"] and r1["closed"]
    assert r1["dropped"] == ["p2"]
    assert "secure aggregate of 2 member(s) (1 dropped" in r1["aggregate_note"], r1["aggregate_note"]
    assert r1["accepted_submissions"] == 2
    assert r1["next_global_model_cid"] != r1["global_model_cid"]
    assert report["ledgers"]["agree"]


def test_no_model_parameters_on_any_ledger(secure_devnet) -> None:
    data_dir, _, _ = secure_devnet
    genesis = Genesis.load(data_dir / "genesis.json")

    async def scan(target: str) -> dict[str, int]:
        counts = {"submit_proof": 0, "masked_update": 0, "mask_reveal": 0}
        async with grpcutil.channel(target) as ch:
            stub = ledger_pb2_grpc.LedgerStub(ch)
            page = await stub.GetBlocks(ledger_pb2.GetBlocksRequest(from_height=1, limit=500), timeout=30)
            for stored in page.blocks:
                for tx in stored.block.txs:
                    kind = tx.WhichOneof("body")
                    if kind in counts:
                        counts[kind] += 1
                    if kind == "submit_proof":
                        assert not tx.submit_proof.model_params and not tx.submit_proof.model_cid
                        assert tx.submit_proof.mask_public_key and tx.submit_proof.self_seed_commitment
            summary = await stub.GetRound(ledger_pb2.GetRoundRequest(round=1), timeout=10)
            assert summary.phase == ledger_pb2.ROUND_PHASE_CLOSED
            assert all(not s.model_cid for s in summary.submissions)
        return counts

    # the devnet has stopped: reopen one validator's ledger in a fresh ledger process
    target = f"127.0.0.1:{free_port()}"
    log = data_dir / "reopened-ledger.log"
    proc = start_service(["ledger", "serve", "--data-dir", str(data_dir / "nodes" / "v1" / "ledger"),
                          "--genesis", str(data_dir / "genesis.json"), "--task-dir", str(data_dir / "task"),
                          "--listen", target], log)
    try:
        wait_serving(proc, target, log)
        counts = asyncio.run(scan(target))
    finally:
        stop_service(proc)
    assert counts["submit_proof"] == PARTICIPANTS
    assert counts["masked_update"] == 2                 # p2 dropped
    assert counts["mask_reveal"] == 2                   # p0, p1: own self seeds + keys for p2's shares
    assert genesis.manifest.secure_aggregation

"""The verifier as a real process (`python -m zkpot.cli verifier serve`), called over gRPC."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from zkp_env import free_port, other_test_set_proof, resign, shared_env, start_service, stop_service, wait_serving

from zkpot import chain, grpcutil, model_codec, refusal
from zkpot.crypto import KeyPair
from zkpot.genesis import Genesis, Member
from zkpot.v1 import types_pb2, verifier_pb2, verifier_pb2_grpc
from zkpot.zkp import model

R = refusal.R


@pytest.fixture(scope="module")
def verifier():
    env = shared_env()
    port, mport = free_port(), free_port()
    log_path = env.root / "verifier.log"
    proc = start_service(["verifier", "serve", "--task-dir", str(env.task.dir), "--genesis", str(env.genesis_path),
                          "--listen", f"127.0.0.1:{port}", "--metrics-port", str(mport), "--node", "v0"], log_path)
    try:
        wait_serving(proc, f"127.0.0.1:{port}", log_path)
        yield f"127.0.0.1:{port}", mport
    finally:
        assert stop_service(proc) == 0, log_path.read_text()[-2000:]


def _verify(target: str, txs: list[types_pb2.Transaction]) -> list[verifier_pb2.VerifyResult]:
    async def go() -> list[verifier_pb2.VerifyResult]:
        async with grpcutil.channel(target) as ch:
            resp = await verifier_pb2_grpc.VerifierStub(ch).Verify(verifier_pb2.VerifyRequest(txs=txs), timeout=120)
            return list(resp.results)

    return asyncio.run(go())


def _cases() -> dict[str, tuple[types_pb2.Transaction, int]]:
    env = shared_env()
    tx, alice, bob = env.honest_tx, env.alice, env.bob
    sp = tx.submit_proof
    tampered = bytearray(sp.proof)
    tampered[len(tampered) // 2] ^= 0x01
    other_model = model.encode(model.init_model(env.task.arch, seed=99))
    bad_sig = types_pb2.Transaction()
    bad_sig.CopyFrom(tx)
    bad_sig.nonce = 5  # signature no longer covers the transaction
    claim = sp.claimed_correct + 1 if sp.claimed_correct < 8 else sp.claimed_correct - 1
    return {
        "honest": (tx, refusal.ACCEPTED),
        "tampered_proof": (resign(tx, alice, proof=bytes(tampered)), refusal.INVALID_PROOF),
        "higher_claim": (resign(tx, alice, claimed_correct=claim), refusal.CLAIM_MISMATCH),
        "other_test_set": (resign(tx, alice, proof=other_test_set_proof()), refusal.INVALID_PROOF),
        "copied_to_bob": (resign(tx, bob, participant=bob.public), refusal.INVALID_PROOF),
        "sent_by_bob": (resign(tx, bob), refusal.SUBMITTER_MISMATCH),
        "replayed_round_2": (resign(tx, alice, round=2), refusal.INVALID_PROOF),
        "other_task": (resign(tx, alice, task_id=b"\x07" * 32), refusal.WRONG_TASK),
        "other_model": (resign(tx, alice, model_params=other_model, model_cid=model_codec.model_cid(other_model)),
                        refusal.MODEL_MISMATCH),
        "cid_mismatch": (resign(tx, alice, model_params=other_model), refusal.MODEL_MISMATCH),
        "commitment_field": (resign(tx, alice, model_commitment=bytes(len(sp.model_commitment))),
                             refusal.COMMITMENT_MISMATCH),
        "bad_signature": (bad_sig, refusal.BAD_SIGNATURE),
        "trailing_bytes": (resign(tx, alice, proof=sp.proof + bytes(32)), refusal.MALFORMED),
        "not_a_proof": (chain.sign_tx(alice, types_pb2.Transaction(payload=b"x")), refusal.MALFORMED),
    }


def test_each_forgery_has_its_own_reason_and_the_honest_proof_passes(verifier) -> None:
    target, mport = verifier
    cases = _cases()
    results = _verify(target, [tx for tx, _ in cases.values()])
    assert len(results) == len(cases)
    for (name, (tx, want)), got in zip(cases.items(), results, strict=True):
        assert got.tx_id == chain.tx_id(tx), name
        assert got.reason == want, f"{name}: {R.Name(got.reason)} ({got.detail})"
        assert got.valid == (want == refusal.ACCEPTED), name
        assert not got.cached
        if not got.valid:
            assert got.detail, name
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    for label in ("invalid_proof", "claim_mismatch", "wrong_task", "submitter_mismatch", "model_mismatch",
                  "commitment_mismatch", "bad_signature", "malformed"):
        assert f'zkpot_verifier_rejections_total{{node="v0",reason="{label}",service="verifier"}}' in metrics, label
    assert "zkpot_verifier_verify_seconds_bucket" in metrics


def test_resubmitted_transaction_is_served_from_cache(verifier) -> None:
    target, _ = verifier
    env = shared_env()
    again = resign(env.honest_tx, env.alice)  # re-signed identically (ed25519 is deterministic)
    first = _verify(target, [env.honest_tx, again, env.honest_tx])
    assert all(r.valid for r in first)
    assert all(r.cached for r in first)  # identical tx verified by the previous test (or once in this batch)
    forged = types_pb2.Transaction()
    forged.CopyFrom(env.honest_tx)
    forged.signature = bytes(64)  # same tx id, other signature: not a cache hit
    (r,) = _verify(target, [forged])
    assert not r.cached and r.reason == refusal.BAD_SIGNATURE


def test_verifier_refuses_a_genesis_of_another_task(tmp_path) -> None:
    env = shared_env()
    other_pub = KeyPair.from_seed(b"\x05" * 32)
    tx = types_pb2.Transaction()
    tx.CopyFrom(env.task.publish_tx)
    tx.publish_task.manifest.name = "another task"
    tx.publish_task.task_id = chain.task_id(tx.publish_task.manifest)
    tx.publish_task.manifest.publisher = other_pub.public
    tx.publish_task.task_id = chain.task_id(tx.publish_task.manifest)
    chain.sign_tx(other_pub, tx)
    g = Genesis("other", 0, (Member("v0", other_pub.public),), (), tx)
    g.save(tmp_path / "genesis.json")
    log_path = tmp_path / "v.log"
    genesis = str(tmp_path / "genesis.json")
    proc = start_service(["verifier", "serve", "--task-dir", str(env.task.dir), "--genesis", genesis,
                          "--listen", f"127.0.0.1:{free_port()}", "--node", "vx"], log_path)
    assert proc.wait(60) != 0
    assert "is not the genesis task" in log_path.read_text()


def test_a_flood_of_distinct_checks_is_refused_at_once_and_service_goes_on(verifier) -> None:
    """The queue of pending checks is bounded: too many at once -> RESOURCE_EXHAUSTED, no work done."""
    import grpc

    from services.verifier.server import MAX_PENDING

    target, _ = verifier
    env = shared_env()
    flood = []
    for nonce in range(MAX_PENDING + 1):
        tx = types_pb2.Transaction()
        tx.CopyFrom(env.honest_tx)
        tx.nonce = 10_000 + nonce  # a distinct transaction each
        flood.append(resign(tx, env.alice))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _verify(target, flood)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "verifier busy" in info.value.details()
    (ok,) = _verify(target, [env.honest_tx])
    assert ok.valid

"""The prover as a real process: ProveRound over gRPC streams stages and a proof that verifies."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zkp_env import free_port, shared_env, start_service, stop_service, wait_serving

from zkpot import grpcutil, model_codec
from zkpot.v1 import prover_pb2, prover_pb2_grpc
from zkpot.zkp import model, submission
from zkpot.zkp.verify import check_submission


@pytest.fixture(scope="module")
def prover():
    env = shared_env()
    port = free_port()
    log_path = env.root / "prover.log"
    proc = start_service(["prover", "serve", "--task-dir", str(env.task.dir), "--shard", str(env.shard_path),
                          "--listen", f"127.0.0.1:{port}", "--metrics-port", str(free_port()), "--node", "p0"],
                         log_path)
    try:
        wait_serving(proc, f"127.0.0.1:{port}", log_path)
        yield f"127.0.0.1:{port}"
    finally:
        assert stop_service(proc) == 0, log_path.read_text()[-2000:]


def _request(**changes: object) -> prover_pb2.ProveRoundRequest:
    env = shared_env()
    req = prover_pb2.ProveRoundRequest(task_id=env.task.task_id, round=3, participant=env.bob.public,
                                       global_model=env.task.initial_model, local_epochs=3, seed=11)
    for k, v in changes.items():
        setattr(req, k, v)
    return req


async def _prove(target: str, req: prover_pb2.ProveRoundRequest) -> tuple[list[str], prover_pb2.ProveRoundResult,
                                                                           list[float]]:
    stages: list[str] = []
    result = None
    health_latency: list[float] = []
    async with grpcutil.channel(target) as ch:
        stub = prover_pb2_grpc.ProverStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        async for ev in stub.ProveRound(req, timeout=120):
            if ev.WhichOneof("event") == "stage":
                stages.append(ev.stage)
                if ev.stage == "proving":  # the event loop answers while the worker proves
                    t0 = time.perf_counter()
                    resp = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    assert resp.status == health_pb2.HealthCheckResponse.SERVING
                    health_latency.append(time.perf_counter() - t0)
            else:
                result = ev.result
    assert result is not None
    return stages, result, health_latency


def test_prove_round_streams_stages_and_the_result_verifies(prover) -> None:
    env = shared_env()
    stages, r, latency = asyncio.run(_prove(prover, _request()))
    assert stages == ["training", "compiling", "witness", "proving"]
    assert latency and max(latency) < 1.0
    assert r.test_set_size == 8 and r.quantized_accuracy == r.claimed_correct / 8
    assert r.model_cid == model_codec.model_cid(r.model_params)
    assert r.prove_seconds > 0 and r.train_seconds > 0
    tx = submission.submit_proof_tx(env.bob, env.task.task_id, 3, r.proof, r.model_commitment, r.claimed_correct,
                               r.model_params)
    verdict = check_submission(env.task, tx, env.root)
    assert verdict.valid, verdict


async def _expect_error(target: str, req: prover_pb2.ProveRoundRequest) -> grpc.aio.AioRpcError:
    async with grpcutil.channel(target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in prover_pb2_grpc.ProverStub(ch).ProveRound(req, timeout=30):
                pass
    return info.value


def test_client_helper_returns_the_result(prover) -> None:
    from services.prover.client import prove_round

    stages: list[str] = []
    r = asyncio.run(prove_round(prover, _request(round=4, local_epochs=1), on_stage=stages.append))
    assert stages[-1] == "proving" and len(r.proof) == shared_env().task.proof_size


def test_bad_requests_get_clear_statuses(prover) -> None:
    env = shared_env()
    net = model.decode(env.task.initial_model, env.task.arch)
    with torch.no_grad():
        net.fc1.weight[0, 0] = env.task.weight_bound * 4
    cases = [
        (_request(task_id=b"\x01" * 32), grpc.StatusCode.INVALID_ARGUMENT, "not this prover's task"),
        (_request(global_model=b"not a model"), grpc.StatusCode.INVALID_ARGUMENT, "global_model"),
        (_request(participant=b"short"), grpc.StatusCode.INVALID_ARGUMENT, "participant"),
        (_request(global_model=model.encode(net)), grpc.StatusCode.FAILED_PRECONDITION, "calibrated range"),
        # a test hook is not a production feature: without --allow-behaviours no caller can make
        # this prover train as an attacker (issue 17.4)
        (_request(behaviour="label_flip"), grpc.StatusCode.PERMISSION_DENIED, "trains honestly only"),
    ]
    for req, code, text in cases:
        err = asyncio.run(_expect_error(prover, req))
        assert err.code() == code, (text, err.details())
        assert text in err.details()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_prover_stopped_mid_proof_leaves_no_process_behind(sig: str) -> None:
    """Issue 19.2: stopping a prover while its worker proves (SIGTERM: the service's own shutdown;
    SIGKILL: a crash) must not leave its worker processes, or multiprocessing's resource tracker,
    alive and reparented to init."""
    import os
    import signal
    import subprocess
    import sys

    from zkpot import lifetime

    env = shared_env()
    port = free_port()
    log_path = env.root / f"prover-{sig}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "zkpot.cli", "prover", "serve", "--task-dir", str(env.task.dir),
                                 "--shard", str(env.shard_path), "--listen", f"127.0.0.1:{port}", "--node", "p-stop"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    group = {proc.pid}
    try:
        wait_serving(proc, f"127.0.0.1:{port}", log_path)
        assert len(lifetime.group_members(group)) >= 2  # the service and its worker(s)

        async def until_proving() -> None:
            async with grpcutil.channel(f"127.0.0.1:{port}") as ch:
                async for ev in prover_pb2_grpc.ProverStub(ch).ProveRound(_request(round=6), timeout=120):
                    if ev.WhichOneof("event") == "stage" and ev.stage in ("witness", "proving"):
                        return

        asyncio.run(until_proving())
        os.kill(proc.pid, getattr(signal, sig))
        proc.wait(30)
        deadline = time.monotonic() + 20
        while lifetime.group_members(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lifetime.group_members(group) == [], log_path.read_text()[-2000:]
    finally:
        lifetime.kill_groups(group, signal.SIGKILL)

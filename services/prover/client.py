"""Calling a prover: one ProveRound, stages reported through a callback, the result returned."""

from __future__ import annotations

from collections.abc import Callable

from zkpot import grpcutil
from zkpot.v1 import prover_pb2, prover_pb2_grpc


async def prove_round(target: str, request: prover_pb2.ProveRoundRequest,
                      on_stage: Callable[[str], None] | None = None,
                      timeout_s: float = 600.0) -> prover_pb2.ProveRoundResult:
    """Run ProveRound on `target` (HOST:PORT); raises grpc.aio.AioRpcError with the service's status."""
    async with grpcutil.channel(target) as ch:
        stub = prover_pb2_grpc.ProverStub(ch)
        async for event in stub.ProveRound(request, timeout=timeout_s):
            if event.WhichOneof("event") == "stage":
                if on_stage is not None:
                    on_stage(event.stage)
            else:
                return event.result
    raise RuntimeError(f"prover {target} ended the stream without a result")

"""`zkpot participant run`: the round driver plus its gRPC service (Participant.Status, health)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc

from zkpot import grpcutil, metrics
from zkpot.crypto import KeyPair
from zkpot.errors import StartupError
from zkpot.genesis import Genesis
from zkpot.v1 import participant_pb2, participant_pb2_grpc, prover_pb2_grpc

from . import metrics as m
from .rounds import Options, RoundDriver
from .state import ParticipantState
from .validators import Endpoint, Validators

log = logging.getLogger("zkpot.participant")


@dataclass
class ServeArgs:
    key: Path
    genesis: Path
    validators: list[Endpoint]
    prover: str
    data_dir: Path
    listen: str
    node: str
    metrics_port: int | None = None
    options: Options | None = None


class ParticipantServicer(participant_pb2_grpc.ParticipantServicer):
    def __init__(self, driver: RoundDriver) -> None:
        self.driver = driver

    async def Status(
        self, request: participant_pb2.ParticipantStatusRequest, context: grpc.aio.ServicerContext
    ) -> participant_pb2.ParticipantStatus:
        d = self.driver
        return participant_pb2.ParticipantStatus(
            participant=d.key.public, task_id=d.genesis.task_id, height=max(0, d.follower.height),
            current_round=d.round, phase=d.phase, last_accepted_round=d.state.last_accepted_round(),
            rounds=[rec.to_proto() for _, rec in sorted(d.state.records.items())],
            validator=str(d.validators.current), task_finished=d.finished)


def load_identity(key_path: Path, genesis_path: Path) -> tuple[KeyPair, Genesis]:
    try:
        key = KeyPair.load(key_path)
    except FileNotFoundError as exc:
        raise StartupError(f"no key file {key_path} (make one with `zkpot keys new`)") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise StartupError(f"key file {key_path} is unreadable: {exc}") from exc
    genesis = Genesis.load(genesis_path)
    if key.public not in genesis.participant_keys:
        raise StartupError(f"key {key.public.hex()[:16]} ({key_path}) is not a participant in {genesis_path}: "
                           "the chain refuses its transactions; use a participant's key or a genesis that names it")
    return key, genesis


async def serve(args: ServeArgs) -> None:
    key, genesis = load_identity(args.key, args.genesis)
    state = ParticipantState(args.data_dir, key.public, genesis.task_id)
    metrics.init("participant", args.node, args.metrics_port)
    m.set_phase("starting")
    m.last_accepted_round.set(state.last_accepted_round())
    validators = Validators(args.validators)
    prover_channel = grpcutil.channel(args.prover, options=grpcutil.FAST_RECONNECT_OPTIONS)
    driver = RoundDriver(key, genesis, state, validators, prover_pb2_grpc.ProverStub(prover_channel), args.prover,
                         args.options or Options())
    info = await driver.check_prover()
    await driver.check_chain()
    log.info("event=started participant=%s task=%s prover=%s (%d private samples) validators=%s state=%s",
             key.public.hex()[:16], genesis.task_id.hex()[:16], args.prover, info.shard_samples,
             ",".join(map(str, args.validators)), args.data_dir)

    def stop_on_failure(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the round driver failed: %r; stopping", task.exception(), exc_info=task.exception())
            os.kill(os.getpid(), signal.SIGTERM)  # grpcutil.serve stops on it; the process exits non-zero

    rounds = asyncio.create_task(driver.run(), name="rounds")
    rounds.add_done_callback(stop_on_failure)

    def register(server: grpc.aio.Server) -> str:
        participant_pb2_grpc.add_ParticipantServicer_to_server(ParticipantServicer(driver), server)
        return participant_pb2.DESCRIPTOR.services_by_name["Participant"].full_name

    async def on_stop() -> None:
        rounds.cancel()
        await asyncio.gather(rounds, return_exceptions=True)
        await validators.close()
        await prover_channel.close()

    # it answers only Status: small requests
    await grpcutil.serve(args.listen, [register], on_stop=on_stop, max_receive_bytes=64 * 1024)
    if not rounds.cancelled() and rounds.done() and rounds.exception() is not None:
        raise SystemExit(1)

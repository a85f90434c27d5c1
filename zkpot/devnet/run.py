"""The devnet orchestrator: publish a task, start every service as its own process, drive the
participants through the FL rounds over gRPC, watch the chain, and write the report.

Nothing here is on the consensus path: the orchestrator only plays the participants' client
role (ask the prover, sign, submit) and the observer's (read ledgers, scrape metrics).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from zkpot import chain, grpcutil
from zkpot.crypto import KeyPair
from zkpot.devnet import adapters, prometheus, secure
from zkpot.devnet.plan import (
    DevnetPlan,
    ParticipantPlan,
    ValidatorPlan,
    free_base_port,
    make_genesis,
    make_plan,
    plan_ports,
)
from zkpot.devnet.procs import ProcessGroup, stopped_message
from zkpot.devnet.progress import Progress
from zkpot.devnet.report import RoundStats, SubmissionStats, write_report
from zkpot.genesis import Genesis
from zkpot.ports import ports_in_use
from zkpot.v1 import (
    consensus_pb2,
    consensus_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    prover_pb2,
    prover_pb2_grpc,
    types_pb2,
)

log = logging.getLogger("zkpot.devnet")
MARKER = ".zkpot-devnet"


@dataclass
class DevnetConfig:
    data_dir: Path
    validators: int = 4
    participants: int = 4
    rounds: int = 3
    base_port: int = 26000
    existing: str = "replace"           # replace | reuse-task | fail
    test_set_size: int = 0               # 0: task default
    shard_size: int = 0                  # 0: one proof over the whole public test set
    prove_workers: int = 1               # per prover; the devnet's provers share the machine
    local_epochs: int = 0               # 0: prover default
    alpha: float = 0.5
    seed: int = 7
    parallel_proofs: int = 2
    round_deadline_blocks: int = 300
    min_correct: int = 0                # 0: task default
    aggregation_rule: str = ""          # zkpot.aggregation rule; "": task default (fedavg-threshold)
    secure_aggregation: bool = False    # pairwise-masked aggregation: no model leaves its participant
    secagg_threshold: int = 0           # 0: zkpot.secagg.default_threshold (ceil(2n/3))
    report_path: Path | None = None
    idle_block_ms: int = 1000
    attack_checks: bool = True          # submit forged copies of a real proof and expect rejection
    prometheus: bool = False            # also run a real Prometheus scraping every process
    tls: bool = False                   # mutual TLS between every process (dev CA, one cert per node)
    linger_s: float = 0.0               # keep the network up this long after the last round
    # experiments: participant name -> Byzantine behaviour (BEHAVIOURS); absent: honest
    behaviours: dict[str, str] = field(default_factory=dict)


# label_flip / scaled / random / free_ride: the prover trains so (zkpot.zkp.model.train_as) and proves
# the result honestly; copy: resubmit another participant's proof under one's own key (the proof's
# binding to its submitter must get it refused); silent: never submit (the round closes at its deadline).
# Secure aggregation only: drop_mask proves, then never sends its masked update (the others' shares
# recover its mask key); mask_cheat proves an honest model but masks a scaled one (the commitment
# check must void the aggregate).
BEHAVIOURS = ("honest", "label_flip", "scaled", "random", "free_ride", "copy", "silent", "drop_mask", "mask_cheat")


def prover_behaviour(behaviour: str) -> str:
    """What the prover trains as: the training-time behaviours; the others train honestly."""
    from zkpot.zkp.model import BEHAVIOURS as TRAINING

    return behaviour if behaviour in TRAINING and behaviour != "honest" else ""


@dataclass
class Devnet:
    config: DevnetConfig
    plan: DevnetPlan
    genesis: Genesis
    procs: ProcessGroup
    progress: Progress
    rounds: dict[int, RoundStats] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    attacks: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)  # services that died and were restarted
    t_start: float = field(default_factory=time.monotonic)
    admitted_txs: dict[int, dict[str, types_pb2.Transaction]] = field(default_factory=dict)  # round -> name -> tx


def preflight(config: DevnetConfig) -> None:
    """Refuse a run that cannot start, leaving the previous devnet's data dir as it was."""
    busy = ports_in_use(plan_ports(config.base_port, config.validators, config.participants))
    if busy:
        hint = free_base_port(config.validators, config.participants)
        raise SystemExit(f"ports {busy[:8]} are in use (another devnet?); try --base-port {hint} "
                         f"(nothing in {config.data_dir} was changed)")
    if config.prometheus and prometheus.binary() is None:
        raise SystemExit("--prometheus needs a prometheus binary on PATH (Debian: apt-get install prometheus); "
                         f"nothing in {config.data_dir} was changed")
    from services.ledger.backup import lock_held

    # a ledger server still running on the old directory: deleting its files under it would corrupt
    # the recreated ledger when that server shuts down ("Sst file size mismatch")
    held = [str(p) for p in sorted(config.data_dir.glob("nodes/*/ledger")) if lock_held(p)]
    if held:
        raise SystemExit(f"a process still holds the ledger in {held[0]} (a `zkpot ledger serve` of the last "
                         f"devnet?); stop it first. Nothing in {config.data_dir} was changed")


def prepare_data_dir(config: DevnetConfig) -> None:
    d = config.data_dir
    if d.exists() and any(d.iterdir()):
        if not (d / MARKER).exists():
            raise SystemExit(f"{d} exists and was not made by `zkpot devnet`; choose another --data-dir")
        if config.existing == "fail":
            raise SystemExit(f"{d} holds an earlier devnet (use --existing replace or reuse-task)")
        keep = {"task", "keys", "shards", MARKER} if config.existing == "reuse-task" else {MARKER}
        for child in d.iterdir():
            if child.name not in keep:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text("made by zkpot devnet; safe to delete\n")


def _service_args(plan: DevnetPlan, v: ValidatorPlan, config: DevnetConfig) -> dict[str, list[str]]:
    peers = [f"--peer={o.name}@{o.consensus}" for o in plan.validators if o.name != v.name]
    return {
        "ledger": ["ledger", "serve", "--data-dir", str(v.data_dir / "ledger"), "--genesis", str(plan.genesis_path),
                   "--listen", v.ledger, "--metrics-port", str(v.ledger_metrics), "--node", v.name,
                   "--task-dir", str(plan.task_dir)],
        "verifier": ["verifier", "serve", "--task-dir", str(plan.task_dir), "--genesis", str(plan.genesis_path),
                     "--listen", v.verifier, "--metrics-port", str(v.verifier_metrics), "--node", v.name],
        "consensus": ["consensus", "serve", "--genesis", str(plan.genesis_path), "--key", str(v.key_path),
                      "--node", v.name, "--listen", v.consensus, "--ledger", v.ledger, "--verifier", v.verifier,
                      "--data-dir", str(v.data_dir / "consensus"), "--metrics-port", str(v.consensus_metrics),
                      "--idle-block-ms", str(config.idle_block_ms), *peers],
    }


def setup_tls(plan: DevnetPlan) -> dict[str, dict[str, str]]:
    """A dev CA and one certificate per node (its own identity for rate limits); the orchestrator
    and observer share a client certificate. Returns each process's environment."""
    from zkpot import tls

    root = plan.data_dir / "tls"
    tls.make_ca(root / "ca")
    env = {}
    for name in [*(v.name for v in plan.validators), *(p.name for p in plan.participants), "devnet"]:
        tls.issue(root / "ca", name, root / name)
        env[name] = {grpcutil.ENV_TLS_DIR: str(root / name)}
    grpcutil.configure_tls(root / "devnet")
    return env


async def start_services(net: Devnet) -> None:
    plan, procs = net.plan, net.procs
    t0 = time.monotonic()
    tls_env = setup_tls(plan) if net.config.tls else {}
    # ledgers and verifiers first: a replica needs both before it can vote
    for kind in ("ledger", "verifier"):
        for v in plan.validators:
            procs.start(f"{v.name}-{kind}", _service_args(plan, v, net.config)[kind], env=tls_env.get(v.name))
    for p in plan.participants:
        procs.start(f"{p.name}-prover", ["prover", "serve", "--task-dir", str(plan.task_dir), "--shard",
                                         str(p.shard_path), "--listen", p.prover, "--metrics-port",
                                         str(p.prover_metrics), "--node", p.name,
                                         # the participants' provers share this machine's cores
                                         "--prove-workers", str(net.config.prove_workers)],
                    env=tls_env.get(p.name))
    await _wait_all(net, [v.ledger for v in plan.validators] + [v.verifier for v in plan.validators])
    for v in plan.validators:
        procs.start(f"{v.name}-consensus", _service_args(plan, v, net.config)["consensus"], env=tls_env.get(v.name))
    await _wait_all(net, [v.consensus for v in plan.validators] + [p.prover for p in plan.participants])
    v0 = plan.validators[0]
    procs.start("observer", ["observer", "serve", "--ledger", v0.ledger, "--genesis", str(plan.genesis_path),
                             "--task-dir", str(plan.task_dir), "--metrics-port", str(plan.observer_metrics)],
                env=tls_env.get("devnet"))
    if net.config.prometheus:
        binary = prometheus.binary()
        if binary is None:
            raise SystemExit("--prometheus needs a prometheus binary on PATH (Debian: apt-get install prometheus)")
        rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "zkpot.rules.yml"
        config = prometheus.write_config(plan, plan.data_dir / "prometheus.yml", rules)
        procs.start_binary("prometheus", [binary, *prometheus.args(plan, config)])
        net.progress.say(f"prometheus: http://127.0.0.1:{plan.prometheus_port} (config {config})")
    net.timings["start_services_s"] = time.monotonic() - t0


async def _wait_all(net: Devnet, targets: list[str], timeout_s: float = 120.0) -> None:
    waits = [asyncio.create_task(grpcutil.wait_healthy(t, timeout_s)) for t in targets]
    try:
        while not all(w.done() for w in waits):
            dead = net.procs.dead()
            if dead:
                raise RuntimeError(f"{dead[0].name} exited during start-up:\n{dead[0].tail()}")
            await asyncio.sleep(0.3)
        for w in waits:
            w.result()
    finally:
        for w in waits:
            w.cancel()


async def _get_round(stub: ledger_pb2_grpc.LedgerStub, r: int) -> ledger_pb2.RoundSummary | None:
    try:
        return await stub.GetRound(ledger_pb2.GetRoundRequest(round=r), timeout=5)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


async def _get_model(stub: ledger_pb2_grpc.LedgerStub, cid: str) -> bytes:
    chunks = [c.data async for c in stub.GetModel(ledger_pb2.GetModelRequest(cid=cid), timeout=30)]
    return b"".join(chunks)


async def run_participant(net: Devnet, p: ParticipantPlan, proof_slots: asyncio.Semaphore) -> None:
    """One participant's client: for each round, train+prove at its prover, sign, submit, wait."""
    key = KeyPair.load(p.key_path)
    task_id = net.genesis.task_id
    async with grpcutil.channel(p.validator.ledger) as lch, grpcutil.channel(p.prover) as pch, \
            grpcutil.channel(p.validator.consensus) as cch:
        ledger = ledger_pb2_grpc.LedgerStub(lch)
        prover = prover_pb2_grpc.ProverStub(pch)
        consensus = consensus_pb2_grpc.ConsensusStub(cch)
        behaviour = net.config.behaviours.get(p.name, "honest")
        for r in range(1, net.config.rounds + 1):
            summary = await _wait_round(ledger, r, lambda s: s is not None)
            if behaviour in ("silent", "copy"):  # experiments: no training, no proof of its own
                if behaviour == "copy":
                    await _submit_copy(net, ledger, consensus, p, key, r)
                await _wait_round(ledger, r, lambda s: s is not None and s.closed)
                continue
            global_model = await _get_model(ledger, summary.global_model_cid)
            stats = SubmissionStats(participant=p.name, round=r)
            net.rounds[r].submissions[p.name] = stats
            async with proof_slots:
                result = None
                request = prover_pb2.ProveRoundRequest(task_id=task_id, round=r, participant=key.public,
                                                       global_model=global_model,
                                                       local_epochs=net.config.local_epochs,
                                                       seed=net.config.seed * 1000 + r * 10 + p.index,
                                                       behaviour=prover_behaviour(behaviour))
                t0 = time.monotonic()
                async for event in prover.ProveRound(request, timeout=1800):
                    if event.WhichOneof("event") == "result":
                        result = event.result
                stats.prover_wall_s = time.monotonic() - t0
            if result is None:
                raise RuntimeError(f"{p.name}: prover returned no result in round {r}")
            stats.fill_from_prover(result)
            tx = types_pb2.Transaction(submit_proof=types_pb2.SubmitProof(
                task_id=task_id, round=r, participant=key.public, model_commitment=result.model_commitment,
                claimed_correct=result.claimed_correct, proof=result.proof, model_params=result.model_params,
                model_cid=result.model_cid, shards=result.shards))
            masking = None
            if net.genesis.manifest.secure_aggregation:  # the model stays here: deal mask-key shares instead
                keys, self_seed = secure.deal(key, net.genesis, tx.submit_proof)
                masking = secure.MaskingRound(r, keys, self_seed,
                                              adapters.param_vector(net.plan.task_dir, result.model_params),
                                              result.claimed_correct)
            chain.sign_tx(key, tx)
            stats.tx_id = chain.tx_id(tx).hex()
            t_submit = time.monotonic()
            resp = await consensus.SubmitTx(consensus_pb2.SubmitTxRequest(txs=[tx]), timeout=300)
            admission = resp.results[0]
            stats.admission_s = time.monotonic() - t_submit
            stats.admitted, stats.admission_reason = admission.admitted, admission.reason
            net.progress.submitted += 1
            if admission.admitted:
                net.admitted_txs.setdefault(r, {})[p.name] = tx
                net.progress.verified += 1
                committed = await _wait_tx(ledger, bytes.fromhex(stats.tx_id))
                stats.commit_s = time.monotonic() - t_submit
                stats.height = committed.height
                if not committed.result.accepted:  # a valid proof the state rules refused (e.g. free-riding)
                    stats.ledger_reason = committed.result.reason
            else:
                net.progress.rejected += 1
                net.progress.say(f"{p.name}: round {r} submission rejected: {admission.reason}")
            net.progress.draw()
            if net.config.attack_checks and p.index == 0 and admission.admitted:
                await run_attack_checks(net, consensus, tx, r)
            if net.genesis.manifest.secure_aggregation:
                await _secure_phases(net, ledger, consensus, p, key, r, masking if admission.admitted else None)
            await _wait_round(ledger, r, lambda s: s is not None and s.closed)


async def _secure_phases(net: Devnet, ledger: ledger_pb2_grpc.LedgerStub, consensus: consensus_pb2_grpc.ConsensusStub,
                         p: ParticipantPlan, key: KeyPair, r: int, masking: secure.MaskingRound | None) -> None:
    """Masking (as a member of the mask set) and unmasking (as a holder of shares) of round r."""
    behaviour = net.config.behaviours.get(p.name, "honest")
    if behaviour == "drop_mask":  # experiments: proves, then goes offline for the rest of the round
        return
    phase = secure.PHASE
    summary = await _wait_round(ledger, r,
                                lambda s: s is not None and (s.closed or s.phase != phase.ROUND_PHASE_PROOFS))
    if masking is not None and summary.phase == phase.ROUND_PHASE_MASKING and key.public in summary.mask_set:
        tx = secure.masked_update_tx(key, net.genesis, masking, summary, cheat=behaviour == "mask_cheat")
        await _submit_small(net, consensus, ledger, p, tx, f"round {r} masked update")
    summary = await _wait_round(ledger, r,
                                lambda s: s is not None and (s.closed or s.phase == phase.ROUND_PHASE_UNMASKING))
    if not summary.closed:
        tx = secure.reveal_tx(key, net.genesis, summary, masking)
        if tx is not None:
            await _submit_small(net, consensus, ledger, p, tx, f"round {r} mask-key reveal")


async def _submit_small(net: Devnet, consensus: consensus_pb2_grpc.ConsensusStub, ledger: ledger_pb2_grpc.LedgerStub,
                        p: ParticipantPlan, tx: types_pb2.Transaction, what: str) -> None:
    resp = await consensus.SubmitTx(consensus_pb2.SubmitTxRequest(txs=[tx]), timeout=60)
    if not resp.results[0].admitted:
        net.progress.say(f"{p.name}: {what} refused: {resp.results[0].reason}")
        return
    await _wait_tx(ledger, chain.tx_id(tx))


async def _submit_copy(net: Devnet, ledger: ledger_pb2_grpc.LedgerStub, consensus: consensus_pb2_grpc.ConsensusStub,
                       p: ParticipantPlan, key: KeyPair, r: int) -> None:
    """Experiments' copier: resubmit the first admitted round-r submission of someone else under its own
    key (re-signed); the proof's binding to its real submitter must get it refused at admission."""
    while True:
        others = {n: t for n, t in net.admitted_txs.get(r, {}).items() if n != p.name}
        if others:
            break
        summary = await _get_round(ledger, r)
        if summary is not None and summary.closed:
            return  # nothing to copy before the round closed
        await asyncio.sleep(0.25)
    tx = types_pb2.Transaction()
    tx.CopyFrom(others[min(others)])
    tx.submit_proof.participant = key.public
    chain.sign_tx(key, tx)
    stats = SubmissionStats(participant=p.name, round=r, claimed_correct=tx.submit_proof.claimed_correct,
                            tx_id=chain.tx_id(tx).hex())
    net.rounds[r].submissions[p.name] = stats
    resp = await consensus.SubmitTx(consensus_pb2.SubmitTxRequest(txs=[tx]), timeout=300)
    stats.admitted, stats.admission_reason = resp.results[0].admitted, resp.results[0].reason
    net.progress.say(f"{p.name} (copier): round {r} copied submission "
                     f"{'ADMITTED (bug!)' if stats.admitted else 'rejected: ' + stats.admission_reason}")


def forged_variants(net: Devnet, tx: types_pb2.Transaction) -> list[tuple[str, types_pb2.Transaction]]:
    """Cheats a participant could try with a real proof in hand; each must be refused."""
    owner = KeyPair.load(net.plan.participants[0].key_path)
    thief = KeyPair.load(net.plan.participants[-1].key_path) if len(net.plan.participants) > 1 else KeyPair.generate()
    variants = []

    def variant(name: str, key: KeyPair, edit) -> None:  # noqa: ANN001
        forged = types_pb2.Transaction()
        forged.CopyFrom(tx)
        edit(forged.submit_proof)
        forged.submit_proof.participant = key.public
        forged.nonce = 1  # a new transaction, not a duplicate of the honest one
        variants.append((name, chain.sign_tx(key, forged)))

    def tamper(sp: types_pb2.SubmitProof) -> None:
        target = sp.shards[0] if sp.shards else sp
        proof = bytearray(target.proof)
        proof[len(proof) // 2] ^= 0x01
        target.proof = bytes(proof)

    def inflate(sp: types_pb2.SubmitProof) -> None:
        sp.claimed_correct = sp.claimed_correct + 1

    def replay(sp: types_pb2.SubmitProof) -> None:
        sp.round = sp.round + 1

    variant("tampered_proof", owner, tamper)
    variant("inflated_claim", owner, inflate)
    variant("copied_to_other_submitter", thief, lambda sp: None)
    variant("replayed_next_round", owner, replay)
    return variants


async def run_attack_checks(net: Devnet, consensus: consensus_pb2_grpc.ConsensusStub,
                            tx: types_pb2.Transaction, r: int) -> None:
    for name, forged in forged_variants(net, tx):
        resp = await consensus.SubmitTx(consensus_pb2.SubmitTxRequest(txs=[forged]), timeout=120)
        result = resp.results[0]
        net.attacks.append({"round": r, "attack": name, "rejected": not result.admitted, "reason": result.reason})
        verdict = "rejected" if not result.admitted else "ADMITTED (bug!)"
        net.progress.say(f"attack check, round {r}: {name} {verdict}: {result.reason}")


async def _wait_round(stub: ledger_pb2_grpc.LedgerStub, r: int, ok, timeout_s: float = 3600):  # noqa: ANN001,ANN202
    deadline = time.monotonic() + timeout_s
    while True:
        summary = await _get_round(stub, r)
        if ok(summary):
            return summary
        if time.monotonic() > deadline:
            raise TimeoutError(f"round {r} did not reach the expected state")
        await asyncio.sleep(0.25)


async def _wait_tx(stub: ledger_pb2_grpc.LedgerStub, tx_id: bytes, timeout_s: float = 600) -> ledger_pb2.GetTxResponse:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return await stub.GetTx(ledger_pb2.GetTxRequest(tx_id=tx_id), timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.1)
    raise TimeoutError(f"transaction {tx_id.hex()[:16]} not committed after {timeout_s}s")


QUORUM_LOSS_DEADLINE_S = 120.0


def supervise(net: Devnet) -> None:
    """A dead service is restarted with backoff and recorded (report "restarts"), as a supervisor
    would: the network is built to survive it. The run stops only on a crash loop, or when more
    than f replicas have been down for longer than QUORUM_LOSS_DEADLINE_S (issue 19.1)."""
    now = time.monotonic()
    gave_up = net.procs.supervise(now)
    if gave_up:
        raise RuntimeError(f"{gave_up[0].name} keeps dying ({gave_up[0].restarts} restarts):\n{gave_up[0].tail()}")
    for event in net.procs.events[len(net.restarts):]:
        entry = {k: v for k, v in event.items() if k != "at"} | {"at_s": round(event["at"] - net.t_start, 1)}
        net.restarts.append(entry)
        net.progress.say(f"{entry['service']} {entry['event']}"
                         + (f" (exit code {entry['exit_code']})" if entry["event"] == "died" else
                            f" after {entry['down_s']}s down (attempt {entry['attempt']})"))
    replicas = [c for c in net.procs.down() if c.name.endswith("-consensus")]
    f = (len(net.plan.validators) - 1) // 3
    if len(replicas) > f:
        since = min(c.died_at or now for c in replicas)
        if now - since > QUORUM_LOSS_DEADLINE_S:
            raise RuntimeError(f"{len(replicas)} of {len(net.plan.validators)} replicas down for over "
                               f"{QUORUM_LOSS_DEADLINE_S:.0f}s (more than f = {f}): the network cannot commit")


async def watch(net: Devnet) -> None:
    """Observer: keeps the progress line and per-round figures current from validator 0."""
    v0 = net.plan.validators[0]
    async with grpcutil.channel(v0.consensus) as cch, grpcutil.channel(v0.ledger) as lch:
        consensus = consensus_pb2_grpc.ConsensusStub(cch)
        ledger = ledger_pb2_grpc.LedgerStub(lch)
        while True:
            supervise(net)
            try:
                status = await consensus.Status(consensus_pb2.StatusRequest(), timeout=2)
                net.progress.view = status.view
                net.progress.leader = net.genesis.name_of(status.leader)
                head = await ledger.Head(ledger_pb2.HeadRequest(), timeout=2)
                net.progress.height = head.height
                current = min(head.current_round, net.config.rounds)
                if current != net.progress.round and current >= 1:
                    net.progress.round = current
                    net.progress.submitted = net.progress.verified = net.progress.rejected = 0
                    net.rounds[current].started = net.rounds[current].started or time.monotonic()
                await _record_closed_rounds(net, ledger)
            except grpc.aio.AioRpcError as exc:
                log.debug("watch: %s", exc.details())
            net.progress.draw()
            await asyncio.sleep(0.5)


async def _record_closed_rounds(net: Devnet, ledger: ledger_pb2_grpc.LedgerStub) -> None:
    for r, stats in net.rounds.items():
        if stats.closed:
            continue
        summary = await _get_round(ledger, r)
        if summary is None or not summary.closed:
            return
        model = await _get_model(ledger, summary.next_global_model_cid)
        # torch evaluation is CPU work: keep it off the event loop
        global_acc, holdout_acc = await asyncio.to_thread(adapters.global_accuracy, net.plan.task_dir, model)
        schedule = await ledger.LeaderSchedule(ledger_pb2.LeaderScheduleRequest(), timeout=5)
        # everything is fetched: record it in one step, `closed` last, so a reader that sees the round
        # closed also sees its figures (a cancelled fetch above leaves the round unrecorded, not zeroed)
        stats.summary = summary
        stats.global_accuracy, stats.holdout_accuracy = global_acc, holdout_acc
        stats.next_leaders = [net.genesis.name_of(k) for k in schedule.leaders]
        stats.next_scores = list(schedule.scores)
        stats.closed = time.monotonic()
        net.progress.global_accuracy = stats.global_accuracy
        if r == max(net.rounds):  # the last round: not "training and proving" any more (issue 20.9)
            net.progress.stage = "all rounds closed: checking the ledgers"
        net.progress.say(
            f"round {r} closed at height {summary.close_height}: "
            f"{sum(s.aggregated for s in summary.submissions)}/{len(summary.submissions)} submissions aggregated, "
            f"global accuracy {100 * stats.global_accuracy:.1f}% "
            f"({100 * stats.holdout_accuracy:.1f}% on the whole held-out split), "
            f"next leaders {' > '.join(stats.next_leaders)}"
        )
        if summary.aggregate_note:
            net.progress.say(f"round {r}: {summary.aggregate_note}")


async def record_remaining_rounds(net: Devnet, timeout_s: float = 120.0) -> None:
    """After the participants finish: record every round's figures directly (not through the
    watcher, which is cancelled first so it cannot be interrupted half-way through a round)."""
    v0 = net.plan.validators[0]
    deadline = time.monotonic() + timeout_s
    async with grpcutil.channel(v0.ledger) as lch:
        ledger = ledger_pb2_grpc.LedgerStub(lch)
        while True:
            try:
                await _record_closed_rounds(net, ledger)
            except grpc.aio.AioRpcError as exc:
                log.debug("record: %s", exc.details())
            if all(s.closed for s in net.rounds.values()):
                return
            if time.monotonic() > deadline:
                open_rounds = [r for r, s in net.rounds.items() if not s.closed]
                raise TimeoutError(f"rounds {open_rounds} did not close within {timeout_s:.0f}s "
                                   "after every participant finished")
            await asyncio.sleep(0.25)


async def run_devnet(config: DevnetConfig) -> dict:
    t_start = time.monotonic()
    preflight(config)  # everything that can refuse the run, before the data dir is touched
    prepare_data_dir(config)
    plan = make_plan(config.data_dir, config.validators, config.participants, config.base_port)
    progress = Progress(config.rounds, config.participants)
    progress.stage = "publishing task"
    progress.say(f"zkpot devnet: {config.validators} validators, {config.participants} participants, "
                 f"{config.rounds} rounds, data in {config.data_dir}")
    t0 = time.monotonic()
    task_timings = adapters.publish_task(plan, config, progress)
    adapters.make_shards(plan, config)
    t_task = time.monotonic() - t0
    publish_tx = adapters.load_publish_tx(plan.task_dir)
    genesis = make_genesis(plan, publish_tx)
    net = Devnet(config, plan, genesis, ProcessGroup(plan.log_dir), progress,
                 rounds={r: RoundStats(round=r) for r in range(1, config.rounds + 1)})
    net.timings.update(task_timings)
    net.timings["task_setup_s"] = t_task
    try:
        progress.stage = "starting services"
        progress.say(f"starting {len(plan.validators) * 3 + len(plan.participants)} service processes "
                     f"(logs in {plan.log_dir})")
        await start_services(net)
        progress.stage = "training and proving"
        slots = asyncio.Semaphore(max(1, config.parallel_proofs))
        watcher = asyncio.create_task(watch(net))
        t_rounds = time.monotonic()
        participants = [asyncio.create_task(run_participant(net, p, slots)) for p in plan.participants]
        pending = {watcher, *participants}
        # the watcher runs until cancelled: finish when every participant has, fail on any error
        while any(not t.done() for t in participants):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise task.exception()  # type: ignore[misc]
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await record_remaining_rounds(net)
        net.timings["rounds_s"] = time.monotonic() - t_rounds
        progress.stage = "done"
        progress.draw(force=True)
        print()
        ledgers_agree = await adapters.compare_ledgers(plan)
        verify_stats = adapters.scrape_verify_seconds(plan)
        net.timings["total_s"] = time.monotonic() - t_start
        report = write_report(net, ledgers_agree, verify_stats)
        if config.linger_s > 0:
            progress.say(f"network stays up for {config.linger_s:.0f}s (Ctrl-C stops it)")
            try:
                await asyncio.sleep(config.linger_s)
            except asyncio.CancelledError:
                pass  # the run itself is complete: Ctrl-C here just ends the linger
        return report
    finally:
        if net.procs.stop():
            print(f"\nWARNING: {stopped_message()}", flush=True)


def main(config: DevnetConfig) -> int:
    async def runner() -> dict:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await run_devnet(config)

    try:
        report = asyncio.run(runner())
    except asyncio.CancelledError:
        print(f"\ninterrupted: {stopped_message()}")
        return 130
    return 0 if report.get("ok") else 1

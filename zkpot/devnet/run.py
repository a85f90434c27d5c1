"""The devnet orchestrator: publish a task, start every service as its own process (participants
included: `zkpot participant run`), supervise them, watch the chain, and write the report.

Nothing here is on the consensus path or plays a participant: the orchestrator is a supervisor,
an observer (it reads ledgers and the participants' Status) and, for the attack checks, an
outsider forging copies of a committed proof (adversary.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import grpc

from services.participant.rounds import BEHAVIOURS, FINAL_STAGES
from zkpot import chain, grpcutil
from zkpot.devnet import adapters, adversary, netdelay, prometheus
from zkpot.devnet import state as devnet_state
from zkpot.devnet.network import Devnet, DevnetConfig
from zkpot.devnet.plan import (
    HOST,
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
from zkpot.devnet.report import write_report
from zkpot.devnet.stats import RoundStats, SubmissionStats
from zkpot.ports import ports_in_use
from zkpot.schedule import view_shares
from zkpot.v1 import (
    consensus_pb2,
    consensus_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    participant_pb2,
    participant_pb2_grpc,
)

log = logging.getLogger("zkpot.devnet")
MARKER = ".zkpot-devnet"


# Byzantine behaviours for experiments: services.participant.rounds.BEHAVIOURS. label_flip / scaled /
# random / free_ride: the prover trains so and proves the result honestly; copy: resubmit another
# participant's committed proof under one's own key; silent: never submit; drop_mask / mask_cheat
# (secure aggregation): never send the masked update / mask a sign-flipped model.
__all__ = ["BEHAVIOURS", "DevnetConfig", "main", "run_devnet"]


def preflight(config: DevnetConfig) -> None:
    """Refuse a run that cannot start, leaving the previous devnet's data dir as it was."""
    from zkpot.zkp.data import takes_digits
    from zkpot.zkp.datafiles import DataFileError, load_for

    arch = adapters.task_arch(config)  # SystemExit naming the spec or the task when it is unusable
    for what, path in (("--test-set", config.test_set_file), ("--train-data", config.train_data)):
        if path is not None:  # refused before anything is created, with the file and the row
            try:
                load_for(path, arch)
            except DataFileError as exc:
                raise SystemExit(f"{what}: {exc}") from None
    if config.train_data is None and not takes_digits(arch):
        raise SystemExit(f"the task's model {arch.spec} takes {arch.n_features} features and {arch.n_classes} classes, "
                         f"not the digits' 64 and 10: pass the participants' data with --train-data FILE")
    if config.attack_leader_delay_s and config.attack_leader_delay_s < 2:
        raise SystemExit("--attack-leader-delay must be at least 2 s (the view timers go up to 80 % of it)")
    if not 0 <= config.provers <= config.participants:
        raise SystemExit(f"--provers must be 0..{config.participants} (the participants); got {config.provers}")
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
    if config.attack_leader_delay_s:  # every link through the adversary's delay line; view timers below its delay
        peers = [f"--peer={o.name}@{HOST}:{plan.proxy_port(v.index, o.index)}"
                 for o in plan.validators if o.name != v.name]
        peers += ["--max-timeout-ms", str(int(config.attack_leader_delay_s * 800))]
    return {
        "ledger": ["ledger", "serve", "--data-dir", str(v.data_dir / "ledger"), "--genesis", str(plan.genesis_path),
                   "--listen", v.ledger, "--metrics-port", str(v.ledger_metrics), "--node", v.name,
                   "--task-dir", str(plan.task_dir)],
        "verifier": ["verifier", "serve", "--task-dir", str(plan.task_dir), "--genesis", str(plan.genesis_path),
                     "--listen", v.verifier, "--metrics-port", str(v.verifier_metrics), "--node", v.name],
        "consensus": ["consensus", "serve", "--genesis", str(plan.genesis_path), "--key", str(v.key_path),
                      "--node", v.name, "--listen", v.consensus, "--ledger", v.ledger, "--verifier", v.verifier,
                      "--data-dir", str(v.data_dir / "consensus"), "--metrics-port", str(v.consensus_metrics),
                      "--idle-block-ms", str(config.idle_block_ms), *peers,
                      *(["--coin-share", str(v.coin_share_path)] if config.async_fallback else [])],
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
    for p in provers_of(net):
        procs.start(f"{p.name}-prover", ["prover", "serve", "--task-dir", str(plan.task_dir), "--shard",
                                         str(p.shard_path), "--listen", p.prover, "--metrics-port",
                                         str(p.prover_metrics), "--node", p.name,
                                         # the participants' provers share this machine's cores
                                         "--prove-workers", str(net.config.prove_workers),
                                         # experiments: a Byzantine participant's prover trains as one
                                         *(["--allow-behaviours"] if net.config.behaviours else [])],
                    env=tls_env.get(p.name))
    await _wait_all(net, [v.ledger for v in plan.validators] + [v.verifier for v in plan.validators])
    if net.config.attack_leader_delay_s:
        n = len(plan.validators)
        net.delay_proxy = netdelay.DelayProxy([v.consensus for v in plan.validators],
                                              [[plan.proxy_port(a, b) for b in range(n)] for a in range(n)]).start()
    for v in plan.validators:
        procs.start(f"{v.name}-consensus", _service_args(plan, v, net.config)["consensus"], env=tls_env.get(v.name))
    await _wait_all(net, [v.consensus for v in plan.validators] + [p.prover for p in provers_of(net)])
    for p in plan.participants:  # each participant is its own process, like every other service
        procs.start(f"{p.name}-participant", participant_args(net, p), env=tls_env.get(p.name))
    await _wait_all(net, [p.participant for p in plan.participants])
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
    if net.delay_proxy is not None:
        net.leader_delay = netdelay.LeaderDelay(net.delay_proxy, [v.consensus for v in plan.validators],
                                                [v.public_key for v in plan.validators],
                                                net.config.attack_leader_delay_s,
                                                credentials=grpcutil.channel_credentials()).start()
        net.progress.say(f"adversary: every view's leader slowed {net.config.attack_leader_delay_s:g} s "
                         f"(past every view timer; nothing dropped)")
    net.timings["start_services_s"] = time.monotonic() - t0


async def _wait_all(net: Devnet, targets: list[str], timeout_s: float = 120.0) -> None:
    waits = [asyncio.create_task(grpcutil.wait_healthy(t, timeout_s)) for t in targets]
    try:
        while not all(w.done() for w in waits):
            dead = net.procs.dead()
            if dead:
                code = dead[0].popen.returncode if dead[0].popen is not None else None
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise RuntimeError(f"{dead[0].name} exited during start-up ({how}):\n{dead[0].tail()}")
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


def provers_of(net: Devnet) -> list[ParticipantPlan]:
    """The participants whose provers run: all, or the first --provers (a shared pool for scale tests)."""
    n = net.config.provers
    return list(net.plan.participants[:n] if n > 0 else net.plan.participants)


def prover_for(net: Devnet, p: ParticipantPlan) -> str:
    pool = provers_of(net)
    return pool[p.index % len(pool)].prover


def participant_args(net: Devnet, p: ParticipantPlan) -> list[str]:
    """`zkpot participant run` for p: its own validator first, then the others for fail-over."""
    vs = [p.validator, *(v for v in net.plan.validators if v is not p.validator)]
    behaviour = net.config.behaviours.get(p.name, "honest")
    return ["participant", "run", "--key", str(p.key_path), "--genesis", str(net.plan.genesis_path),
            *(f"--validator={v.consensus},{v.ledger}" for v in vs), "--prover", prover_for(net, p),
            "--data-dir", str(p.state_dir), "--listen", p.participant, "--metrics-port", str(p.participant_metrics),
            "--node", p.name, "--local-epochs", str(net.config.local_epochs),
            # the seeds the devnet always used: seed*1000 + 10*round + index
            "--seed", str(net.config.seed * 1000 + p.index), "--behaviour", behaviour]


async def participant_status(p: ParticipantPlan) -> participant_pb2.ParticipantStatus | None:
    try:
        async with grpcutil.channel(p.participant) as ch:
            return await participant_pb2_grpc.ParticipantStub(ch).Status(
                participant_pb2.ParticipantStatusRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        log.debug("%s status: %s", p.name, exc.details())
        return None


async def poll_participants(net: Devnet) -> None:
    """Each participant's own account of its rounds (its Status RPC) -> the report's submissions."""
    for p in net.plan.participants:
        status = await participant_status(p)
        if status is None:
            continue
        for rec in status.rounds:
            if rec.round in net.rounds and (rec.tx_id or rec.stage in ("refused", "late", "skipped")):
                net.rounds[rec.round].submissions[p.name] = SubmissionStats.from_participant(p.name, rec)
    current = net.rounds.get(net.progress.round)
    if current is not None:
        subs = current.submissions.values()
        net.progress.submitted = sum(1 for s in subs if s.tx_id)
        net.progress.verified = sum(1 for s in subs if s.admitted)
        net.progress.rejected = sum(1 for s in subs if s.admission_reason and not s.admitted)


def participants_settled(net: Devnet, statuses: list[participant_pb2.ParticipantStatus | None]) -> bool:
    """Every participant has recorded how every round ended for it (the report reads those records)."""
    last = max(net.rounds)
    return all(s is not None and (s.task_finished or (s.rounds and s.rounds[-1].round >= last
                                                      and s.rounds[-1].stage in FINAL_STAGES))
               for s in statuses)


async def attack_checks(net: Devnet, ledger: ledger_pb2_grpc.LedgerStub, consensus: consensus_pb2_grpc.ConsensusStub,
                        summary: ledger_pb2.RoundSummary) -> None:
    """Once per round: p0's submission, as committed, forged four ways by an outsider (adversary.py)."""
    r = summary.round
    owner = net.plan.participants[0].public_key
    mine = [s for s in summary.submissions if s.participant == owner]
    if r in net.attack_rounds or not mine or summary.closed:
        return
    net.attack_rounds.add(r)
    got = await ledger.GetTx(ledger_pb2.GetTxRequest(tx_id=mine[0].tx_id), timeout=10)
    await adversary.run_attack_checks(net, consensus, got.tx, r)


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


CHAIN_STALL_S = 300.0


async def watch(net: Devnet) -> None:
    """Supervisor and observer, from validator 0: keeps the progress line and per-round figures
    current, runs the attack checks, and returns once every round has closed and every participant
    has recorded how it ended."""
    v0 = net.plan.validators[0]
    attacks: asyncio.Task | None = None
    last_height, last_move = -1, time.monotonic()
    async with grpcutil.channel(v0.consensus) as cch, grpcutil.channel(v0.ledger) as lch:
        consensus = consensus_pb2_grpc.ConsensusStub(cch)
        ledger = ledger_pb2_grpc.LedgerStub(lch)
        try:
            while True:
                supervise(net)
                try:
                    status = await consensus.Status(consensus_pb2.StatusRequest(), timeout=2)
                    net.progress.view = status.view
                    net.progress.leader = net.genesis.name_of(status.leader)
                    head = await ledger.Head(ledger_pb2.HeadRequest(), timeout=2)
                    net.progress.height = head.height
                    if head.height != last_height:
                        last_height, last_move = head.height, time.monotonic()
                    current = min(head.current_round, net.config.rounds)
                    if current != net.progress.round and current >= 1:
                        net.progress.round = current
                        net.progress.submitted = net.progress.verified = net.progress.rejected = 0
                        net.rounds[current].started = net.rounds[current].started or time.monotonic()
                    await _record_closed_rounds(net, ledger)
                    if net.config.attack_checks and (attacks is None or attacks.done()):
                        if attacks is not None:
                            attacks.result()  # an error in the checks fails the run
                        summary = await _get_round(ledger, current)
                        if summary is not None:
                            attacks = asyncio.create_task(attack_checks(net, ledger, consensus, summary))
                    await poll_participants(net)
                    if all(st.closed for st in net.rounds.values()):
                        statuses = [await participant_status(p) for p in net.plan.participants]
                        if participants_settled(net, statuses):
                            await poll_participants(net)
                            return
                except grpc.aio.AioRpcError as exc:
                    log.debug("watch: %s", exc.details())
                if time.monotonic() - last_move > CHAIN_STALL_S:
                    raise RuntimeError(f"the chain made no progress for {CHAIN_STALL_S:.0f}s (height {last_height})")
                net.progress.draw()
                await asyncio.sleep(0.5)
        finally:
            if attacks is not None and not attacks.done():
                attacks.cancel()
                await asyncio.gather(attacks, return_exceptions=True)


async def _blocks(ledger: ledger_pb2_grpc.LedgerStub, lo: int, hi: int) -> list[ledger_pb2.StoredBlock]:
    out: list[ledger_pb2.StoredBlock] = []
    while lo <= hi:
        page = await ledger.GetBlocks(ledger_pb2.GetBlocksRequest(from_height=lo, limit=min(200, hi - lo + 1)),
                                      timeout=30)
        if not page.blocks:
            break
        out.extend(page.blocks)
        lo += len(page.blocks)
    return out


def _shares_text(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return " ".join(f"{n} {100 * c / total:.0f}%" for n, c in counts.items())


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
        blocks = await _blocks(ledger, summary.open_height + 1, summary.close_height)
        # everything is fetched: record it in one step, `closed` last, so a reader that sees the round
        # closed also sees its figures (a cancelled fetch above leaves the round unrecorded, not zeroed)
        stats.summary = summary
        stats.global_accuracy, stats.holdout_accuracy = global_acc, holdout_acc
        stats.next_leaders = [net.genesis.name_of(k) for k in schedule.leaders]
        stats.next_scores = list(schedule.scores)
        f = chain.max_faulty(len(net.genesis.validators))
        shares = view_shares(list(schedule.leaders), list(schedule.scores), int(net.genesis.manifest.min_correct), f)
        stats.next_view_shares = {net.genesis.name_of(k): round(v, 3) for k, v in shares.items()}
        stats.blocks_proposed = dict(sorted(Counter(net.genesis.name_of(b.block.header.proposer)
                                                    for b in blocks).items()))
        stats.closed = time.monotonic()
        net.progress.global_accuracy = stats.global_accuracy
        if r == max(net.rounds):  # the last round: not "training and proving" any more (issue 20.9)
            net.progress.stage = "all rounds closed: checking the ledgers"
        net.progress.say(
            f"round {r} closed at height {summary.close_height}: "
            f"{sum(s.aggregated for s in summary.submissions)}/{len(summary.submissions)} submissions aggregated, "
            f"global accuracy {100 * stats.global_accuracy:.1f}% "
            f"({100 * stats.holdout_accuracy:.1f}% on the whole held-out split), "
            f"blocks proposed {_shares_text(stats.blocks_proposed)}; next epoch's view shares "
            f"{' > '.join(f'{n} {100 * stats.next_view_shares[n]:.0f}%' for n in stats.next_leaders)}"
        )
        if summary.aggregate_note:
            net.progress.say(f"round {r}: {summary.aggregate_note}")


async def run_devnet(config: DevnetConfig) -> dict:
    t_start = time.monotonic()
    preflight(config)  # everything that can refuse the run, before the data dir is touched
    prepare_data_dir(config)
    plan = make_plan(config.data_dir, config.validators, config.participants, config.base_port)
    devnet_state.write(config.data_dir, pid=os.getpid(), state="publishing task",
                       endpoints=devnet_state.endpoints(plan),
                       started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       tls_dir=str(plan.data_dir / "tls" / "devnet") if config.tls else "")
    progress = Progress(config.rounds, config.participants)
    progress.stage = "publishing task"
    progress.say(f"zkpot devnet: {config.validators} validators, {config.participants} participants, "
                 f"{config.rounds} rounds, data in {config.data_dir}")
    t0 = time.monotonic()
    task_timings = adapters.publish_task(plan, config, progress)
    adapters.make_shards(plan, config)
    t_task = time.monotonic() - t0
    publish_tx = adapters.load_publish_tx(plan.task_dir)
    genesis = make_genesis(plan, publish_tx, async_fallback=config.async_fallback)
    net = Devnet(config, plan, genesis, ProcessGroup(plan.log_dir), progress,
                 rounds={r: RoundStats(round=r) for r in range(1, config.rounds + 1)})
    net.timings.update(task_timings)
    net.timings["task_setup_s"] = t_task
    try:
        progress.stage = "starting services"
        progress.say(f"starting {len(plan.validators) * 3 + 2 * len(plan.participants) + 1} service processes "
                     f"(logs in {plan.log_dir})")
        await start_services(net)
        devnet_state.write(config.data_dir, state="running rounds")
        v0 = plan.validators[0]
        progress.say(f"network up: v0 ledger {v0.ledger}, consensus {v0.consensus}; every endpoint: "
                     f"`zkpot devnet status --data-dir {config.data_dir}`")
        progress.stage = "training and proving"
        t_rounds = time.monotonic()
        await watch(net)
        net.timings["rounds_s"] = time.monotonic() - t_rounds
        progress.stage = "done"
        progress.draw(force=True)
        print()
        ledgers_agree = await adapters.compare_ledgers(plan)
        verify_stats = adapters.scrape_verify_seconds(plan)
        net.network = {"async_fallback": config.async_fallback, "fallbacks": adapters.scrape_fallbacks(plan)}
        if net.leader_delay is not None:
            net.network["leader_delay_s"] = config.attack_leader_delay_s
            net.network["leaders_slowed"] = {plan.validators[i].name: k for i, k in net.leader_delay.targeted.items()}
            net.network["adversary_failed_polls"] = net.leader_delay.failed_polls
        net.timings["total_s"] = time.monotonic() - t_start
        report = write_report(net, ledgers_agree, verify_stats)
        if config.linger_s > 0:
            devnet_state.write(config.data_dir, state="lingering")
            forever = config.linger_s == float("inf")
            progress.say(f"network stays up {'until stopped' if forever else f'for {config.linger_s:.0f}s'} "
                         f"(Ctrl-C or `zkpot devnet stop --data-dir {config.data_dir}` stops it)")
            try:
                await (asyncio.Event().wait() if forever else asyncio.sleep(config.linger_s))
            except asyncio.CancelledError:
                pass  # the run itself is complete: Ctrl-C here just ends the linger
        return report
    finally:
        if net.leader_delay is not None:
            net.leader_delay.stop()
        if net.procs.stop():
            print(f"\nWARNING: {stopped_message()}", flush=True)
        if net.delay_proxy is not None:
            net.delay_proxy.stop()
        devnet_state.write(config.data_dir, state="stopped")


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

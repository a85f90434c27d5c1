"""DATA_DIR/devnet.json: which process runs a devnet, what it is doing and where its services
listen, so that `zkpot devnet status` and `zkpot devnet stop` (other processes) can find it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zkpot.devnet.plan import DevnetPlan

STATE_FILE = "devnet.json"


def endpoints(plan: DevnetPlan) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for v in plan.validators:
        out[v.name] = {"consensus": v.consensus, "ledger": v.ledger, "verifier": v.verifier}
    for p in plan.participants:
        out[p.name] = {"participant": p.participant, "prover": p.prover}
    return out


def write(data_dir: Path, **fields: Any) -> None:
    """Merge `fields` into the state file (atomically: a reader never sees half of it)."""
    path = data_dir / STATE_FILE
    current = read(data_dir) or {}
    current.update(fields, updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, path)


def read(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    # a recycled pid is not our devnet
    return not cmdline.exists() or b"devnet" in cmdline.read_bytes()


def status(data_dir: Path) -> int:
    st = read(data_dir)
    if st is None:
        print(f"no devnet in {data_dir} (start one with `zkpot devnet --data-dir {data_dir}`)")
        return 1
    running = st.get("state") not in ("stopped", "failed") and alive(int(st.get("pid", 0)))
    print(f"devnet in {data_dir}: {'RUNNING' if running else 'not running'} "
          f"(state: {st.get('state')}, pid {st.get('pid')}, since {st.get('started_at')}, "
          f"updated {st.get('updated_at')})")
    if running:
        head = _head(st)
        if head:
            print(head)
        for name, eps in st.get("endpoints", {}).items():
            print(f"  {name:4} " + "  ".join(f"{k} {v}" for k, v in eps.items()))
        v0 = st.get("endpoints", {}).get("v0", {})
        if v0:
            print(f"query it: zkpot ledger head --target {v0['ledger']}")
            print(f"stop it:  zkpot devnet stop --data-dir {data_dir}")
    else:
        print(f"look at its chain: zkpot ledger head --data-dir {data_dir / 'nodes' / 'v0' / 'ledger'}")
    report = data_dir / "report.json"
    if report.exists():
        print(f"report: {report}")
    return 0 if running else 3


def _head(st: dict[str, Any]) -> str:
    import asyncio

    import grpc

    from zkpot import grpcutil
    from zkpot.v1 import ledger_pb2, ledger_pb2_grpc

    target = st.get("endpoints", {}).get("v0", {}).get("ledger")
    if not target:
        return ""
    if st.get("tls_dir"):
        grpcutil.configure_tls(st["tls_dir"])

    async def go() -> str:
        async with grpcutil.channel(target) as ch:
            h = await ledger_pb2_grpc.LedgerStub(ch).Head(ledger_pb2.HeadRequest(), timeout=3)
            return f"  chain {h.chain_id}: height {h.height}, view {h.view}, current round {h.current_round}"

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        return f"  v0's ledger at {target} does not answer: {exc.code().name}"


def stop(data_dir: Path, timeout_s: float = 120.0) -> int:
    st = read(data_dir)
    if st is None or not alive(int(st.get("pid", 0))) or st.get("state") in ("stopped", "failed"):
        print(f"no running devnet in {data_dir}")
        return 1
    pid = int(st["pid"])
    os.kill(pid, signal.SIGINT)  # the devnet stops every process group, then exits
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        print(f"devnet (pid {pid}) is still stopping after {timeout_s:.0f}s")
        return 1
    print(f"devnet (pid {pid}) stopped")
    return 0

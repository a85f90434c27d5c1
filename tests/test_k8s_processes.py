"""The kind overlay's pods as local processes, then two FL rounds to completion.

tests/k8s_pods.py generates, from `kubectl kustomize deploy/k8s/overlays/kind`, what each container
runs (command, args, environment, volumes, probes, lifecycle); here each container is a process:

- programs are looked up on the image's PATH, whose virtual environment (/opt/zkpot) is this
  project's venv.
- environment: the generated one, plus the plumbing below (LD_PRELOAD, NSS_WRAPPER_HOSTS,
  GRPC_DNS_RESOLVER, TMPDIR).
- volumes: a process cannot mount at an absolute path, so each container's mountPaths are
  rewritten to its directories wherever they appear in its command, args, env values and mounted
  ConfigMap files.
- network: each pod gets its own loopback address (127.A.B.n; Linux routes all of 127/8 to lo);
  0.0.0.0 in a pod is that address and the pod's 127.0.0.1 is `localhost`, which the pod's hosts
  file maps to it. Names are resolved through a hosts file made from the rendered objects
  (libnss_wrapper, with gRPC on the system resolver). Certificates are checked against those names
  as in a cluster.

Then the test waits for round 2 to close on the ledger (zkpot.v1.Ledger/GetRound over mutual TLS
with the client certificate) with an accepted submission from every participant pod, checks every
process is alive and every probe and metrics port answers, and kills every process group.
tests/test_k8s_containers.py runs the same pods as containers of the built image.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from k8s_pods import (
    START_ORDER,
    Cluster,
    Pod,
    Volume,
    check_running_pods,
    make_secrets,
    render,
    wait_for_rounds,
)

from zkpot.lifetime import group_members, kill_groups

pytestmark = pytest.mark.slow


def _nss_wrapper() -> str:
    multiarch = getattr(sys.implementation, "_multiarch", "")
    for folder in (f"/usr/lib/{multiarch}", "/usr/lib64", "/usr/lib", f"/usr/local/lib/{multiarch}", "/usr/local/lib"):
        if os.path.exists(f"{folder}/libnss_wrapper.so"):
            return f"{folder}/libnss_wrapper.so"
    pytest.skip("needs libnss_wrapper to give the processes the cluster's names "
                "(Debian package libnss-wrapper: apt-get install -y libnss-wrapper)")


def zkpot_script() -> Path:
    zkpot = Path(sys.executable).parent / "zkpot"
    if not zkpot.exists():
        pytest.skip("needs the zkpot console script in the venv (make install)")
    proc = subprocess.run([str(zkpot), "participant", "run", "--help"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"`zkpot participant run` is not available: {proc.stderr.strip()[-300:]}")
    return zkpot


class ProcessCluster(Cluster):
    """Each container a process group on this machine (module docstring)."""

    def __init__(self, docs: list[dict], external: list[dict], root: Path, nss_wrapper: str) -> None:
        super().__init__(docs, external, root)
        self.nss_wrapper = nss_wrapper
        self.pgids: set[int] = set()
        net = random.randrange(100, 250), random.randrange(0, 250)
        self._next_host = iter(f"127.{net[0]}.{net[1]}.{n}" for n in range(2, 250))

    def plan(self) -> None:
        super().plan()
        for pod in self.pods:
            pod.address = next(self._next_host)
        self._write_hosts()

    def _write_hosts(self) -> None:
        # one line per address (a lookup of the address itself then finds one entry)
        by_address: dict[str, list[str]] = {}
        for name, pods in self.names().items():
            for addr in dict.fromkeys(p.address for p in pods):
                by_address.setdefault(addr, []).append(name)
        for pod in self.pods:
            own = {pod.address: ["localhost", pod.name]}
            lines = [f"{addr} {' '.join([*own.get(addr, []), *names])}" for addr, names in by_address.items()]
            lines += [f"{addr} {' '.join(names)}" for addr, names in own.items() if addr not in by_address]
            (pod.dir / "hosts").write_text("\n".join(lines) + "\n")

    def localize(self, text: str, pod: Pod, mounts: dict[str, Volume]) -> str:
        """The pod's view made this machine's: mountPaths -> directories, 0.0.0.0 -> the pod's address,
        127.0.0.1 -> localhost (the pod's address in its hosts file), the image's venv -> this venv.
        One pass, so a replacement is never rewritten again (this venv may itself lie under /tmp,
        a mountPath: a clone made with mktemp)."""
        subst = {mp: str(v.path) for mp, v in mounts.items()} | {self.image.venv: sys.prefix}
        paths = "|".join(re.escape(mp) for mp in sorted(subst, key=len, reverse=True))
        rx = re.compile(rf"(?<![\w./])(?P<path>{paths})(?![\w.-])|\b(?P<any>0\.0\.0\.0)\b|\b(?P<lo>127\.0\.0\.1)\b"
                        if paths else r"\b(?P<any>0\.0\.0\.0)\b|\b(?P<lo>127\.0\.0\.1)\b")

        def repl(m: re.Match) -> str:
            if m.group("any"):
                return pod.address
            if m.group("lo"):
                return "localhost"
            return subst[m.group("path")]

        return rx.sub(repl, text)

    config_file = localize

    def start(self, pod: Pod, container: dict) -> subprocess.Popen:
        mounts = self.volumes(pod, container)
        raw = self.env(pod, container)
        # expanded in the pod's terms, then made this machine's, once
        argv = [self.localize(a, pod, mounts) for a in self.argv(container, raw)]
        env = {k: self.localize(v, pod, mounts) for k, v in raw.items()}
        # plumbing (module docstring): the cluster's names, and the container's /tmp as TMPDIR
        env |= {"LD_PRELOAD": self.nss_wrapper, "NSS_WRAPPER_HOSTS": str(pod.dir / "hosts"),
                "GRPC_DNS_RESOLVER": "native"}
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"].path)
        program = shutil.which(argv[0], path=env.get("PATH", self.image.base_path))
        assert program, f"{pod.name}/{container['name']}: {argv[0]} is not on the image's PATH"
        assert container["image"].split(":")[0].rsplit("/", 1)[-1] == "zkpot", \
            f"{pod.name}/{container['name']}: image {container['image']} is not the zkpot image this venv stands for"
        # the working directory where it is mounted; the image's own (read-only root) is a scratch folder
        declared = container.get("workingDir", self.image.workdir)
        workdir = Path(self.localize(declared, pod, mounts))
        if str(workdir) == declared:
            workdir = pod.dir / "c" / container["name"] / "workdir"
            workdir.mkdir(parents=True, exist_ok=True)
        log = pod.dir / f"{container['name']}.log"
        (pod.dir / f"{container['name']}.argv").write_text(json.dumps({"argv": argv, "env": env}, indent=1))
        with open(log, "ab") as out:
            proc = subprocess.Popen([program, *argv[1:]], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        with self.lock:
            self.pgids.add(proc.pid)
            pod.procs[container["name"]] = proc
        return proc

    def stop(self) -> None:
        kill_groups(self.pgids, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while group_members(self.pgids) and time.monotonic() < deadline:
            time.sleep(0.3)
        kill_groups(self.pgids, signal.SIGKILL)
        for pod in self.pods:
            for proc in pod.procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass


# ---- the test -------------------------------------------------------------------------------

def test_kind_overlay_runs_two_rounds_as_processes(tmp_path_factory):
    nss_wrapper = _nss_wrapper()
    zkpot = zkpot_script()
    t0 = time.monotonic()
    timings = {}
    root = tmp_path_factory.mktemp("k8s")
    docs = render(root)
    sts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    n_participants = sts["participant"]["spec"]["replicas"]
    external = make_secrets(root, zkpot, sts["validator"]["spec"]["replicas"], n_participants)
    cluster = ProcessCluster(docs, external, root, nss_wrapper)
    cluster.plan()
    timings["secrets"] = round(time.monotonic() - t0)
    try:
        for workload in START_ORDER:
            cluster.run_workload(workload)
            timings[workload] = round(time.monotonic() - t0)
        wait_for_rounds(cluster, n_participants)
        timings["rounds"] = round(time.monotonic() - t0)
        check_running_pods(cluster)
        assert not cluster.dead(), "\n".join(cluster.dead())
        timings["checks"] = round(time.monotonic() - t0)
    except BaseException:
        cluster.print_tails()
        raise
    finally:
        cluster.stop()
        timings["stopped"] = round(time.monotonic() - t0)
        print(f"seconds since the start, at the end of each step: {timings}; logs under {root}")
    assert not group_members(cluster.pgids), "processes left behind"

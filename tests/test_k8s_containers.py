"""The kind overlay's pods as Docker containers of the built images, then two FL rounds to completion.

`make images` builds zkpot:dev (deploy/docker/build-images.sh: a Debian base from debootstrap, a
wheelhouse, no registry, no network in the build); tests/k8s_pods.py generates what each container
runs from `kubectl kustomize deploy/k8s/overlays/kind` — the same generator the process-mode test
uses — and each container runs here the way the kubelet would run it:

- a pod is a network namespace: a pause container on a docker network, carrying the pod's DNS
  names as network aliases (`validator-0.validator`, the Services that select it, each with the
  namespace suffixes; docker's DNS answers a name shared by several pods with all of them); the
  pod's containers join it (`--network container:`), so they share `localhost` as in a pod.
- each container: the image the manifest names, its command/args, its environment (nothing from
  this machine), its volumes bind-mounted at their mountPaths (read-only where declared or for
  Secrets and ConfigMaps; group fsGroup as the kubelet sets it), its user and group, a read-only
  root file system, no capabilities, no privilege escalation, its memory limit.
- the kubelet's lifecycle and gRPC probes from tests/k8s_pods.py, against the pod's address.

The network runs with mutual TLS (make-secrets.sh's certificates, checked against those names).
Mid-round a validator pod's containers are `docker kill`ed: the other three keep committing; then
they are started again (as the kubelet restarts crashed containers: same container, same volumes)
and the validator catches up from its volumes. After round 2 closes with every participant's
submission accepted: every probe, also from inside its container; every metrics port; a real
Prometheus (Debian's) scraping the containers through deploy/prometheus/prometheus.yml's own
relabelling, and every Grafana dashboard query returning data.

Needs a running Docker daemon (.ci/run installs docker.io and starts dockerd). Without one this
test fails, saying so: a skipped image test is not a pass. ZKPOT_TEST_IMAGES=0 skips it
explicitly (a machine without Docker; not CI).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from k8s_pods import (
    START_ORDER,
    Cluster,
    Pod,
    check_running_pods,
    ledger_of,
    make_secrets,
    render,
    wait_for_rounds,
)
from test_deploy import ROOT, yaml
from test_devnet_e2e import _query_dashboards
from test_k8s_processes import zkpot_script

from zkpot.ports import free_port

pytestmark = pytest.mark.slow

BUILD_IMAGES = ROOT / "deploy" / "docker" / "build-images.sh"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
VICTIM = "validator-3"          # killed mid-round; participant-3 submits through it first
BLOCKS_WHILE_DOWN = 5           # the other three must commit this many blocks without it


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _require_docker() -> None:
    if os.environ.get("ZKPOT_TEST_IMAGES") == "0":
        pytest.skip("ZKPOT_TEST_IMAGES=0: the image test is switched off on this machine")
    if not shutil.which("docker"):
        pytest.fail("no docker command: install docker.io (.ci/run does), or set ZKPOT_TEST_IMAGES=0 to skip")
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"the Docker daemon is not running ({proc.stderr.strip()[-300:]}): start dockerd "
                    "(.ci/run does), or set ZKPOT_TEST_IMAGES=0 to skip")


def _build_images() -> None:
    """`make images`' own script, CPU image only (cached: a rerun with nothing changed takes seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(BUILD_IMAGES), "cpu"], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PIP": str(Path(sys.executable).parent / "pip")})
    print(proc.stdout[-3000:], proc.stderr[-3000:], f"images built in {time.monotonic() - t0:.0f} s", sep="\n")
    assert proc.returncode == 0, f"build-images.sh failed:\n{proc.stderr[-4000:]}"


class Container:
    """A started container, as the lifecycle polls it (exit code once it stopped)."""

    def __init__(self, cluster: DockerCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.returncode: int | None = None

    def poll(self) -> int | None:
        state = self.cluster.states().get(self.name)
        if state is not None and state[0] in ("exited", "dead"):
            self.returncode = state[1]
        else:
            self.returncode = None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 3600)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.name, timeout)
            time.sleep(0.5)
        return self.returncode


class DockerCluster(Cluster):
    """Each pod a pause container's network namespace, each container a container (module docstring)."""

    def __init__(self, docs: list[dict], external: list[dict], root: Path) -> None:
        super().__init__(docs, external, root)
        self.run_id = f"zkpot-k8s-{random.randrange(16**6):06x}"
        self.network = self.run_id
        self.names_by_pod: dict[str, list[str]] = {}
        self._states: dict[str, tuple[str, int]] = {}
        self._states_at = 0.0
        self._states_lock = threading.Lock()

    def create_network(self) -> None:
        _docker("network", "create", "--label", f"zkpot-test={self.run_id}", self.network)
        for name, pods in self.names().items():
            for pod in pods:
                self.names_by_pod.setdefault(pod.name, []).append(name)

    # -- pods

    def container_name(self, pod: Pod, container: str | None = None) -> str:
        return f"{self.run_id}-{pod.name}" + (f"-{container}" if container else "")

    def start_pod(self, pod: Pod) -> None:
        """The pod's network namespace: a pause container (the image's `sleep`) with the pod's names."""
        if pod.address:
            return
        pause = self.container_name(pod)
        aliases = [a for name in dict.fromkeys(self.names_by_pod.get(pod.name, [])) for a in ("--network-alias", name)]
        image = next(c["image"] for c in pod.spec["containers"])
        _docker("run", "-d", "--name", pause, "--label", f"zkpot-test={self.run_id}", "--network", self.network,
                "--hostname", pod.name, *aliases, "--read-only", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "--user", "65534:65534", "--entrypoint", "sleep", image,
                "infinity")
        pod.address = _docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}',
                              pause).strip()
        assert pod.address, f"{pod.name}: no address on {self.network}"

    def _security(self, pod: Pod, container: dict) -> list[str]:
        pod_sc = pod.spec.get("securityContext") or {}
        sc = {**pod_sc, **(container.get("securityContext") or {})}
        uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
        assert uid is not None and gid is not None, f"{pod.name}/{container['name']}: no runAsUser/runAsGroup"
        if sc.get("runAsNonRoot"):
            assert uid != 0, f"{pod.name}/{container['name']}: runAsNonRoot with runAsUser 0"
        flags = ["--user", f"{uid}:{gid}"]
        if pod_sc.get("fsGroup") is not None:
            flags += ["--group-add", str(pod_sc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            flags.append("--read-only")
        if sc.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        dropped = (sc.get("capabilities") or {}).get("drop", [])
        flags += [a for cap in dropped for a in ("--cap-drop", cap)]
        added = (sc.get("capabilities") or {}).get("add", [])
        flags += [a for cap in added for a in ("--cap-add", cap)]
        limits = (container.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            flags += ["--memory", _bytes(limits["memory"])]
        return flags

    @staticmethod
    def _own(path: Path, group: int | None, writable: bool) -> None:
        """The kubelet's fsGroup ownership: group fsGroup, group-readable (and -writable, setgid dirs)."""
        if group is None:
            return
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(p, 0, group)
            mode = p.stat().st_mode & 0o7777
            if p.is_dir():
                mode |= 0o2070 if writable else 0o050
            else:
                mode |= 0o060 if writable else 0o040
            p.chmod(mode)

    def start(self, pod: Pod, container: dict) -> Container:
        name = self.container_name(pod, container["name"])
        if name in self.states(fresh=True):   # the kubelet restarts a container in place
            _docker("start", name)
            self.states(fresh=True)           # not the cached "exited" of before the start
        else:
            self._run(pod, container, name)
        handle = Container(self, name)
        with self.lock:
            pod.procs[container["name"]] = handle
        return handle

    def _run(self, pod: Pod, container: dict, name: str) -> None:
        """`docker run` of a container the pod has not run before."""
        mounts = self.volumes(pod, container)
        fs_group = (pod.spec.get("securityContext") or {}).get("fsGroup")
        flags: list[str] = []
        for mount_path, volume in mounts.items():
            self._own(volume.path, fs_group, not volume.read_only)
            flags += ["-v", f"{volume.path}:{mount_path}" + (":ro" if volume.read_only else "")]
        env = self.env(pod, container)
        argv = self.argv(container, env)
        for key, value in env.items():
            flags += ["-e", f"{key}={value}"]
        if "workingDir" in container:
            flags += ["-w", container["workingDir"]]
        (pod.dir / f"{container['name']}.argv").write_text(json.dumps({"argv": argv, "env": env}, indent=1))
        _docker("run", "-d", "--name", name, "--label", f"zkpot-test={self.run_id}",
                "--network", f"container:{self.container_name(pod)}", *self._security(pod, container), *flags,
                "--entrypoint", argv[0], container["image"], *argv[1:])

    def states(self, fresh: bool = False) -> dict[str, tuple[str, int]]:
        """name -> (state, exit code) of this run's containers: one `docker ps` a second at most."""
        with self._states_lock:
            if fresh or time.monotonic() - self._states_at > 1.0:
                out = _docker("ps", "-a", "--filter", f"label=zkpot-test={self.run_id}", "--format",
                              "{{.Names}}\t{{.State}}\t{{.Status}}")
                states = {}
                for line in out.splitlines():
                    name, state, status = line.split("\t")
                    m = re.search(r"Exited \((-?\d+)\)", status)
                    states[name] = (state, int(m.group(1)) if m else 0)
                self._states, self._states_at = states, time.monotonic()
            return self._states

    def log(self, pod: Pod, container: str) -> str:
        proc = subprocess.run(["docker", "logs", self.container_name(pod, container)], capture_output=True,
                              text=True, timeout=60)
        return proc.stdout + proc.stderr

    def kill_pod(self, pod: Pod) -> None:
        """docker kill (SIGKILL) every long-running container of the pod."""
        self.down.add(pod.name)
        _docker("kill", *(self.container_name(pod, c["name"]) for c in pod.long_running()))

    def exec_probe(self, pod: Pod, container: dict) -> None:
        """The readiness probe's gRPC health check run inside the container itself (its own Python,
        its own network namespace: the port on the pod's localhost)."""
        probe = container.get("readinessProbe") or container.get("livenessProbe")
        if not probe or "grpc" not in probe:
            return
        code = ("import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; "
                f"r=g.HealthStub(grpc.insecure_channel('localhost:{probe['grpc']['port']}')).Check("
                f"h.HealthCheckRequest(service='{probe['grpc'].get('service', '')}'), timeout=10); "
                "sys.exit(r.status != h.HealthCheckResponse.SERVING)")
        proc = subprocess.run(["docker", "exec", self.container_name(pod, container["name"]), "python3", "-c", code],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{pod.name}/{container['name']}: health check inside the container: {proc.stderr}"

    def save_logs(self) -> None:
        for pod in self.pods:
            for name in pod.procs:
                (pod.dir / f"{name}.log").write_text(self.log(pod, name))

    def stop(self) -> None:
        ids = _docker("ps", "-aq", "--filter", f"label=zkpot-test={self.run_id}", check=False).split()
        if ids:
            _docker("rm", "-f", *ids, timeout=300, check=False)
        _docker("network", "rm", self.network, check=False)


def _bytes(quantity: str) -> str:
    """A Kubernetes memory quantity as docker's --memory bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(quantity))
    assert m, quantity
    return str(int(float(m.group(1)) * units.get(m.group(2), 1)))


# ---- Prometheus over the containers ------------------------------------------------------------

def _file_sd_targets(cluster: DockerCluster) -> list[dict]:
    """What Prometheus' kubernetes_sd (role: pod) discovers for these pods: one target per container
    port, with the __meta_kubernetes_pod_* labels the shipped relabel_configs read."""
    groups = []
    for pod in cluster.pods:
        if pod.workload.startswith("Job/"):
            continue
        init = {c["name"] for c in pod.spec.get("initContainers", [])}
        for c in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
            for p in c.get("ports", []):
                labels = {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
                          for k, v in pod.labels.items()}
                labels |= {"__meta_kubernetes_namespace": cluster.namespace,
                           "__meta_kubernetes_pod_name": pod.name,
                           "__meta_kubernetes_pod_ip": pod.address,
                           "__meta_kubernetes_pod_container_name": c["name"],
                           "__meta_kubernetes_pod_container_init": str(c["name"] in init).lower(),
                           "__meta_kubernetes_pod_container_port_name": p.get("name", ""),
                           "__meta_kubernetes_pod_container_port_number": str(p["containerPort"])}
                groups.append({"targets": [f"{pod.address}:{p['containerPort']}"], "labels": labels})
    return groups


def _start_prometheus(cluster: DockerCluster, root: Path) -> tuple[subprocess.Popen, str]:
    """Debian's prometheus with deploy/prometheus/prometheus.yml, its kubernetes_sd swapped for a
    file of the same discovered targets (no API server here); scrape interval 1 s."""
    from zkpot.devnet import prometheus

    binary = prometheus.binary()
    if binary is None:
        pytest.fail("Debian's prometheus is not installed (apt-get install prometheus; .ci/run does)")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = root / "prometheus-targets.json"
    targets.write_text(json.dumps(_file_sd_targets(cluster)))
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / f) for f in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        assert "kubernetes_sd_configs" in job, job["job_name"]
        del job["kubernetes_sd_configs"]
        job["file_sd_configs"] = [{"files": [str(targets)]}]
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(root / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={path}", f"--storage.tsdb.path={root / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _prometheus_targets_up(url: str) -> tuple[int, list[str]]:
    body = json.loads(urllib.request.urlopen(f"{url}/api/v1/targets", timeout=10).read())
    active = body["data"]["activeTargets"]
    return len(active), [f"{t['labels'].get('pod')}/{t['labels'].get('service')}: {t['lastError']}"
                         for t in active if t["health"] != "up"]


# ---- the kill and the catch-up -------------------------------------------------------------------

class ValidatorOutage:
    """Mid-round 1 (the participants' pods started, round 1 open): `docker kill` every container of
    VICTIM; once the others committed BLOCKS_WHILE_DOWN blocks without it, start them again."""

    def __init__(self, cluster: DockerCluster) -> None:
        self.cluster = cluster
        self.victim = next(p for p in cluster.pods if p.name == VICTIM)
        self.witness = next(p for p in cluster.pods if p.name == "validator-0")
        self.killed_at_height = 0
        self.restarted = False
        self.heights: dict[str, int] = {}

    def height(self, pod: Pod) -> int:
        from zkpot.v1 import ledger_pb2

        channel, stub = ledger_of(self.cluster, pod)
        try:
            return stub.Head(ledger_pb2.HeadRequest(), timeout=10).height
        finally:
            channel.close()

    def kill(self) -> None:
        self.killed_at_height = self.height(self.witness)
        self.cluster.kill_pod(self.victim)
        self.heights["killed_at"] = self.killed_at_height

    def step(self, closed_rounds: int) -> None:
        if self.restarted or not self.killed_at_height:
            return
        now = self.height(self.witness)
        if now >= self.killed_at_height + BLOCKS_WHILE_DOWN:
            self.heights["others_reached"] = now
            # the kubelet restarts crashed containers in place: sidecars first, each to its startup probe
            self.cluster.run_pod(self.victim, only={c["name"] for c in self.victim.long_running()})
            self.cluster.down.discard(self.victim.name)
            self.restarted = True


# Run inside the image (sh): prints uid, gid, then HAS:<thing> for anything a runtime image must not hold
# (apt and dpkg stay: Debian's minbase needs them, and scanners read /var/lib/dpkg/status).
IMAGE_AUDIT = r"""
id -u; id -g
for t in gcc cc c++ g++ make ld as pip pip3; do command -v $t >/dev/null && echo HAS:$t; done
ls /opt/zkpot/bin | grep -x 'pip.*' | sed 's/^/HAS:/'
/opt/zkpot/bin/python -c 'import importlib.util as u; print("HAS:pip-module" if u.find_spec("pip") else "")'
find /var/lib/apt/lists /var/cache/apt -type f 2>/dev/null | grep -v '/lock$' | sed 's/^/HAS:apt-/'
find / -xdev -type d \( -name .cache -o -name __pip_cache__ \) 2>/dev/null | sed 's/^/HAS:cache-/'
touch /opt/zkpot/x 2>/dev/null && echo HAS:writable-root
true
"""


@pytest.fixture(scope="module")
def image() -> str:
    """zkpot:dev, built by `make images`' script (cached: seconds when nothing changed)."""
    _require_docker()
    _build_images()
    return "zkpot:dev"


def test_image_is_non_root_read_only_and_holds_no_build_tools(image):
    """What the runtime image holds: the venv and the base, run as uid 10001 on a read-only root;
    no compiler, no pip (module or cache), no apt lists or caches."""
    out = _docker("run", "--rm", "--read-only", "--cap-drop", "ALL", "--entrypoint", "sh", image, "-c", IMAGE_AUDIT)
    lines = out.split()
    assert lines[:2] == ["10001", "10001"], out
    assert not [line for line in lines if line.startswith("HAS:")], out
    # the entrypoint, read-only as the manifests run it, with a writable /tmp only
    proc = subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", image, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: zkpot" in proc.stdout, proc.stderr
    labels = json.loads(_docker("image", "inspect", "-f", "{{json .Config.Labels}}", image))
    assert labels["io.zkpot.base"].startswith("zkpot-base:bookworm-") and labels["io.zkpot.wheelhouse"], labels


def test_kind_overlay_runs_as_containers_with_a_validator_killed(image, tmp_path_factory):
    zkpot = zkpot_script()
    t0 = time.monotonic()
    timings: dict[str, int] = {}
    root = tmp_path_factory.mktemp("k8s-docker")
    docs = render(root)
    sts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    n_participants = sts["participant"]["spec"]["replicas"]
    external = make_secrets(root, zkpot, sts["validator"]["spec"]["replicas"], n_participants)
    cluster = DockerCluster(docs, external, root)
    cluster.plan()
    prometheus = None
    try:
        cluster.create_network()
        for pod in cluster.pods:
            cluster.start_pod(pod)
        timings["secrets+pods"] = round(time.monotonic() - t0)
        for workload in START_ORDER:
            cluster.run_workload(workload)
            timings[workload] = round(time.monotonic() - t0)
        prometheus, prom_url = _start_prometheus(cluster, root)
        outage = ValidatorOutage(cluster)
        outage.kill()
        wait_for_rounds(cluster, n_participants, during=outage.step)
        timings["rounds"] = round(time.monotonic() - t0)
        assert outage.restarted, f"{VICTIM} was never restarted: {outage.heights}"
        # the restarted validator caught up from its volumes: it holds the chain validator-0 holds
        deadline = time.monotonic() + 120
        while (lag := outage.height(outage.witness) - outage.height(outage.victim)) > 2:
            assert time.monotonic() < deadline, f"{VICTIM} still {lag} blocks behind 120 s after the rounds"
            time.sleep(2)
        outage.heights["caught_up_lag"] = lag
        # from its volumes: the restarted ledger opened its RocksDB where it was, not from genesis
        opened = [int(h) for h in re.findall(r"ledger/db at height (\d+)", cluster.log(outage.victim, "ledger"))]
        assert len(opened) == 2 and opened[0] == 0 and opened[1] > 0, f"{VICTIM}'s ledger opened at heights {opened}"
        outage.heights["reopened_at"] = opened[1]
        check_running_pods(cluster)
        for pod in cluster.pods:
            if not pod.workload.startswith("Job/"):
                for c in pod.long_running():
                    cluster.exec_probe(pod, c)
        assert not cluster.dead(), "\n".join(cluster.dead())
        time.sleep(3)  # let the rate() windows of the last scrapes fill
        total, down = _prometheus_targets_up(prom_url)
        assert total and not down, f"Prometheus targets down: {down}"
        failing = {k: v for k, v in _query_dashboards(prom_url).items() if v}
        assert not failing, json.dumps(failing, indent=1)
        timings["checks"] = round(time.monotonic() - t0)
        print(f"outage: {outage.heights}; {total} Prometheus targets up")
    except BaseException:
        cluster.print_tails()
        raise
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        cluster.save_logs()
        cluster.stop()
        timings["stopped"] = round(time.monotonic() - t0)
        print(f"seconds since the start, at the end of each step: {timings}; logs under {root}")
    left = _docker("ps", "-aq", "--filter", f"label=zkpot-test={cluster.run_id}").split()
    assert not left, f"containers left behind: {left}"

"""The kind overlay's pods, the kubelet's way: one generator of what each container runs.

`render()` is `kubectl kustomize deploy/k8s/overlays/kind` (through a throw-away overlay on top of
it that only makes the task smaller, see TASK_ARGS_EXTRA), `make_secrets()` is
deploy/scripts/make-secrets.sh as a user runs it, and `Cluster` turns the rendered objects into
pods and containers: for each container its command and args (or the image's ENTRYPOINT, parsed
from deploy/docker/Dockerfile, + args; `$(VAR)` expanded as the kubelet does, from env, envFrom and
downward-API fieldRefs), its environment (the image's ENV lines, then envFrom, then env, nothing
else), its volumes (ConfigMaps and Secrets written to directories, PVCs and emptyDirs as
directories: one per claim per pod, the shared claim zkpot-task one directory), its ports, user
and probes, and the pod lifecycle (init containers in order, each to exit 0; native sidecars
started in order, each once its startupProbe passes; then the main containers, whose
startupProbes must pass; gRPC probes on the declared port and the pod's address).

Two runtimes run what it generates, with nothing else special-cased (a wrong flag, env var, port,
path or probe in deploy/ fails in both): tests/test_k8s_processes.py (each container a local
process) and tests/test_k8s_containers.py (each container a Docker container of the built image).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shlex
import string
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from test_deploy import K8S, ROOT, kubectl, yaml

OVERLAY = K8S / "overlays" / "kind"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
MAKE_SECRETS = ROOT / "deploy" / "scripts" / "make-secrets.sh"
# Workloads of the overlay, in the order they are started; the tests fail if the overlay has others.
START_ORDER = ("Job/task-publisher", "StatefulSet/validator", "Deployment/observer", "StatefulSet/participant")
ROUNDS = 2
# The only change to the kind overlay, through its own knob (config.env TASK_ARGS; the last flag
# wins): kind's 32-sample test set takes ~2 min to publish and ~20 s per proof on 2 cores; 8
# samples in 2 shards: ~30 s and ~5 s. The task ends after ROUNDS rounds. Round 1's deadline
# counts from the chain's first block, which comes a minute or more before the participant pods
# here (started after the validators, on 2 cores) have their first proofs: 600 blocks keep it open
# for them (a round closes as soon as every participant has submitted, so this costs nothing when
# all goes well).
TASK_ARGS_EXTRA = f"--test-set-size 8 --shard-size 4 --rounds {ROUNDS} --round-deadline-blocks 600"
CLUSTER_DOMAIN = "cluster.local"    # make-secrets.sh's default, what its certificates name
ROUNDS_TIMEOUT_S = 600


# ---- the image ------------------------------------------------------------------------------

@dataclass
class Image:
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    venv: str  # the image's virtual environment
    base_path: str  # PATH of the base image, behind the Dockerfile's ENV PATH=...:$PATH


def base_image_path() -> str:
    """PATH of the base image (deploy/docker/make-base.sh imports it with this ENV)."""
    text = (ROOT / "deploy" / "docker" / "make-base.sh").read_text()
    return re.search(r"ENV PATH=([^'\"]+)", text).group(1)


def image() -> Image:
    """ENV, ENTRYPOINT, CMD and WORKDIR of the Dockerfile's last stage, and its virtual environment
    (`python3 -m venv DIR`), in the image's terms."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stage = text[[m.start() for m in re.finditer(r"^FROM ", text, re.M)][-1]:]
    venv = re.search(r"python3? -m venv (\S+)", text).group(1)
    base_path = base_image_path()
    env: dict[str, str] = {"PATH": base_path}
    entrypoint: list[str] = []
    cmd: list[str] = []
    workdir = "/"
    for line in stage.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value.replace("$PATH", base_path)
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "WORKDIR":
            workdir = rest.strip()
    return Image(env, entrypoint, cmd, workdir, venv, base_path)


# ---- rendering and Secrets ------------------------------------------------------------------

def render(tmp: Path) -> list[dict]:
    base = [d for d in yaml.safe_load_all(_kustomize_out(OVERLAY)) if d]
    task_args = next(d for d in base if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("zkpot-config-"))[
        "data"]["TASK_ARGS"]
    overlay = tmp / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAY, overlay)],
        "configMapGenerator": [{"name": "zkpot-config", "namespace": "zkpot", "behavior": "merge",
                                "literals": [f"TASK_ARGS={task_args} {TASK_ARGS_EXTRA}"]}]}))
    docs = [d for d in yaml.safe_load_all(_kustomize_out(overlay)) if d]
    (tmp / "rendered.yaml").write_text(yaml.safe_dump_all(docs))
    return docs


def _kustomize_out(path: Path) -> str:
    proc = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


def make_secrets(tmp: Path, zkpot: Path, validators: int, participants: int) -> list[dict]:
    """deploy/scripts/make-secrets.sh as a user runs it (with the participants' shards, from
    `zkpot task shards`), returning the objects it wrote for `kubectl apply`."""
    shards = tmp / "shards"
    proc = subprocess.run([str(zkpot), "task", "shards", "--out", str(shards), "--participants", str(participants)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp / "net"
    env = {**os.environ, "ZKPOT": str(zkpot), "KUBECTL": kubectl(), "SHARDS": str(shards)}
    proc = subprocess.run(["sh", str(MAKE_SECRETS), str(out), str(validators), str(participants)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [yaml.safe_load(f.read_text()) for f in sorted((out / "k8s").glob("*.yaml"))]


# ---- Kubernetes semantics -------------------------------------------------------------------

def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: a defined VAR is replaced, an undefined one kept as written,
    $$ is a literal $."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2:end]
            out.append(env.get(name, text[i:end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _random_suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


class Running(Protocol):
    """A started container: the subset of subprocess.Popen the lifecycle uses."""

    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class Pod:
    name: str
    workload: str                    # Kind/name
    spec: dict
    labels: dict[str, str]
    claims: dict[str, Path]          # volume name -> directory, from volumeClaimTemplates
    address: str = ""
    dir: Path = Path()
    procs: dict[str, Running] = field(default_factory=dict)

    def long_running(self) -> list[dict]:
        return [*(c for c in self.spec.get("initContainers", []) if c.get("restartPolicy") == "Always"),
                *self.spec["containers"]]


@dataclass
class Volume:
    """What one volumeMount of a container gets: a directory (or a file, with subPath) here."""
    path: Path
    kind: str          # persistentVolumeClaim, emptyDir, secret, configMap
    read_only: bool


class Cluster:
    """The rendered objects as pods; a runtime (subclass) says how a container starts and stops."""

    def __init__(self, docs: list[dict], external: list[dict], root: Path) -> None:
        self.docs = docs
        self.objects = {(d["kind"], d["metadata"]["name"]): d for d in [*docs, *external]}
        self.namespace = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
        self.root = root
        self.image = image()
        self.pods: list[Pod] = []
        self.lock = threading.Lock()
        self.claims_dir = root / "claims"
        self.down: set[str] = set()     # pods a test took down on purpose: not reported dead

    # -- what a runtime provides

    def start(self, pod: Pod, container: dict) -> Running:
        raise NotImplementedError

    def start_pod(self, pod: Pod) -> None:
        """Before the pod's first container (its network, for a runtime that makes one)."""

    def config_file(self, text: str, pod: Pod, mounts: dict[str, Volume]) -> str:
        """A mounted ConfigMap file as this runtime's container sees it."""
        return text

    def log(self, pod: Pod, container: str) -> str:
        path = pod.dir / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        raise NotImplementedError

    # -- pods and names

    def plan(self) -> None:
        workloads = [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "Pod",
                                                             "ReplicaSet", "CronJob")]
        assert sorted(f"{d['kind']}/{d['metadata']['name']}" for d in workloads) == sorted(START_ORDER), \
            "the overlay's workloads changed: update START_ORDER"
        by_id = {f"{d['kind']}/{d['metadata']['name']}": d for d in workloads}
        for wid in START_ORDER:
            d = by_id[wid]
            kind, name, spec = d["kind"], d["metadata"]["name"], d["spec"]
            template = spec["template"]
            if kind == "StatefulSet":
                names = [f"{name}-{i}" for i in range(spec.get("replicas", 1))]
            elif kind == "Job":
                names = [f"{name}-{_random_suffix()}"]
            else:  # Deployment
                names = [f"{name}-{_random_suffix()}{_random_suffix()}-{_random_suffix()}"
                         for _ in range(spec.get("replicas", 1))]
            for pod_name in names:
                claims = {t["metadata"]["name"]: self.claims_dir / f"{t['metadata']['name']}-{pod_name}"
                          for t in spec.get("volumeClaimTemplates", [])}
                pod = Pod(pod_name, wid, template["spec"], template["metadata"].get("labels", {}), claims)
                pod.dir = self.root / "p" / pod_name
                pod.dir.mkdir(parents=True)
                self.pods.append(pod)

    def names(self) -> dict[str, list[Pod]]:
        """DNS name -> pods, as cluster DNS answers them inside the namespace: pod names of
        StatefulSets (`validator-0.validator`, ...) and Services (every pod their selector matches,
        with a Service's port required to be its target port), each with the namespace suffixes."""
        ns = self.namespace

        def qualified(name: str) -> list[str]:
            return [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"]

        names: dict[str, list[Pod]] = {}
        statefulsets = {d["metadata"]["name"]: d for d in self.docs if d["kind"] == "StatefulSet"}
        for pod in self.pods:
            kind, workload = pod.workload.split("/")
            if kind == "StatefulSet":
                for n in qualified(f"{pod.name}.{statefulsets[workload]['spec']['serviceName']}"):
                    names.setdefault(n, []).append(pod)
        for svc in (d for d in self.docs if d["kind"] == "Service"):
            selector = svc["spec"].get("selector") or {}
            pods = [p for p in self.pods if selector and selector.items() <= p.labels.items()]
            assert pods, f"Service {svc['metadata']['name']} selects no pod"
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                for pod in pods:
                    declared = {p.get("name"): p["containerPort"] for c in [*pod.spec.get("initContainers", []),
                                                                             *pod.spec["containers"]]
                                for p in c.get("ports", [])}
                    resolved = declared.get(target) if isinstance(target, str) else target
                    assert resolved is not None, f"Service {svc['metadata']['name']}: no port {target!r} in {pod.name}"
                    # a ClusterIP would map port -> targetPort; here the name leads to the pod itself
                    assert resolved == port["port"], \
                        f"Service {svc['metadata']['name']}: port {port['port']} -> {resolved} cannot be emulated"
            for n in qualified(svc["metadata"]["name"]):
                names.setdefault(n, []).extend(pods)
        return names

    # -- volumes

    def _object(self, kind: str, name: str, optional: bool) -> dict | None:
        obj = self.objects.get((kind, name))
        assert obj is not None or optional, f"{kind} {name} is neither rendered nor written by make-secrets.sh"
        return obj

    @staticmethod
    def _files(obj: dict | None, kind: str, items: list[dict] | None) -> dict[str, bytes]:
        if obj is None:
            return {}
        data = {k: base64.b64decode(v) if kind == "Secret" else v.encode() for k, v in (obj.get("data") or {}).items()}
        data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        if items:
            return {i["path"]: data[i["key"]] for i in items}
        return data

    def volumes(self, pod: Pod, container: dict) -> dict[str, Volume]:
        """mountPath -> what is mounted there, for one container (files written)."""
        declared = {v["name"]: v for v in pod.spec.get("volumes", [])}
        mounts: dict[str, Volume] = {}
        pending_cm: list[tuple[Path, dict[str, bytes], int]] = []
        for m in container.get("volumeMounts", []):
            name = m["name"]
            v = declared.get(name)
            if v is None:
                assert name in pod.claims, f"{pod.name}/{container['name']} mounts unknown volume {name}"
                path, kind = pod.claims[name], "persistentVolumeClaim"
            elif "persistentVolumeClaim" in v:
                path, kind = self.claims_dir / v["persistentVolumeClaim"]["claimName"], "persistentVolumeClaim"
            elif "emptyDir" in v:
                path, kind = pod.dir / "empty" / name, "emptyDir"
            elif "secret" in v:
                src = v["secret"]
                path, kind = pod.dir / "secret" / name, "secret"
                if not path.exists():
                    files = self._files(self._object("Secret", src["secretName"], src.get("optional", False)),
                                        "Secret", src.get("items"))
                    self._write(path, files, src.get("defaultMode", 0o644), lambda b: b)
            elif "configMap" in v:
                src = v["configMap"]
                # per container: its files get this container's view (runtime.config_file)
                path, kind = pod.dir / "c" / container["name"] / name, "configMap"
                files = self._files(self._object("ConfigMap", src["name"], src.get("optional", False)), "ConfigMap",
                                    src.get("items"))
                pending_cm.append((path, files, src.get("defaultMode", 0o644)))
            else:
                pytest.fail(f"{pod.name}: volume {name} of an unsupported type: {v}")
            path.mkdir(parents=True, exist_ok=True)
            # Secrets and ConfigMaps are always read-only in Kubernetes
            read_only = bool(m.get("readOnly")) or kind in ("secret", "configMap")
            mounts[m["mountPath"]] = Volume(path / m["subPath"] if m.get("subPath") else path, kind, read_only)
        for path, files, mode in pending_cm:
            self._write(path, files, mode, lambda b, ms=mounts: self.config_file(b.decode(), pod, ms).encode())
        return mounts

    @staticmethod
    def _write(path: Path, files: dict[str, bytes], mode: int, transform) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for key, data in files.items():
            (path / key).parent.mkdir(parents=True, exist_ok=True)
            (path / key).write_bytes(transform(data))
            (path / key).chmod(mode)

    # -- what the container runs

    def env(self, pod: Pod, container: dict) -> dict[str, str]:
        """The container's environment as the kubelet makes it (in the pod's terms)."""
        env = dict(self.image.env)
        for src in container.get("envFrom", []):
            ref = src.get("configMapRef") or src.get("secretRef")
            kind = "ConfigMap" if "configMapRef" in src else "Secret"
            obj = self._object(kind, ref["name"], ref.get("optional", False))
            for key, value in self._files(obj, kind, None).items():
                env[src.get("prefix", "") + key] = value.decode()
        fields = {"metadata.name": pod.name, "metadata.namespace": self.namespace, "status.podIP": pod.address,
                  "spec.nodeName": "kind-control-plane", "spec.serviceAccountName": "default"}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
            elif "fieldRef" in e.get("valueFrom", {}):
                path = e["valueFrom"]["fieldRef"]["fieldPath"]
                assert path in fields, f"{pod.name}/{container['name']}: fieldRef {path} not emulated"
                env[e["name"]] = fields[path]
            else:
                ref = e["valueFrom"].get("configMapKeyRef") or e["valueFrom"].get("secretKeyRef")
                kind = "ConfigMap" if "configMapKeyRef" in e["valueFrom"] else "Secret"
                files = self._files(self._object(kind, ref["name"], ref.get("optional", False)), kind, None)
                if ref["key"] in files:
                    env[e["name"]] = files[ref["key"]].decode()
        env["HOSTNAME"] = pod.name
        return env

    def argv(self, container: dict, env: dict[str, str]) -> list[str]:
        """command + args, or the image's ENTRYPOINT + args (or its CMD), $(VAR)-expanded."""
        if "command" in container:
            argv = [*container["command"], *container.get("args", [])]
        else:
            argv = [*self.image.entrypoint, *container.get("args", self.image.cmd)]
        return [expand(a, env) for a in argv]

    # -- the kubelet

    def probe(self, pod: Pod, container: dict, kind: str) -> bool:
        spec = container.get(kind)
        if spec is None:
            return True
        if "grpc" in spec:
            return grpc_health(f"{pod.address}:{spec['grpc']['port']}", spec["grpc"].get("service", ""),
                               float(spec.get("timeoutSeconds", 1)))
        if "httpGet" in spec:   # the kubelet's rule: any status 200-399 passes
            get = spec["httpGet"]
            number = get["port"] if isinstance(get["port"], int) else port(container, get["port"])
            try:
                with urllib.request.urlopen(f"http://{pod.address}:{number}{get.get('path', '/')}",
                                            timeout=max(float(spec.get("timeoutSeconds", 1)), 1.0)) as resp:
                    return 200 <= resp.status < 400
            except OSError:
                return False
        pytest.fail(f"{pod.name}/{container['name']}: {kind} {spec} is not a gRPC or HTTP probe (not emulated)")

    def wait_started(self, pod: Pod, container: dict) -> None:
        spec = container.get("startupProbe") or {}
        period = float(spec.get("periodSeconds", 10))
        deadline = time.monotonic() + float(spec.get("initialDelaySeconds", 0)) + period * int(
            spec.get("failureThreshold", 3))
        proc = pod.procs[container["name"]]
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{pod.name}/{container['name']} exited {proc.returncode} while starting\n"
                            f"{self.tail(pod, container['name'])}")
            if self.probe(pod, container, "startupProbe"):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{pod.name}/{container['name']}: startupProbe still failing after "
                            f"{spec.get('failureThreshold', 3)} x {period:g} s\n{self.tail(pod, container['name'])}")
            time.sleep(min(period, 1.0))

    def run_pod(self, pod: Pod, only: set[str] | None = None) -> None:
        """The pod's containers the kubelet's way (`only`: restart just those, as after a crash)."""
        self.start_pod(pod)
        for c in pod.spec.get("initContainers", []):
            if only is not None and c["name"] not in only:
                continue
            proc = self.start(pod, c)
            if c.get("restartPolicy") == "Always":    # native sidecar: the next one waits for its startup probe
                self.wait_started(pod, c)
                continue
            try:
                rc = proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{pod.name}: init container {c['name']} still running after 600 s\n"
                            f"{self.tail(pod, c['name'])}")
            assert rc == 0, f"{pod.name}: init container {c['name']} exited {rc}\n{self.tail(pod, c['name'])}"
        mains = [c for c in pod.spec["containers"] if only is None or c["name"] in only]
        for c in mains:
            self.start(pod, c)
        if pod.workload.startswith("Job/"):
            for c in mains:
                rc = pod.procs[c["name"]].wait(timeout=900)
                assert rc == 0, f"{pod.name}/{c['name']} exited {rc}\n{self.tail(pod, c['name'])}"
            return
        for c in mains:
            self.wait_started(pod, c)

    def run_workload(self, workload: str) -> None:
        """The workload's pods in parallel, each until started (a Job's: until it completed)."""
        pods = [p for p in self.pods if p.workload == workload]
        errors: list[BaseException] = []

        def run(pod: Pod) -> None:
            try:
                self.run_pod(pod)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=1200)
        if errors:
            raise errors[0]
        assert not any(t.is_alive() for t in threads), f"{workload}: pods did not start"

    # -- checks

    def dead(self) -> list[str]:
        out = []
        for pod in self.pods:
            if pod.workload.startswith("Job/") or pod.name in self.down:
                continue
            for c in pod.long_running():
                proc = pod.procs.get(c["name"])
                if proc is not None and proc.poll() is not None:
                    out.append(f"{pod.name}/{c['name']} exited {proc.returncode}\n{self.tail(pod, c['name'])}")
        return out

    def tail(self, pod: Pod, container: str, lines: int = 40) -> str:
        return "\n".join(f"    {line}" for line in self.log(pod, container).splitlines()[-lines:])

    def print_tails(self) -> None:
        for pod in self.pods:
            for name in pod.procs:
                print(f"--- {pod.name}/{name}\n{self.tail(pod, name, 25)}")


def grpc_health(target: str, service: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                        timeout=max(timeout, 1.0))
        except grpc.RpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def tls_channel(cluster: Cluster, address: str, port: int, name: str):
    """A client's channel (Secret zkpot-client-tls) to `address`, checking the certificate names `name`."""
    import grpc

    secret = cluster.objects[("Secret", "zkpot-client-tls")]["data"]
    creds = grpc.ssl_channel_credentials(root_certificates=base64.b64decode(secret["ca.crt"]),
                                         private_key=base64.b64decode(secret["tls.key"]),
                                         certificate_chain=base64.b64decode(secret["tls.crt"]))
    return grpc.secure_channel(f"{address}:{port}", creds, options=[("grpc.ssl_target_name_override", name)])


def port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def ledger_of(cluster: Cluster, pod: Pod):
    """A LedgerStub to the ledger container of a validator pod, over mutual TLS as a client."""
    from zkpot.v1 import ledger_pb2_grpc

    ledger = next(c for c in pod.long_running() if c["name"] == "ledger")
    channel = tls_channel(cluster, pod.address, port(ledger, "ledger"), "ledger")
    return channel, ledger_pb2_grpc.LedgerStub(channel)


def wait_for_rounds(cluster: Cluster, n_participants: int, during=None) -> None:
    """GetRound on validator-0's ledger (as a client, through the certificate's name `ledger`) until
    round ROUNDS has closed; every round with an accepted submission of every participant.
    `during(closed_rounds)` runs at each poll (faults)."""
    from zkpot.v1 import ledger_pb2

    ledger_pod = next(p for p in cluster.pods if p.workload == "StatefulSet/validator")
    channel, stub = ledger_of(cluster, ledger_pod)
    deadline = time.monotonic() + ROUNDS_TIMEOUT_S
    summaries: dict[int, object] = {}
    try:
        while True:
            if during is not None:
                during(len(summaries))
            dead = cluster.dead()
            assert not dead, "\n".join(dead)
            for r in range(1, ROUNDS + 1):
                if r in summaries:
                    continue
                try:
                    summary = stub.GetRound(ledger_pb2.GetRoundRequest(round=r), timeout=10)
                except Exception:
                    break
                if not summary.closed:
                    break
                summaries[r] = summary
            if len(summaries) == ROUNDS:
                break
            assert time.monotonic() < deadline, f"round {len(summaries) + 1} not closed after {ROUNDS_TIMEOUT_S} s"
            time.sleep(2)
    finally:
        channel.close()
    for r, summary in summaries.items():
        accepted = {s.participant for s in summary.submissions}
        assert len(accepted) == n_participants, f"round {r}: {len(accepted)} of {n_participants} participants accepted"
        if any(s.aggregated for s in summary.submissions):
            assert summary.next_global_model_cid != summary.global_model_cid, f"round {r}: no new global model"


def check_running_pods(cluster: Cluster) -> None:
    """Every long-running container still passes its probes, every metrics-* port serves /metrics
    (and the prometheus.io/port annotation names one of them), every participant answers Status
    over mutual TLS under its pod's name."""
    for pod in cluster.pods:
        if pod.workload.startswith("Job/"):
            continue
        metrics_ports = []
        for c in pod.long_running():
            for probe in ("readinessProbe", "livenessProbe"):
                assert cluster.probe(pod, c, probe), f"{pod.name}/{c['name']}: {probe} fails"
            for p in c.get("ports", []):
                if p["name"].startswith("metrics-"):
                    metrics_ports.append(p["containerPort"])
                    with urllib.request.urlopen(f"http://{pod.address}:{p['containerPort']}/metrics",
                                                timeout=10) as resp:
                        body = resp.read().decode()
                    assert resp.status == 200 and "process_cpu_seconds_total" in body, (pod.name, c["name"])
        template = next(d for d in cluster.docs if f"{d['kind']}/{d['metadata']['name']}" == pod.workload)
        annotations = template["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            assert int(annotations["prometheus.io/port"]) in metrics_ports, pod.name
    from zkpot.v1 import participant_pb2, participant_pb2_grpc

    for pod in (p for p in cluster.pods if p.workload == "StatefulSet/participant"):
        main = next(c for c in pod.spec["containers"] if c["name"] == "participant")
        deadline = time.monotonic() + 60
        with tls_channel(cluster, pod.address, port(main, "participant"), f"{pod.name}.participant") as channel:
            while True:   # it sees the last round close a block or so after the ledger
                status = participant_pb2_grpc.ParticipantStub(channel).Status(
                    participant_pb2.ParticipantStatusRequest(),
                    timeout=10)
                if status.task_finished or time.monotonic() > deadline:
                    break
                time.sleep(1)
        assert status.task_finished and status.last_accepted_round == ROUNDS, (pod.name, status)

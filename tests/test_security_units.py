"""Unit tests of the security helpers: token buckets, the mempool's sender quota, TLS material, peer ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.consensus.mempool import Mempool
from zkpot import chain, tls
from zkpot.crypto import KeyPair
from zkpot.ratelimit import TokenBuckets
from zkpot.v1 import types_pb2


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_burst_refill_and_isolation() -> None:
    clock = Clock()
    b = TokenBuckets(rate=10, burst=20, clock=clock)
    assert b.try_take("a", 15)
    assert not b.try_take("a", 10)          # 5 left
    assert b.try_take("b", 20)              # another key has its own bucket
    assert b.retry_after("a", 10) == pytest.approx(0.5)
    clock.t += 0.5
    assert b.try_take("a", 10)
    clock.t += 3600
    assert not b.try_take("a", 21)          # never above the burst, however long idle
    assert b.try_take("a", 20)
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)


def test_token_bucket_table_is_bounded() -> None:
    clock = Clock()
    b = TokenBuckets(rate=1, burst=5, max_keys=100, clock=clock)
    for i in range(1000):  # a stranger inventing identities
        b.try_take(f"peer-{i}", 5)
    assert len(b) == 100
    assert b.try_take("peer-999", 0) and not b.try_take("peer-999", 1)  # recent keys are kept, still empty


def test_mempool_quota_per_sender() -> None:
    alice, bob = KeyPair.from_seed(b"\x01" * 32), KeyPair.from_seed(b"\x02" * 32)
    pool = Mempool(max_txs=100, max_bytes=1 << 20, max_per_sender=3)

    def tx(key: KeyPair, i: int) -> tuple[bytes, types_pb2.Transaction]:
        t = chain.sign_tx(key, types_pb2.Transaction(payload=bytes([i]), nonce=i))
        return chain.tx_id(t), t

    a = [tx(alice, i) for i in range(5)]
    assert [pool.add(*x) for x in a[:3]] == [None, None, None]
    assert pool.add(*a[3]).startswith("resource_exhausted: sender quota")
    assert pool.add(*tx(bob, 9)) is None     # others unaffected
    pool.mark_committed([a[0][0]])           # a committed tx frees its sender's slot
    assert pool.add(*a[3]) is None
    assert pool.add(*a[4]).startswith("resource_exhausted")
    assert len(pool) == 4
    assert Mempool(max_txs=3, max_bytes=1 << 20).max_per_sender == 3  # default: no quota below the pool cap


def test_issued_certificate_chains_to_its_ca(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    ca = tls.make_ca(tmp_path / "ca")
    node = tls.TlsMaterial.load(tls.issue(ca, "validator-3", tmp_path / "v3", sans=["10.0.0.7", "v3.example"]))
    assert node.common_name() == "validator-3"
    cert = x509.load_pem_x509_certificate(node.cert)
    ca_cert = x509.load_pem_x509_certificate(node.ca)
    ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "v3.example" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.7"]
    with pytest.raises(FileNotFoundError, match="tls.key"):
        tls.TlsMaterial.load(ca)  # a CA directory is not a node directory

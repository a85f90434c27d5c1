"""Unit tests of the security helpers: token buckets, the mempool's sender quota, TLS material, peer ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.consensus import checks
from services.consensus.mempool import Mempool
from zkpot import chain, refusal, tls
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
    quota = pool.add(*a[3])
    assert quota.reason == refusal.BUSY and quota.detail.startswith("sender quota"), quota
    assert pool.add(*tx(bob, 9)) is None     # others unaffected
    pool.mark_committed([a[0][0]])           # a committed tx frees its sender's slot
    assert pool.add(*a[3]) is None
    assert pool.add(*a[4]).reason == refusal.BUSY
    assert len(pool) == 4
    assert Mempool(max_txs=3, max_bytes=1 << 20).max_per_sender == 3  # default: no quota below the pool cap


def test_mempool_known_id_needs_the_whole_message_equal() -> None:
    """Issue 22: a block's tx takes an admitted tx's id (no re-encoding) only when the messages are
    equal; the same signature on altered content, or a committed tx, gets None (its id is computed)."""
    key = KeyPair.from_seed(b"\x03" * 32)
    pool = Mempool(max_txs=100, max_bytes=1 << 20)
    tx = chain.sign_tx(key, types_pb2.Transaction(payload=b"signed", nonce=1))
    tx_id = chain.tx_id(tx)
    assert pool.known_id(tx) is None
    assert pool.add(tx_id, tx) is None
    copy = types_pb2.Transaction.FromString(tx.SerializeToString())  # as a proposal's copy arrives
    assert pool.known_id(copy) == tx_id
    for field, value in (("payload", b"altered"), ("nonce", 2), ("sender", bytes(32))):
        altered = types_pb2.Transaction.FromString(tx.SerializeToString())
        setattr(altered, field, value)
        assert pool.known_id(altered) is None, field
        assert checks.tx_ids([altered], pool.known_id) == [chain.tx_id(altered)] != [tx_id]
    empty_payload = types_pb2.Transaction(sender=tx.sender, nonce=1, signature=tx.signature)
    assert pool.known_id(empty_payload) is None  # an absent body is not the same message
    pool.mark_committed([tx_id])
    assert pool.known_id(copy) is None


def test_mempool_is_fair_by_bytes_and_evicts_the_heaviest() -> None:
    """Issue 18.3: a sender flooding large transactions fills its own byte quota, and when the pool
    is full a lighter sender evicts the heaviest one's newest transactions, never the reverse."""
    flood, honest, third = (KeyPair.from_seed(bytes([i]) * 32) for i in (5, 6, 7))
    evictions: list[int] = []
    pool = Mempool(max_txs=1000, max_bytes=10_000, max_per_sender=1000, max_bytes_per_sender=6_000,
                   on_evict=evictions.append)

    def tx(key: KeyPair, i: int, size: int) -> tuple[bytes, types_pb2.Transaction]:
        t = chain.sign_tx(key, types_pb2.Transaction(payload=bytes(size), nonce=i))
        return chain.tx_id(t), t

    big = [tx(flood, i, 1_000) for i in range(10)]
    results = [pool.add(*x) for x in big]
    admitted = [x for x, r in zip(big, results, strict=True) if r is None]
    assert len(admitted) == 5 and "sender quota" in results[5].detail  # its byte quota: 6,000 > 5 x ~1,100
    small = [tx(honest, i, 60) for i in range(30)]  # ~5 kB in all: within its own quota
    assert all(pool.add(*x) is None for x in small)  # the pool fills up: the flooder's newest go
    assert sum(evictions) >= 1 and len(pool) == 5 - sum(evictions) + 30
    assert admitted[0][0] in pool and admitted[-1][0] not in pool  # newest first
    assert pool.bytes <= 10_000
    # the flooder may not evict the lighter sender, nor itself: refused, nothing evicted
    before = sum(evictions)
    assert pool.add(*tx(flood, 99, 1_000)).reason == refusal.BUSY
    # a newcomer heavier than anyone after admission evicts nobody either
    assert pool.add(*tx(third, 0, 5_500)).reason == refusal.BUSY
    assert sum(evictions) == before and pool.bytes <= 10_000


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


@pytest.mark.parametrize("case", ["timeout_1ms", "ledger_unwritable", "garbage_genesis"])
def test_settings_that_cannot_work_fail_at_start_with_one_clear_line(tmp_path: Path, case: str) -> None:
    """Issue 19.6: a 1 ms view timeout (livelock), a ledger directory it cannot create (a read-only
    mount), a genesis that is not one: refused at start, one line, no traceback."""
    import subprocess
    import sys

    from chain_factory import make_genesis

    fx = make_genesis(n_validators=4, n_participants=1)
    genesis = tmp_path / "genesis.json"
    fx.genesis.save(genesis)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    argv, want = {
        "timeout_1ms": (["consensus", "serve", "--genesis", str(genesis), "--key", "k", "--node", "v0", "--listen",
                         "127.0.0.1:1", "--ledger", "127.0.0.1:2", "--data-dir", str(tmp_path / "c"),
                         "--base-timeout-ms", "1"], "below 50 ms"),
        "ledger_unwritable": (["ledger", "serve", "--data-dir", "/proc/zkpot-ledger", "--genesis", str(genesis),
                               "--listen", "127.0.0.1:1"], "cannot open the ledger at /proc/zkpot-ledger"),
        "garbage_genesis": (["ledger", "serve", "--data-dir", str(tmp_path / "l"), "--genesis", str(garbage),
                             "--listen", "127.0.0.1:1"], f"genesis {garbage}: cannot use it"),
    }[case]
    res = subprocess.run([sys.executable, "-m", "zkpot.cli", *argv], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode != 0
    assert want in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]

"""Golden state roots: a fixed chain must give these roots on every validator, whatever protobuf
version or backend it runs (issue 17.1). State records are hashed by their canonical encoding,
never by protobuf wire bytes; a change here is a consensus change (a fork of every chain)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from chain_factory import ChainBuilder, make_genesis

from services.ledger.ledger import Ledger


def roots() -> list[str]:
    """Genesis, a round of three accepted submissions (closes: aggregate + leader schedule), a
    refused duplicate, a payload, a late and an early submission, an empty block."""
    fx = make_genesis(n_validators=4, n_participants=3, rounds=3, min_correct=10)
    b = ChainBuilder(fx)
    blocks = [
        [fx.submit(0, 1, 12, proof=b"p0")],
        [fx.submit(1, 1, 14, proof=b"p1"), fx.payload(b"note")],
        [fx.submit(2, 1, 9, proof=b"p2")],  # below min_correct: scored, not aggregated
        [fx.submit(0, 2, 13, proof=b"p3"), fx.submit(0, 2, 15, proof=b"p4")],  # the second: duplicate
        [fx.submit(1, 1, 11, proof=b"p5")],  # round 1 is closed
        [],
    ]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        led = Ledger(Path(tmp) / "db", fx.genesis)
        try:
            out.append(led.head.state_root.hex())
            for txs in blocks:
                out.append(led.append(b.extend(txs)).state_root.hex())
        finally:
            led.close()
    return out


# recomputed 2026-12-03 (issue 17.2: RoundPhase gained an UNSPECIFIED zero and every round now
# records its phase, PROOFS at open, CLOSED at close; issue 21: the leader schedule keeps the
# previous epoch's scores — deliberate consensus changes, before any release); first computed
# when state records became canonically hashed (2026-12-02). Identical under upb and the
# pure-Python protobuf backend and the lowest allowed protobuf.
GOLDEN = [
    "1d8171f52c2448020853a9ddc849894ab350291711ebedba7f8d9ab049cdfec8",  # genesis
    "ffe20b584c5b0a6907c77a4d983d4948962099e36b5ffd4dd55b4280a8f6797d",
    "1749148f4a46fd96852be83cf9324f1e3efef4f87e101344ca57ad75d54c04e7",
    "d33a08c05b4dfc49ba7d57fc20463ebf502e3c3ce5d89452cb86143abe3ca71a",  # round 1 closes
    "47a80fbd445d9edc7c022b37a6d432889860b4586f5a31ea81f58fe8c9b323e3",
    "25f614b9e27a824f11364406574feec406a6f86c3b4abaa033dc85d9776995de",
    "e0d2f83cf2a953901aeb31449584748e9c5cb96acb5933eff43d1dd96e7bdd54",
]


def test_the_chain_gives_the_golden_roots() -> None:
    assert roots() == GOLDEN


def _roots_in_subprocess(env_extra: dict[str, str], path_first: str = "") -> tuple[str, str, list[str]]:
    tests = Path(__file__).resolve().parent
    path = [p for p in (path_first, str(tests), str(tests.parent), os.environ.get("PYTHONPATH", "")) if p]
    env = {**os.environ, **env_extra, "PYTHONPATH": os.pathsep.join(path)}
    code = ("import json, google.protobuf as p; from google.protobuf.internal import api_implementation as a; "
            "import test_state_roots as t; print(json.dumps([p.__version__, a.Type(), t.roots()]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    version, backend, got = json.loads(done.stdout.strip().splitlines()[-1])
    return version, backend, got


def test_the_pure_python_protobuf_backend_gives_the_same_roots() -> None:
    """upb (the default) and the pure-Python implementation serialize differently in places; the
    roots must not care."""
    _, backend, got = _roots_in_subprocess({"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"})
    assert backend == "python"
    assert got == GOLDEN


LOWEST_PROTOBUF = "7.35.1"  # pyproject's lower bound: the generated stubs refuse anything older


def test_the_lowest_allowed_protobuf_gives_the_same_roots() -> None:
    """The suite runs the newest protobuf the bounds allow (what pip picks); this runs the oldest,
    installed on first use under .cache/ (needs the package index, like the install does)."""
    import pytest

    target = Path(__file__).resolve().parent.parent / ".cache" / f"protobuf-{LOWEST_PROTOBUF}"
    if not (target / "google" / "protobuf").is_dir():
        got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              f"protobuf=={LOWEST_PROTOBUF}"], capture_output=True, text=True, timeout=300)
        if got.returncode != 0:
            pytest.skip(f"protobuf {LOWEST_PROTOBUF} could not be installed: {got.stderr.strip()[-300:]}")
    for backend in ("upb", "python"):
        version, used, roots_ = _roots_in_subprocess({"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": backend},
                                                      path_first=str(target))
        assert (version, used) == (LOWEST_PROTOBUF, backend)
        assert roots_ == GOLDEN

"""The fallback's common coin: what one coin costs a replica, against its ed25519 vote check.

Per operation of zkpot.coin (py-arkworks-bls12381): deal, sign a share, verify a share, combine
2f+1 shares, verify the coin; for n = 4 and n = 16. The ceiling measured in the same run is
PyNaCl's ed25519 verify (what a replica does for every vote): each coin figure is also printed as
a multiple of it. Where installed, blspy's and py_ecc's plain BLS sign/verify are timed too
(the alternatives considered). Ends with one JSON line.

  python bench/coin.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zkpot import chain, coin


def per_op(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call (at least 3 calls, else for `seconds`)."""
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - t0) / calls


def ed25519_verify_s(seconds: float) -> float:
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    signed = key.sign(os.urandom(64))
    return per_op(lambda: key.verify_key.verify(signed), seconds)


def alternatives(seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        import blspy

        sk = blspy.AugSchemeMPL.key_gen(bytes(range(32)))
        sig = blspy.AugSchemeMPL.sign(sk, b"msg")
        pk = sk.get_g1()
        out["blspy_sign_ms"] = per_op(lambda: blspy.AugSchemeMPL.sign(sk, b"msg"), seconds) * 1e3
        out["blspy_verify_ms"] = per_op(lambda: blspy.AugSchemeMPL.verify(pk, b"msg", sig), seconds) * 1e3
    except ImportError:
        pass
    try:
        from py_ecc.bls import G2ProofOfPossession as pyecc

        sk = 42
        sig = pyecc.Sign(sk, b"msg")
        pk = pyecc.SkToPk(sk)
        out["py_ecc_verify_ms"] = per_op(lambda: pyecc.Verify(pk, b"msg", sig), 0) * 1e3
    except ImportError:
        pass
    return out


def measure(n: int, msg: bytes, seconds: float, ed: float) -> dict[str, float]:
    t = chain.quorum_size(n)
    public, shares = coin.deal(n, t, seed=b"bench")
    signed = {i: coin.sign_share(s, msg) for i, s in enumerate(shares)}
    sig = coin.combine(public, signed)
    figs = {
        "deal_ms": per_op(lambda: coin.deal(n, t), seconds) * 1e3,
        "check_consistent_ms": per_op(public.check_consistent, seconds) * 1e3,
        "sign_share_ms": per_op(lambda: coin.sign_share(shares[0], msg), seconds) * 1e3,
        "verify_share_ms": per_op(lambda: coin.verify_share(public, 0, msg, signed[0]), seconds) * 1e3,
        "combine_ms": per_op(lambda: coin.combine(public, signed), seconds) * 1e3,
        "verify_coin_ms": per_op(lambda: coin.verify_coin(public, msg, sig), seconds) * 1e3,
    }
    # one coin at one replica: its own share, 2f+1 verified shares (its own too), combine, and the
    # coin's check when it rides on a proposal (cached after)
    whole = figs["sign_share_ms"] + t * figs["verify_share_ms"] + figs["combine_ms"] + figs["verify_coin_ms"]
    figs["one_coin_per_replica_ms"] = whole
    figs["one_coin_vs_ed25519_verify"] = whole / (ed * 1e3)
    print(f"n={n:2d} (threshold {t}): " + ", ".join(
        f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in figs.items() if k.endswith("_ms")))
    print(f"       one coin per replica = {whole:.1f} ms = {figs['one_coin_vs_ed25519_verify']:.0f} ed25519 "
          f"verifies (a fallback also costs 2n signed votes per replica)")
    return {k: round(v, 3) for k, v in figs.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="per operation")
    args = ap.parse_args()
    ed = ed25519_verify_s(args.seconds)
    print(f"ceiling: ed25519 verify {ed * 1e6:.0f} us (PyNaCl, one core)")
    results: dict[str, object] = {"bench": "coin", "library": "py-arkworks-bls12381",
                                  "ed25519_verify_us": round(ed * 1e6, 1)}
    msg = coin.coin_message("zkpot-bench", 1)
    for n in (4, 16):
        results[f"n{n}"] = measure(n, msg, args.seconds, ed)
    alt = alternatives(args.seconds)
    for k, v in alt.items():
        print(f"alternative: {k.removesuffix('_ms')} {v:.2f} ms")
    results["alternatives"] = {k: round(v, 3) for k, v in alt.items()}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

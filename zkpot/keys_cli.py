"""`zkpot keys`: create and show ed25519 identities; deal the fallback's common coin."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zkpot import chain, coin
from zkpot.crypto import KeyPair


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    gen = sub.add_parser("gen", help="write a new key file (0600)")
    gen.add_argument("path", type=Path)
    gen.add_argument("--force", action="store_true", help="overwrite an existing file")
    gen.set_defaults(func=_gen)
    show = sub.add_parser("show", help="print a key file's public key")
    show.add_argument("path", type=Path)
    show.set_defaults(func=_show)
    deal = sub.add_parser(
        "deal-coin",
        help="deal the asynchronous fallback's common coin (threshold BLS): OUT/coin-public.json for "
             "genesis, OUT/<validator-i>.coin-share.json per validator (0600). Trusted dealer: whoever "
             "runs this knows every share - run it offline and delete the shares once handed out")
    deal.add_argument("out", type=Path)
    deal.add_argument("--validators", type=int, required=True)
    deal.add_argument("--names", default="validator-{i}", help="share file names (default validator-{i})")
    deal.set_defaults(func=_deal_coin)


def _gen(args: argparse.Namespace) -> int:
    if args.path.exists() and not args.force:
        print(f"{args.path} exists (use --force to overwrite)")
        return 1
    key = KeyPair.generate()
    key.save(args.path)
    print(key.public.hex())
    return 0


def _show(args: argparse.Namespace) -> int:
    print(KeyPair.load(args.path).public.hex())
    return 0


def _deal_coin(args: argparse.Namespace) -> int:
    n = args.validators
    if n < 1:
        print("--validators must be at least 1")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    public, shares = coin.deal(n, chain.quorum_size(n))
    for i, share in enumerate(shares):
        coin.save_share(args.out / f"{args.names.format(i=i)}.coin-share.json", share, i)
    (args.out / "coin-public.json").write_text(json.dumps(public.to_json(), indent=2) + "\n")
    print(f"coin dealt: threshold {public.threshold} of {n}, group key {public.group_key.hex()[:16]}...")
    return 0

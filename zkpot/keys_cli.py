"""`zkpot keys`: create and show ed25519 identities."""

from __future__ import annotations

import argparse
from pathlib import Path

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

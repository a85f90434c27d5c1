"""The `zkpot` command. Each service registers its own sub-commands (services/*/cli.py)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# (command, module providing `register(subparsers)`); imported lazily so that
# `zkpot ledger ...` never pays for importing torch or ezkl.
COMMANDS: dict[str, tuple[str, str]] = {
    "devnet": ("zkpot.devnet.cli", "run a whole ZKPoT network on this machine"),
    "keys": ("zkpot.keys_cli", "create and show ed25519 identities"),
    "tls": ("zkpot.tls", "mutual TLS: a dev CA and node certificates"),
    "task": ("zkpot.zkp.cli", "create a learning task (publisher)"),
    "participant": ("services.participant.cli", "a participant: follows the chain, proves each round, submits"),
    "prover": ("services.prover.cli", "participant's prover service"),
    "verifier": ("services.verifier.cli", "proof verifier service"),
    "consensus": ("services.consensus.cli", "HotStuff replica service"),
    "ledger": ("services.ledger.cli", "RocksDB ledger service and queries"),
    "observer": ("services.observer.cli", "learning metrics from a ledger, for Prometheus"),
    "experiment": ("zkpot.experiment.cli", "federated learning under attack: FedAvg vs ZKPoT, tables and plots"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="zkpot", description="Zero-Knowledge Proof of Training network")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if argv and argv[0] in COMMANDS:
        # only import the module of the command being run
        module, help_ = COMMANDS[argv[0]]
        importlib.import_module(module).register(sub.add_parser(argv[0], help=help_))
        for name, (_, other_help) in COMMANDS.items():
            if name != argv[0]:
                sub.add_parser(name, help=other_help)
    else:
        for name, (_, help_) in COMMANDS.items():
            sub.add_parser(name, help=help_)
    from zkpot import lifetime

    lifetime.die_with_parent_from_env()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.parse_args([args.command, "--help"])
        return 2
    # mutual TLS for every gRPC server and client of this process: --tls-dir (grpcutil.add_tls_args)
    # or, for commands without the flag, $ZKPOT_TLS_DIR
    tls_dir = getattr(args, "tls_dir", None) or os.environ.get("ZKPOT_TLS_DIR")
    health_listen = getattr(args, "health_listen", None)
    if tls_dir or health_listen:
        from zkpot import grpcutil

        grpcutil.configure_tls(tls_dir)
        grpcutil.configure_health_listen(health_listen)
    from zkpot.errors import StartupError

    try:
        return int(args.func(args) or 0)
    except StartupError as exc:
        print(f"zkpot {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The flags every service's `serve` command takes, defined once: where it listens, its name in
logs and metrics, its Prometheus port, its log level, and mutual TLS (zkpot.grpcutil)."""

from __future__ import annotations

import argparse

from zkpot import grpcutil


def add(parser: argparse.ArgumentParser, *, listen: str | None = None, node: str | None = None,
        node_help: str = "name in logs and metrics", listen_help: str = "gRPC address",
        grpc_server: bool = True, metrics_required: bool = False) -> None:
    """--listen, --node, --metrics-port, --log-level and the TLS flags. `listen` / `node`: their
    defaults (None: required); grpc_server False: a process that serves no gRPC (no --listen, no
    TLS); metrics_required: --metrics-port is its only output, so it has no default."""
    if grpc_server:
        parser.add_argument("--listen", required=listen is None, default=listen, metavar="HOST:PORT",
                            help=listen_help)
    parser.add_argument("--node", required=node is None, default=node, help=node_help)
    if metrics_required:
        parser.add_argument("--metrics-port", type=int, required=True, help="Prometheus port")
    else:
        parser.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: off)")
    parser.add_argument("--log-level", default="INFO")
    if grpc_server:
        grpcutil.add_tls_args(parser)

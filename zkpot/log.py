"""One log format for every process: time, level, service/node, message."""

from __future__ import annotations

import logging
import sys


def setup(service: str, node: str, level: str = "INFO") -> None:
    fmt = f"%(asctime)s %(levelname)s {service}/{node} %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr, force=True)

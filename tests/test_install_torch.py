"""tools/install-torch.sh asks only for torch's CPU build unless told otherwise.

A fake pip records what it is asked: on a plain package index `torch==2.13.0` is the CUDA build,
so the CPU variant must never ask for it, and must fall back to PyTorch's CPU index when the
configured indexes have no `+cpu` wheel.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "install-torch.sh"

FAKE_PIP = """#!/usr/bin/env bash
echo "$*" >> "{log}"
case "$1" in
  show) [ -n "$INSTALLED" ] && printf 'Name: torch\\nVersion: %s\\n' "$INSTALLED"; exit 0 ;;
  install) case "$*" in *extra-index-url*) exit 0 ;; esac; exit "${{FIRST_RC:-0}}" ;;
esac
"""


def run(tmp_path: Path, *args: str, first_rc: int = 0, installed: str = "") -> list[str]:
    log = tmp_path / "pip.log"
    log.write_text("")
    pip = tmp_path / "pip"
    pip.write_text(FAKE_PIP.format(log=log))
    pip.chmod(0o755)
    env = {**os.environ, "FIRST_RC": str(first_rc), "INSTALLED": installed}
    env.pop("TORCH_VARIANT", None)
    subprocess.run(["bash", str(SCRIPT), str(pip), *args], check=True, env=env, timeout=30,
                   capture_output=True)
    return [line for line in log.read_text().splitlines() if line.startswith("install")]


def test_cpu_is_the_default_and_never_asks_for_the_plain_pin(tmp_path):
    installs = run(tmp_path)
    assert installs == ["install -q torch==2.13.0+cpu"]


def test_cpu_falls_back_to_pytorch_cpu_index(tmp_path):
    installs = run(tmp_path, first_rc=1)
    assert installs[0] == "install -q torch==2.13.0+cpu"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in installs[1]
    assert installs[1].endswith("torch==2.13.0+cpu")


def test_already_installed_cpu_build_installs_nothing(tmp_path):
    assert run(tmp_path, installed="2.13.0+cpu") == []


def test_cuda_only_when_asked(tmp_path):
    assert run(tmp_path, "cuda") == ["install -q torch==2.13.0"]


def test_unknown_variant_is_refused(tmp_path):
    pip = tmp_path / "pip"
    pip.write_text("#!/bin/sh\nexit 0\n")
    pip.chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT), str(pip), "rocm"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown variant" in proc.stderr

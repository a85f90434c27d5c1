#!/usr/bin/env bash
# Install torch pinned to the build the project wants, before the project itself.
#
#   tools/install-torch.sh PIP [cpu|cuda]      (default: cpu; or TORCH_VARIANT=cuda)
#
# Why: on Linux, PyPI's `torch==2.13.0` is the multi-GB CUDA build. The CPU build is the local
# version `2.13.0+cpu`, published on PyTorch's own index (and found in a local wheelhouse or
# find-links directory where a machine has one, as on the project's CI machines). We ask for
# that exact version, first from the configured indexes (offline mirrors, wheelhouses), then
# from PyTorch's CPU index; nothing else can satisfy `+cpu`, so no CUDA build can sneak in.
# `cuda` takes PyPI's default Linux build (CUDA) and is only for GPU prover images/hosts.
set -euo pipefail
PIP=${1:?usage: install-torch.sh PIP [cpu|cuda]}
VARIANT=${2:-${TORCH_VARIANT:-cpu}}
VERSION=${TORCH_VERSION:-2.13.0}
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

installed=$("$PIP" show torch 2>/dev/null | sed -n 's/^Version: //p' || true)
case "$VARIANT" in
  cpu)
    if [ "$(uname -s)" = Darwin ]; then
      # macOS wheels on PyPI are CPU builds and carry no local version
      [ "$installed" = "$VERSION" ] || "$PIP" install -q "torch==$VERSION"
    elif [ "$installed" != "$VERSION+cpu" ]; then
      "$PIP" install -q "torch==$VERSION+cpu" 2>/dev/null \
        || "$PIP" install -q --extra-index-url "$CPU_INDEX" "torch==$VERSION+cpu"
    fi ;;
  cuda)
    [ "$installed" = "$VERSION" ] || "$PIP" install -q "torch==$VERSION" ;;
  *) echo "install-torch.sh: unknown variant '$VARIANT' (cpu or cuda)" >&2; exit 2 ;;
esac
"$PIP" show torch | sed -n 's/^Version: /torch /p'

#!/usr/bin/env bash
# The images install from a wheelhouse made here, on the host, so that `docker build` needs no
# network at all (no proxy CA inside the build, nothing fetched that this script did not pin).
#
#   deploy/docker/make-wheelhouse.sh PIP OUT [cpu|cuda]
#
# OUT gets: zkpot's own wheel (built here: setup.py's build hook generates the gRPC stubs with
# grpcio-tools), and a wheel of every runtime dependency at the version in
# constraints.txt, the runtime lock `make install` uses too (what the tests ran). Binary wheels only: a dependency without a
# wheel for this platform fails here, never turns into a compiler inside the image.
#   cpu  : torch==2.13.0+cpu (PyTorch's CPU build: from the configured indexes or wheelhouses,
#          else PyTorch's CPU index), as tools/install-torch.sh installs it.
#   cuda : PyPI's torch==2.13.0 (its Linux wheel is the CUDA build, with the nvidia-* runtime
#          wheels), for the GPU prover image. EZKL_WHEEL=path: an ezkl 23.0.5 wheel built with
#          ICICLE (deploy/docker/Dockerfile.ezkl-icicle) replaces PyPI's CPU wheel.
set -euo pipefail
PIP=${1:?usage: make-wheelhouse.sh PIP OUT [cpu|cuda]}
OUT=${2:?usage: make-wheelhouse.sh PIP OUT [cpu|cuda]}
VARIANT=${3:-cpu}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
mkdir -p "$OUT"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# the project's wheel; a fixed timestamp inside it (same source, same wheel)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 315532800)}
rm -f "$OUT"/zkpot-*.whl
"$PIP" wheel -q --no-deps -w "$OUT" "$ROOT"
wheel=$(ls "$OUT"/zkpot-*.whl)

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
case "$VARIANT" in
  cpu)  grep -v '^#' "$ROOT/constraints.txt" > "$constraints"; torch="torch==2.13.0+cpu" ;;
  cuda) grep -v -e '^#' -e '^torch==' "$ROOT/constraints.txt" > "$constraints"; torch="torch==2.13.0" ;;
  *) echo "make-wheelhouse.sh: unknown variant '$VARIANT' (cpu or cuda)" >&2; exit 2 ;;
esac
download() { "$PIP" download -q --only-binary :all: -d "$OUT" -c "$constraints" "$@" "$wheel" "$torch"; }
if [ "$VARIANT" = cuda ]; then
  # `torch==2.13.0` also matches a local 2.13.0+cpu (and prefers it) wherever pip's configuration
  # names a wheelhouse or index holding one: resolve from the CUDA index alone (TORCH_CUDA_INDEX,
  # default PyPI), ignoring pip's configuration, with this machine's CA bundle if it has one.
  cert=${PIP_CERT:-${SSL_CERT_FILE:-}}
  download --isolated --index-url "${TORCH_CUDA_INDEX:-https://pypi.org/simple}" ${cert:+--cert "$cert"}
  if ls "$OUT"/torch-*+cpu-*.whl >/dev/null 2>&1; then echo "make-wheelhouse.sh: a CPU torch in a CUDA wheelhouse" >&2; exit 1; fi
elif ! download 2>/dev/null; then
  download --extra-index-url "$CPU_INDEX"
fi
if [ "$VARIANT" = cuda ] && [ -n "${EZKL_WHEEL:-}" ]; then
  case "$(basename "$EZKL_WHEEL")" in ezkl-23.0.5-*.whl) ;; *) echo "EZKL_WHEEL must be an ezkl 23.0.5 wheel" >&2; exit 2 ;; esac
  rm -f "$OUT"/ezkl-*.whl
  cp "$EZKL_WHEEL" "$OUT/"
fi
# the exact set, for the image build's `pip install --no-index` and for audits
(cd "$OUT" && ls -1 *.whl | LC_ALL=C sort) > "$OUT/MANIFEST"
echo "wheelhouse $OUT ($VARIANT): $(wc -l < "$OUT/MANIFEST") wheels, $(du -sh "$OUT" | cut -f1)"

#!/usr/bin/env bash
# `make images`: every zkpot image, from Debian's and PyPI's packages only, with no network inside
# any build (no image registry needed at all):
#   1. the base, deploy/docker/make-base.sh (debootstrap; reused while the Debian snapshot is the same)
#   2. a wheelhouse per image, deploy/docker/make-wheelhouse.sh (on the host, through its proxy/CA)
#   3. docker build with the wheelhouse as the whole build context
#
#   deploy/docker/build-images.sh [cpu|gpu|all]     (default all; PIP= the pip that downloads)
# Images: zkpot:dev (every service; what deploy/k8s/overlays/{kind,minikube} run) and
# zkpot-prover-gpu:dev (the gpu overlay's prover). Then: kind load docker-image zkpot:dev, or
# minikube image load zkpot:dev (deploy/README.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WHAT=${1:-all}
PIP=${PIP:-$ROOT/.venv/bin/pip}
DOCKER=${DOCKER:-docker}
TAG=${TAG:-dev}
# The classic builder: Debian's docker.io has no buildx plugin, and this build needs nothing
# BuildKit adds (two stages, COPY, RUN; no network).
export DOCKER_BUILDKIT=0
cd "$ROOT"

t0=$(date +%s)
base=$(deploy/docker/make-base.sh)
echo "base: $base ($(( $(date +%s) - t0 )) s)"

build() {  # build VARIANT DOCKERFILE IMAGE
  local variant=$1 dockerfile=$2 image=$3 t1
  t1=$(date +%s)
  deploy/docker/make-wheelhouse.sh "$PIP" "build/wheelhouse-$variant" "$variant"
  "$DOCKER" build -q -f "$dockerfile" --build-arg "BASE_IMAGE=$base" \
    --label "io.zkpot.base=$base" \
    --label "io.zkpot.wheelhouse=$(sha256sum "build/wheelhouse-$variant/MANIFEST" | cut -c1-16)" \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    -t "$image" "build/wheelhouse-$variant" >/dev/null
  "$DOCKER" run --rm "$image" --help >/dev/null
  echo "$image: $("$DOCKER" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'), $(( $(date +%s) - t1 )) s"
}
case "$WHAT" in
  cpu) build cpu deploy/docker/Dockerfile "zkpot:$TAG" ;;
  gpu) build cuda deploy/docker/Dockerfile.prover-gpu "zkpot-prover-gpu:$TAG" ;;
  all) build cpu deploy/docker/Dockerfile "zkpot:$TAG"
       build cuda deploy/docker/Dockerfile.prover-gpu "zkpot-prover-gpu:$TAG" ;;
  *) echo "build-images.sh: cpu, gpu or all" >&2; exit 2 ;;
esac
echo "images built in $(( $(date +%s) - t0 )) s"

#!/bin/sh
# Init container "data" of a participant pod: the participant's private training data (shard.npz,
# what `zkpot prover serve --shard` reads) must be on the pod's PVC before the prover starts.
#   - already there: kept (the PVC is the participant's; delete the file to load another);
#   - Secret zkpot-participant-shards has <pod name>.npz (dev clusters, make-secrets.sh SHARDS=):
#     copied from it;
#   - otherwise: wait, and say how to copy it in (deploy/README.md, "Private data").
set -eu
data=${DATA_DIR:-/var/lib/zkpot/participant}
shards=${SHARDS_DIR:-/etc/zkpot/shards}
mkdir -p "$data/state"
if [ ! -s "$data/shard.npz" ] && [ -s "$shards/$POD_NAME.npz" ]; then
  cp "$shards/$POD_NAME.npz" "$data/shard.npz.tmp"
  mv "$data/shard.npz.tmp" "$data/shard.npz"
  echo "$POD_NAME: shard.npz copied from Secret zkpot-participant-shards"
fi
waited=0
while [ ! -s "$data/shard.npz" ]; do
  if [ $((waited % 60)) -eq 0 ]; then
    echo "$POD_NAME: waiting for $data/shard.npz (its private data); copy it in with" \
      "kubectl cp SHARD.npz $POD_NAME:$data/upload.npz -c data &&" \
      "kubectl exec $POD_NAME -c data -- mv $data/upload.npz $data/shard.npz"
  fi
  sleep 5
  waited=$((waited + 5))
done
echo "$POD_NAME: private data $data/shard.npz ($(wc -c < "$data/shard.npz") bytes)"

#!/bin/sh
# Start this pod's HotStuff replica with every other validator of the StatefulSet as a peer.
# Pod NAME-i reaches pod NAME-j as NAME-j.NAME (headless Service NAME, same namespace).
set -eu
set_name=${POD_NAME%-*}
peers=""
i=0
while [ "$i" -lt "$VALIDATORS" ]; do
  peer="$set_name-$i"
  [ "$peer" = "$POD_NAME" ] || peers="$peers --peer=$peer@$peer.$set_name:26000"
  i=$((i + 1))
done
# the fallback's coin share, when the network dealt one (make-secrets.sh: beside the key)
coin=""
share="/etc/zkpot/keys/$POD_NAME.coin-share.json"
[ -f "$share" ] && coin="--coin-share $share"
# shellcheck disable=SC2086  # $peers and $CONSENSUS_ARGS hold several flags
exec zkpot consensus serve \
  --genesis /var/lib/zkpot/task/genesis.json \
  --key "/etc/zkpot/keys/$POD_NAME.json" \
  --node "$POD_NAME" \
  --listen 0.0.0.0:26000 \
  --ledger 127.0.0.1:26002 \
  --verifier 127.0.0.1:26001 \
  --data-dir /var/lib/zkpot/consensus \
  --metrics-port 26005 \
  $peers $coin ${CONSENSUS_ARGS:-}

#!/bin/sh
# Start this pod's participant (`zkpot participant run`). Pod participant-<i> submits to validator
# <i mod VALIDATORS> first (participant i operates validator i in members.json, make-secrets.sh)
# and fails over to the others in turn; each validator is its consensus (26000) and ledger (26002)
# port under its stable name validator-<k>.validator (headless Service of the StatefulSet).
set -eu
validator_set=validator
ordinal=${POD_NAME##*-}
validators=""
k=0
while [ "$k" -lt "$VALIDATORS" ]; do
  v="$validator_set-$(((ordinal + k) % VALIDATORS)).$validator_set"
  validators="$validators --validator=$v:26000,$v:26002"
  k=$((k + 1))
done
# shellcheck disable=SC2086  # $validators and $PARTICIPANT_ARGS hold several flags
exec zkpot participant run \
  --key "/etc/zkpot/keys/$POD_NAME.json" \
  --genesis /var/lib/zkpot/task/genesis.json \
  --prover 127.0.0.1:26500 \
  --data-dir /var/lib/zkpot/participant/state \
  --listen 0.0.0.0:26501 \
  --metrics-port 26506 \
  --node "$POD_NAME" \
  $validators ${PARTICIPANT_ARGS:-}

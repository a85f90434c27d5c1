#!/bin/sh
# Create the identities of a zkpot network and the Kubernetes objects that carry them.
#
#   deploy/scripts/make-secrets.sh OUT_DIR [VALIDATORS=4] [PARTICIPANTS=VALIDATORS]
#   kubectl apply -f OUT_DIR/k8s/          # after the namespace exists (kubectl create namespace zkpot)
#
# Writes, with `zkpot keys gen` (ed25519 key files, 0600) and `kubectl create --dry-run=client`:
#   OUT_DIR/keys/publisher.json, validator-<i>.json, participant-<j>.json   (keep private)
#   OUT_DIR/members.json           names + public keys, read by the task-publisher Job (genesis)
#   OUT_DIR/k8s/publisher-key.yaml       Secret zkpot-publisher-key   (publisher.json)
#   OUT_DIR/k8s/validator-keys.yaml      Secret zkpot-validator-keys  (validator-<i>.json, one per pod)
#   OUT_DIR/k8s/participant.yaml         Secret zkpot-participant     (key.json [+ shard.npz])
#   OUT_DIR/k8s/members.yaml             ConfigMap zkpot-members      (members.json)
# Validator i is named validator-<i> (the StatefulSet's pod name); participant j operates
# validator j when j < VALIDATORS. The prover Deployment serves participant-0: pass its private
# data shard as SHARD=path/to/shard.npz, or add it to the Secret later (deploy/README.md).
# Environment: NAMESPACE (zkpot), CHAIN_ID (zkpot-k8s), SHARD, ZKPOT (zkpot), KUBECTL (kubectl).
set -eu
out=${1:?usage: make-secrets.sh OUT_DIR [VALIDATORS] [PARTICIPANTS]}
validators=${2:-4}
participants=${3:-$validators}
ns=${NAMESPACE:-zkpot}
zkpot=${ZKPOT:-zkpot}
kubectl=${KUBECTL:-kubectl}
[ -e "$out/keys" ] && { echo "$out/keys exists: refusing to overwrite identities" >&2; exit 1; }
mkdir -p "$out/keys" "$out/k8s"

gen() { $zkpot keys gen "$out/keys/$1.json"; }  # prints the public key (hex)

gen publisher >/dev/null
members="{\"chain_id\": \"${CHAIN_ID:-zkpot-k8s}\", \"validators\": ["
validator_files=""
i=0
while [ "$i" -lt "$validators" ]; do
  pub=$(gen "validator-$i")
  [ "$i" -gt 0 ] && members="$members, "
  members="$members{\"name\": \"validator-$i\", \"public_key\": \"$pub\"}"
  validator_files="$validator_files --from-file=$out/keys/validator-$i.json"
  i=$((i + 1))
done
members="$members], \"participants\": ["
j=0
while [ "$j" -lt "$participants" ]; do
  pub=$(gen "participant-$j")
  operated=""
  [ "$j" -lt "$validators" ] && operated="validator-$j"
  [ "$j" -gt 0 ] && members="$members, "
  members="$members{\"name\": \"participant-$j\", \"public_key\": \"$pub\", \"validator\": \"$operated\"}"
  j=$((j + 1))
done
echo "$members]}" > "$out/members.json"

dry="--dry-run=client -o yaml --namespace=$ns"
# shellcheck disable=SC2086  # $dry and $validator_files hold several flags
$kubectl create secret generic zkpot-publisher-key $dry \
  --from-file="publisher.json=$out/keys/publisher.json" > "$out/k8s/publisher-key.yaml"
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-validator-keys $dry $validator_files > "$out/k8s/validator-keys.yaml"
shard=""
[ -n "${SHARD:-}" ] && shard="--from-file=shard.npz=$SHARD"
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-participant $dry \
  --from-file="key.json=$out/keys/participant-0.json" $shard > "$out/k8s/participant.yaml"
# shellcheck disable=SC2086
$kubectl create configmap zkpot-members $dry --from-file="members.json=$out/members.json" > "$out/k8s/members.yaml"

echo "wrote $validators validator and $participants participant identities to $out/keys"
echo "next: kubectl create namespace $ns; kubectl apply -f $out/k8s/"
[ -n "$shard" ] || echo "note: Secret zkpot-participant has no shard.npz yet (set SHARD=...; see deploy/README.md)"

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
# and the mutual-TLS material, with `zkpot tls dev-ca` / `zkpot tls issue` (ECDSA P-256):
#   OUT_DIR/tls/ca/ca.crt, ca.key        the dev CA (keep ca.key offline: it can mint identities)
#   OUT_DIR/tls/<name>/tls.crt, tls.key, ca.crt   validator-<i>, prover, client
#   OUT_DIR/k8s/validator-tls.yaml       Secret zkpot-validator-tls (Opaque: validator-<i>.crt,
#                                        validator-<i>.key per pod + ca.crt; the pod's init container
#                                        tls copies its own pair by pod name)
#   OUT_DIR/k8s/prover-tls.yaml          Secret zkpot-prover-tls  (kubernetes.io/tls + ca.crt)
#   OUT_DIR/k8s/client-tls.yaml          Secret zkpot-client-tls  (kubernetes.io/tls + ca.crt)
# Certificate SANs are the names peers and clients dial: validator-<i>.validator[.NS.svc.DOMAIN],
# the consensus and ledger Services, prover[.NS.svc.DOMAIN], plus localhost and 127.0.0.1 (the
# containers of a validator pod talk over 127.0.0.1).
# Validator i is named validator-<i> (the StatefulSet's pod name); participant j operates
# validator j when j < VALIDATORS. The prover Deployment serves participant-0: pass its private
# data shard as SHARD=path/to/shard.npz, or add it to the Secret later (deploy/README.md).
# Environment: NAMESPACE (zkpot), CHAIN_ID (zkpot-k8s), SHARD, ZKPOT (zkpot), KUBECTL (kubectl),
# CLUSTER_DOMAIN (cluster.local), TLS_DAYS (365).
set -eu
out=${1:?usage: make-secrets.sh OUT_DIR [VALIDATORS] [PARTICIPANTS]}
validators=${2:-4}
participants=${3:-$validators}
ns=${NAMESPACE:-zkpot}
zkpot=${ZKPOT:-zkpot}
kubectl=${KUBECTL:-kubectl}
domain=${CLUSTER_DOMAIN:-cluster.local}
days=${TLS_DAYS:-365}
for d in keys tls; do
  [ -e "$out/$d" ] && { echo "$out/$d exists: refusing to overwrite identities" >&2; exit 1; }
done
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

# ---- mutual TLS: a dev CA and one certificate per validator pod, for the provers, for clients
$zkpot tls dev-ca --out "$out/tls/ca" --name "zkpot $ns dev CA" --days "$days" >/dev/null
# every name a Service or pod is dialled by: NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.DOMAIN
names() { for n in "$@"; do printf ' --san=%s --san=%s.%s --san=%s.%s.svc --san=%s.%s.svc.%s' \
  "$n" "$n" "$ns" "$n" "$ns" "$n" "$ns" "$domain"; done; }
issue() {  # NAME SAN-FLAGS...
  name=$1; shift
  $zkpot tls issue --ca "$out/tls/ca" --name "$name" --out "$out/tls/$name" --days "$days" "$@" >/dev/null
}
validator_tls="--from-file=ca.crt=$out/tls/ca/ca.crt"
i=0
while [ "$i" -lt "$validators" ]; do
  # shellcheck disable=SC2046  # names prints several flags
  issue "validator-$i" $(names "validator-$i.validator" consensus ledger)
  validator_tls="$validator_tls --from-file=validator-$i.crt=$out/tls/validator-$i/tls.crt"
  validator_tls="$validator_tls --from-file=validator-$i.key=$out/tls/validator-$i/tls.key"
  i=$((i + 1))
done
# shellcheck disable=SC2046
issue prover $(names prover)
issue client
tls_secret() {  # SECRET NAME: a kubernetes.io/tls Secret with ca.crt (what cert-manager writes)
  # shellcheck disable=SC2086
  $kubectl create secret generic "$1" $dry --type=kubernetes.io/tls \
    --from-file="tls.crt=$out/tls/$2/tls.crt" --from-file="tls.key=$out/tls/$2/tls.key" \
    --from-file="ca.crt=$out/tls/$2/ca.crt"
}
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-validator-tls $dry $validator_tls > "$out/k8s/validator-tls.yaml"
tls_secret zkpot-prover-tls prover > "$out/k8s/prover-tls.yaml"
tls_secret zkpot-client-tls client > "$out/k8s/client-tls.yaml"

echo "wrote $validators validator and $participants participant identities to $out/keys"
echo "wrote the dev CA and TLS certificates to $out/tls (keep $out/tls/ca/ca.key offline)"
echo "next: kubectl create namespace $ns; kubectl apply -f $out/k8s/"
[ -n "$shard" ] || echo "note: Secret zkpot-participant has no shard.npz yet (set SHARD=...; see deploy/README.md)"

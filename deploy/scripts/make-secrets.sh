#!/bin/sh
# Create the identities of a zkpot network and the Kubernetes objects that carry them.
#
#   deploy/scripts/make-secrets.sh OUT_DIR [VALIDATORS=4] [PARTICIPANTS=VALIDATORS]
#   kubectl apply -f OUT_DIR/k8s/          # after the namespace exists (kubectl create namespace zkpot)
#
# Writes, with `zkpot keys gen` (ed25519 key files, 0600) and `kubectl create --dry-run=client`:
#   OUT_DIR/keys/publisher.json, validator-<i>.json, participant-<j>.json   (keep private)
#   OUT_DIR/members.json           names + public keys, read by the task-publisher Job (genesis)
#   OUT_DIR/k8s/publisher-key.yaml       Secret zkpot-publisher-key    (publisher.json)
#   OUT_DIR/k8s/validator-keys.yaml      Secret zkpot-validator-keys   (validator-<i>.json, one per pod,
#                                        and validator-<i>.coin-share.json: its share of the fallback's
#                                        common coin, `zkpot keys deal-coin`; ASYNC_FALLBACK=0: none)
#   OUT_DIR/k8s/participant-keys.yaml    Secret zkpot-participant-keys (participant-<j>.json, one per pod)
#   OUT_DIR/k8s/participant-shards.yaml  Secret zkpot-participant-shards (participant-<j>.npz), only
#                                        with SHARDS=DIR (below)
#   OUT_DIR/k8s/members.yaml             ConfigMap zkpot-members       (members.json)
# and the mutual-TLS material, with `zkpot tls dev-ca` / `zkpot tls issue` (ECDSA P-256):
#   OUT_DIR/tls/ca/ca.crt, ca.key        the dev CA (keep ca.key offline: it can mint identities)
#   OUT_DIR/tls/<name>/tls.crt, tls.key, ca.crt   validator-<i>, participant-<j>, client
#   OUT_DIR/k8s/validator-tls.yaml       Secret zkpot-validator-tls (Opaque: validator-<i>.crt,
#                                        validator-<i>.key per pod + ca.crt; the pod's init container
#                                        tls copies its own pair by pod name)
#   OUT_DIR/k8s/participant-tls.yaml     Secret zkpot-participant-tls (likewise, participant-<j>.*)
#   OUT_DIR/k8s/client-tls.yaml          Secret zkpot-client-tls  (kubernetes.io/tls + ca.crt)
# Certificate SANs are the names peers and clients dial: validator-<i>.validator[.NS.svc.DOMAIN],
# the consensus and ledger Services, participant-<j>.participant[...], plus localhost and 127.0.0.1
# (the containers of a pod talk over 127.0.0.1).
# Validator i is named validator-<i> and participant j participant-<j> (the StatefulSets' pod
# names); participant j operates validator j when j < VALIDATORS. The participant StatefulSet's
# replicas must be PARTICIPANTS (deploy/README.md, "Scaling").
# Private data: SHARDS=DIR (DIR/shard-<j>.npz, what `zkpot task shards --out DIR` writes) puts each
# participant's shard into the Secret zkpot-participant-shards, which the pods copy onto their
# volumes (dev clusters; Secrets hold at most 1 MiB). Without it, load each pod's shard onto its
# volume (deploy/README.md, "Private data").
# Environment: NAMESPACE (zkpot), CHAIN_ID (zkpot-k8s), SHARDS, ZKPOT (zkpot), KUBECTL (kubectl),
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
if [ -n "${SHARDS:-}" ]; then  # checked before any identity is made
  shard_bytes=0
  j=0
  while [ "$j" -lt "$participants" ]; do
    [ -s "$SHARDS/shard-$j.npz" ] || {
      echo "SHARDS=$SHARDS has no shard-$j.npz (zkpot task shards --out $SHARDS --participants $participants)" >&2; exit 1; }
    shard_bytes=$((shard_bytes + $(wc -c < "$SHARDS/shard-$j.npz")))
    j=$((j + 1))
  done
  # base64 grows the data by 4/3 and a Secret holds at most 1 MiB
  [ "$shard_bytes" -le 700000 ] || {
    echo "the shards in $SHARDS add up to $shard_bytes bytes, too many for a Secret: load them onto the pods' volumes instead (deploy/README.md, \"Private data\")" >&2; exit 1; }
fi
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
participant_files=""
shard_files=""
j=0
while [ "$j" -lt "$participants" ]; do
  pub=$(gen "participant-$j")
  operated=""
  [ "$j" -lt "$validators" ] && operated="validator-$j"
  [ "$j" -gt 0 ] && members="$members, "
  members="$members{\"name\": \"participant-$j\", \"public_key\": \"$pub\", \"validator\": \"$operated\"}"
  participant_files="$participant_files --from-file=$out/keys/participant-$j.json"
  [ -z "${SHARDS:-}" ] || shard_files="$shard_files --from-file=participant-$j.npz=$SHARDS/shard-$j.npz"
  j=$((j + 1))
done
# the asynchronous fallback's common coin (ASYNC_FALLBACK=0: fast path only): public keys into
# members.json (genesis), validator i's share into Secret zkpot-validator-keys beside its key
if [ "${ASYNC_FALLBACK:-1}" != 0 ]; then
  $zkpot keys deal-coin "$out/keys" --validators "$validators" >/dev/null
  i=0
  while [ "$i" -lt "$validators" ]; do
    validator_files="$validator_files --from-file=$out/keys/validator-$i.coin-share.json"
    i=$((i + 1))
  done
  echo "$members], \"coin\": $(cat "$out/keys/coin-public.json")}" > "$out/members.json"
else
  echo "$members]}" > "$out/members.json"
fi

dry="--dry-run=client -o yaml --namespace=$ns"
# shellcheck disable=SC2086  # $dry and $validator_files hold several flags
$kubectl create secret generic zkpot-publisher-key $dry \
  --from-file="publisher.json=$out/keys/publisher.json" > "$out/k8s/publisher-key.yaml"
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-validator-keys $dry $validator_files > "$out/k8s/validator-keys.yaml"
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-participant-keys $dry $participant_files > "$out/k8s/participant-keys.yaml"
if [ -n "$shard_files" ]; then
  # shellcheck disable=SC2086
  $kubectl create secret generic zkpot-participant-shards $dry $shard_files > "$out/k8s/participant-shards.yaml"
fi
# shellcheck disable=SC2086
$kubectl create configmap zkpot-members $dry --from-file="members.json=$out/members.json" > "$out/k8s/members.yaml"

# ---- mutual TLS: a dev CA, one certificate per validator pod and per participant pod, for clients
$zkpot tls dev-ca --out "$out/tls/ca" --name "zkpot $ns dev CA" --days "$days" >/dev/null
# every name a Service or pod is dialled by: NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.DOMAIN
names() { for n in "$@"; do printf ' --san=%s --san=%s.%s --san=%s.%s.svc --san=%s.%s.svc.%s' \
  "$n" "$n" "$ns" "$n" "$ns" "$n" "$ns" "$domain"; done; }
issue() {  # NAME SAN-FLAGS...
  name=$1; shift
  $zkpot tls issue --ca "$out/tls/ca" --name "$name" --out "$out/tls/$name" --days "$days" "$@" >/dev/null
}
per_pod() {  # PREFIX COUNT SERVICES...: --from-file flags of a per-pod TLS Secret (PREFIX-<i>.crt/.key + ca.crt)
  prefix=$1; count=$2; shift 2
  flags="--from-file=ca.crt=$out/tls/ca/ca.crt"
  k=0
  while [ "$k" -lt "$count" ]; do
    # shellcheck disable=SC2046  # names prints several flags
    issue "$prefix-$k" $(names "$prefix-$k.$prefix" "$@")
    flags="$flags --from-file=$prefix-$k.crt=$out/tls/$prefix-$k/tls.crt"
    flags="$flags --from-file=$prefix-$k.key=$out/tls/$prefix-$k/tls.key"
    k=$((k + 1))
  done
}
per_pod validator "$validators" consensus ledger
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-validator-tls $dry $flags > "$out/k8s/validator-tls.yaml"
per_pod participant "$participants"
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-participant-tls $dry $flags > "$out/k8s/participant-tls.yaml"
issue client
# a kubernetes.io/tls Secret with ca.crt (what cert-manager writes)
# shellcheck disable=SC2086
$kubectl create secret generic zkpot-client-tls $dry --type=kubernetes.io/tls \
  --from-file="tls.crt=$out/tls/client/tls.crt" --from-file="tls.key=$out/tls/client/tls.key" \
  --from-file="ca.crt=$out/tls/client/ca.crt" > "$out/k8s/client-tls.yaml"

echo "wrote $validators validator and $participants participant identities to $out/keys"
echo "wrote the dev CA and TLS certificates to $out/tls (keep $out/tls/ca/ca.key offline)"
echo "next: kubectl create namespace $ns; kubectl apply -f $out/k8s/"
[ -n "$shard_files" ] || echo "note: no private data in Secrets (SHARDS=DIR): load each participant pod's shard.npz onto its volume (deploy/README.md)"

#!/bin/sh
# Init container "tls" of a validator or participant pod: copy this pod's certificate and key out
# of the StatefulSet's TLS Secret mounted at $TLS_BUNDLE (zkpot-validator-tls: validator-<i>.crt,
# validator-<i>.key, ca.crt for every pod; zkpot-participant-tls likewise) into $ZKPOT_TLS_DIR as
# tls.crt, tls.key, ca.crt, the layout `--tls-dir` reads. A StatefulSet's pods share one
# template, so they cannot each mount a Secret of their own.
set -eu
bundle=${TLS_BUNDLE:-/etc/zkpot/tls-bundle}
dest=${ZKPOT_TLS_DIR:?ZKPOT_TLS_DIR not set}
for f in "$POD_NAME.crt" "$POD_NAME.key" ca.crt; do
  [ -s "$bundle/$f" ] || { echo "the TLS Secret mounted at $bundle lacks $f (deploy/scripts/make-secrets.sh)" >&2; exit 1; }
done
umask 077
cp "$bundle/$POD_NAME.crt" "$dest/tls.crt.tmp"
cp "$bundle/$POD_NAME.key" "$dest/tls.key.tmp"
cp "$bundle/ca.crt" "$dest/ca.crt.tmp"
for f in tls.crt tls.key ca.crt; do mv "$dest/$f.tmp" "$dest/$f"; done
echo "TLS identity for $POD_NAME in $dest"

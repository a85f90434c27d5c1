#!/usr/bin/env bash
# `buf lint` of proto/ (rules in buf.yaml), and `buf breaking` against the newest release tag (v*)
# when there is one. buf comes from npm (@bufbuild/buf, pinned), installed once under .cache/.
set -euo pipefail
version=${1:?usage: tools/buf-check.sh BUF_VERSION}
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
  echo "buf lint skipped: npm (Node.js) is not installed" >&2
  exit 0
fi
dir=.cache/buf-$version
if [ ! -x "$dir/node_modules/.bin/buf" ]; then
  # an unreachable npm registry skips the check (loudly) rather than failing the build
  if ! npm install --silent --no-audit --no-fund --prefix "$dir" "@bufbuild/buf@$version" >/dev/null; then
    echo "buf lint SKIPPED: could not install @bufbuild/buf@$version from npm" >&2
    exit 0
  fi
fi
buf=$dir/node_modules/.bin/buf
"$buf" lint
tag=$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null || true)
if [ -n "$tag" ]; then
  "$buf" breaking --against ".git#tag=$tag"
else
  echo "buf breaking skipped: no release tag (v*) yet" >&2
fi

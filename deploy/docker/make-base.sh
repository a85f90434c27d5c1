#!/usr/bin/env bash
# zkpot-base: the image every zkpot image is built FROM, made from Debian's own packages — no image
# registry involved (also how a site behind an air gap builds: point DEBIAN_MIRROR at its mirror).
#
#   deploy/docker/make-base.sh            -> prints the tag it made or found, e.g. zkpot-base:bookworm-20260711-3f9c2a1b
#
# Debian bookworm `minbase` + python3 (3.11) + python3-venv (ensurepip, for the build stage) +
# the bookworm-security and bookworm-updates upgrades, nothing else. The tag is keyed by the
# snapshot: the Date of each suite's Release file and this script's package list, so an unchanged
# mirror reuses the image (no debootstrap) and a security update makes a new one.
# Needs root (debootstrap, chroot), debootstrap, curl and a running docker daemon.
set -euo pipefail
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
REPO=${BASE_REPO:-zkpot-base}
DOCKER=${DOCKER:-docker}
PACKAGES=python3,python3-venv

release_date() {  # the Date: line of a suite's Release file, as YYYYMMDDhhmmss
  local d
  d=$(curl -fsS --max-time 30 "$1/dists/$2/Release" | sed -n 's/^Date: //p' | head -1)
  [ -n "$d" ] || { echo "make-base.sh: no Release file at $1/dists/$2" >&2; exit 1; }
  date -u -d "$d" +%Y%m%d%H%M%S
}
main=$(release_date "$MIRROR" "$SUITE")
updates=$(release_date "$MIRROR" "$SUITE-updates")
security=$(release_date "$SECURITY_MIRROR" "$SUITE-security")
key=$(printf '%s\n' "$SUITE" "$main" "$updates" "$security" "$PACKAGES" "$(sha256sum "$0" | cut -c1-64)" \
      | sha256sum | cut -c1-8)
tag="$REPO:$SUITE-${main:0:8}-$key"

if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
  "$DOCKER" tag "$tag" "$REPO:$SUITE"
  echo "$tag"
  exit 0
fi

root=$(mktemp -d /var/tmp/zkpot-base.XXXXXX)
cleanup() { for m in proc sys dev; do umount -l "$root/$m" 2>/dev/null || true; done; rm -rf "$root"; }
trap cleanup EXIT
echo "make-base.sh: debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >&2
# security and point-release updates: what a scanner would otherwise report as fixed upstream
cat > "$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get -y -qq upgrade && apt-get clean' >&2
# what an image needs no copy of: package lists, caches, docs, man pages, the build host's resolver
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/* \
       "$root"/tmp/* "$root"/etc/resolv.conf "$root"/etc/machine-id
: > "$root/etc/resolv.conf"
# the same tree makes the same layer: sorted names, fixed times, numeric owners
epoch=$(date -u -d "${main:0:8}" +%s)
tar --sort=name --mtime="@$epoch" --numeric-owner --clamp-mtime -C "$root" -c . \
  | "$DOCKER" import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      --message "zkpot-base: debootstrap --variant=minbase $SUITE + $PACKAGES ($main/$updates/$security)" \
      - "$tag" >&2
"$DOCKER" tag "$tag" "$REPO:$SUITE"
echo "$tag"

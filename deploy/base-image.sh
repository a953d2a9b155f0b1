#!/usr/bin/env bash
# Make the Docker base image locally when no registry can be reached.
#
# Usage: deploy/base-image.sh [TAG]      (default TAG: debian:bookworm-slim)
#
# Elsewhere `docker build` pulls debian:bookworm-slim; on a machine that reaches only the
# Debian package mirror, this script debootstraps a minimal bookworm from the mirror the
# host's apt already uses and imports it under the same tag. Does nothing if TAG exists.
# Exit codes: 0 ready, 2 cannot be made here (reason on one line).
set -euo pipefail
TAG=${1:-debian:bookworm-slim}
SUITE=${SUITE:-bookworm}
DOCKER=${DOCKER:-docker}

die() { echo "base-image: $*" >&2; exit 2; }

if $DOCKER image inspect "$TAG" >/dev/null 2>&1; then
  echo "base-image: $TAG already present"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root to make $TAG"
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"

# The mirror is the first Debian archive the host's apt configuration names for $SUITE:
# deb822 files (URIs:/Suites:) first, then one-line sources.list entries.
mirror_from_apt() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      /^[[:space:]]*$/ { if (uri != "" && ok) print uri; uri = ""; ok = 0; next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      END { if (uri != "" && ok) print uri }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '$1 == "deb" {
      for (i = 2; i < NF; i++) if ($(i + 1) == suite && $i ~ /^[a-z]+:\/\//) print $i }' "$f"
  done
}
MIRROR=${DEBIAN_MIRROR:-$(mirror_from_apt | grep -v -- '-security' | head -n 1 || true)}
[ -n "$MIRROR" ] || die "no Debian mirror for $SUITE in the host's apt configuration; set DEBIAN_MIRROR"

ROOT=$(mktemp -d /tmp/kadshare-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
echo "base-image: debootstrap $SUITE (minbase) into $ROOT"
nice -n 10 debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 ||
  die "debootstrap failed (log: $ROOT.log)"
rm -f "$ROOT.log"
# Like the published slim images: no apt caches in the layer.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin
nice -n 10 tar -C "$ROOT" -c . | $DOCKER import \
  --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$TAG" >/dev/null
echo "base-image: imported $TAG ($($DOCKER image inspect -f '{{.Size}}' "$TAG") bytes)"

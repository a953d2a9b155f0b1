#!/usr/bin/env bash
# Build the kadshare image: base image (made locally if missing), wheelhouse, docker build.
#
# Usage: deploy/image.sh            (env: IMAGE, BASE, DOCKER, PYTHON; see the Makefile)
# Exit codes: 0 built, 1 the build failed, 2 cannot build here (reason on one line).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-kadshare:latest}
BASE=${BASE:-debian:bookworm-slim}
DOCKER=${DOCKER:-docker}
PYTHON=${PYTHON:-.venv/bin/python}
WHEELS=build/docker/wheels

command -v "$DOCKER" >/dev/null || { echo "image: no '$DOCKER' client; install docker.io" >&2; exit 2; }
$DOCKER info >/dev/null 2>&1 || { echo "image: no Docker daemon answers; start dockerd" >&2; exit 2; }
DOCKER=$DOCKER bash deploy/base-image.sh "$BASE"

# The project and every dependency as wheels built here, where pip has its index and
# certificates; the image build then installs with --no-index.
rm -rf "$WHEELS"
nice -n 10 "$PYTHON" -m pip wheel -q --disable-pip-version-check . -w "$WHEELS"

# BuildKit needs the buildx plugin; without it the classic builder does the same job.
if $DOCKER buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=1; else export DOCKER_BUILDKIT=0; fi
nice -n 10 $DOCKER build -q --build-arg "BASE=$BASE" -t "$IMAGE" . >/dev/null
echo "image: built $IMAGE ($($DOCKER image inspect -f '{{.Size}}' "$IMAGE") bytes)"

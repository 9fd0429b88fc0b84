# CIFARbench: `make demo` runs the whole pipeline offline on the stand-in data,
# `make test` runs the test suite, `make lint` checks the style (ruff). All create the environment
# first (`make setup`: the lock, hash-checked, by tools/install.sh).
# `make lock` regenerates requirements.txt from pyproject.toml; `make check-lock` (CI) checks
# that it is up to date and resolves on Linux, macOS and Windows (tools/lock.sh).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NUMBA := $(VENV)/.umap-compiled
# uv resolves the lock and installs it (tools/install.sh); `make setup INSTALLER=pip` installs
# with pip instead, as happens by itself where uv cannot be installed. uv itself is locked, with
# hashes, in tools/uv-requirements.txt (`make lock LOCK_FLAGS=--upgrade-package=uv` moves it).
UV_VERSION := $(shell sed -n 's/^uv==\([^ ;]*\).*/\1/p' tools/uv-requirements.txt)
TOOLS := .tools/uv-$(UV_VERSION)
UV := $(TOOLS)/bin/uv
INSTALLER ?= uv

.PHONY: setup demo test test-all lint clean-demo lock check-lock

setup: $(STAMP) $(NUMBA)

# The lock goes in with hash checking on (tools/install.sh): by uv where it can be had, else by
# pip; either takes torch and the CUDA wheels from this machine's disk where pip is set to.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	@case "$(INSTALLER)" in uv|pip) ;; *) echo "error: INSTALLER=$(INSTALLER): use INSTALLER=uv (the default) or INSTALLER=pip" >&2; exit 2;; esac
	@if [ "$(INSTALLER)" = uv ] && [ ! -x $(UV) ]; then \
		$(MAKE) --no-print-directory $(UV) || echo "warning: could not install uv $(UV_VERSION); installing with pip (slower)" >&2; \
	fi
	@uv=; if [ "$(INSTALLER)" = uv ] && [ -x $(UV) ]; then uv=$(UV); fi; \
		echo "UV=$$uv tools/install.sh requirements.txt $(VENV)"; \
		UV=$$uv PYTHON=$(PYTHON) tools/install.sh requirements.txt $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# umap-learn's numba code compiles once into the environment's cache (25-30 s of one core), not in
# the first embed stage
$(NUMBA): $(STAMP)
	$(BIN)/python -m cifarbench.pipeline.embed
	touch $@

# A first demo compiles umap's code in the background, at the lowest priority, while the training
# stages run (they leave a core idle between steps and while each stage starts): the embed stages come
# minutes later and find it compiled (were it not, they would compile it themselves, correctly).
demo: $(STAMP)
	@[ -f $(NUMBA) ] || { nice -n 19 $(MAKE) --no-print-directory $(NUMBA) >$(VENV)/umap-compile.log 2>&1 & }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m cifarbench.commands.demo

test: $(STAMP) $(NUMBA)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder --durations=15

test-all: $(STAMP) $(NUMBA)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m ''

# style is ruff's (pyproject.toml): `ruff check --fix . && ruff format .` mends what this finds
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r tools/uv-requirements.txt

lock: $(UV)
	UV=$(UV) tools/lock.sh write

check-lock: $(UV)
	UV=$(UV) tools/lock.sh check

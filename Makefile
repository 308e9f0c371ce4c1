# spinebench: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=
MODELS ?=

.PHONY: help setup test test-all demo reproduce report phantom-figure bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

setup:  ## create .venv and install spinebench with its test extras (torch 2.14.1 from the local disk)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'

test:  ## the CI test suite (CPU only, under 10 minutes on 2 cores)
	$(BIN)/python -m pytest -q

test-all:  ## also the longer CPU runs marked slow
	$(BIN)/python -m pytest -q -m "slow or not slow"

phantom-figure:  ## regenerate docs/phantom_example.png
	$(BIN)/python scripts/make_phantom_figure.py

bench:  ## phantom generation speed (CPU) and, on a CUDA machine, training/inference throughput
	$(BIN)/python benchmarks/bench_phantom.py

clean:  ## remove run outputs and caches (not results/)
	rm -rf outputs .cache .pytest_cache

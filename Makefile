# The README's commands. Everything runs inside .venv, created on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: setup test test-all demo demo-train bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first: the pinned CPU wheel; an unpinned torch would pull a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e '.[mlcast]'  # apart: see the dev extra in pyproject.toml
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# The shipped model against persistence, extrapolation and STEPS on held-out radar
# (../shared/data/radar; synthetic storms without it): no training, under 5 minutes on 2 cores.
# Options through DEMO_ARGS, e.g. make demo DEMO_ARGS="--model runs/radar --windows 4".
demo: $(STAMP)
	$(BIN)/diffcast demo $(DEMO_ARGS)

# The toy SimVP + DiffCast trained from scratch on synthetic storms (about 15 minutes; --quick about 3).
demo-train: $(STAMP)
	$(BIN)/diffcast demo --train $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache

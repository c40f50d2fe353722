# Quick start: `make train` and `make test`. Both create .venv when no virtual environment is
# active, install the package with its dev extra, and run.
SHELL := /bin/bash
ifdef VIRTUAL_ENV
PY := $(VIRTUAL_ENV)/bin/python
else
PY := .venv/bin/python
endif
STAMP := $(dir $(PY)).jax_reset_installed

.PHONY: install train test test-slow lint bench-env bench-learner verify-demos

$(PY):
	python3 -m venv .venv

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The default job: Pong from its demo. On a machine without a GPU the CPU overlay
# (configs/cpu.toml) picks a CPU-sized network and batch (the trainer says so). Run it again to
# resume.
RUN_DIR ?= runs/pong
train: $(STAMP)
	$(PY) -m jax_reset.train --config configs/pong.toml --run-dir $(RUN_DIR) \
		$(if $(wildcard $(RUN_DIR)/config.json),--resume)

test: $(STAMP)
	$(PY) -m ruff check jax_reset tests
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(PY) -m ruff check jax_reset tests

verify-demos: $(STAMP)
	$(PY) -m jax_reset.demo verify demos/

bench-env: $(STAMP)
	$(PY) -m jax_reset.bench env

bench-learner: $(STAMP)
	$(PY) -m jax_reset.bench learner

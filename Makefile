# Quick start: `make train` and `make test`. Both create .venv when no virtual environment is
# active, install the package with its dev extra, and run.
SHELL := /bin/bash
ifdef VIRTUAL_ENV
PY := $(VIRTUAL_ENV)/bin/python
else
PY := .venv/bin/python
endif
STAMP := $(dir $(PY)).jax_reset_installed

.PHONY: install train train-nodemo test test-slow lint bench-env bench-learner verify-demos gpu-wheels

$(PY):
	python3 -m venv .venv

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The default job: Pong from its demo. On a machine without a GPU the CPU overlay
# (configs/cpu.toml) picks a CPU-sized network and batch (the trainer says so). Run it again to
# resume with the run's own config (settings changed by an override at a resume persist).
RUN_DIR ?= runs/pong
train: $(STAMP)
	$(PY) -m jax_reset.train --run-dir $(RUN_DIR) \
		$(if $(wildcard $(RUN_DIR)/config.json),--resume,--config configs/pong.toml)

# The same job without the demo (configs/pong_nodemo.toml: plain PPO from the game's reset,
# everything else equal): the baseline the demo's run is compared with.
NODEMO_RUN_DIR ?= runs/pong_nodemo
train-nodemo: $(STAMP)
	$(PY) -m jax_reset.train --run-dir $(NODEMO_RUN_DIR) \
		$(if $(wildcard $(NODEMO_RUN_DIR)/config.json),--resume,--config configs/pong_nodemo.toml)

# Two pytest processes (pytest-xdist): the slowest tests start trainers and wait on them, so one
# process leaves a 2-core machine a third idle. TEST_JOBS=1 runs the suite in one process.
TEST_JOBS ?= 2
test: $(STAMP)
	$(PY) -m ruff check jax_reset tests
	$(PY) -m pytest -q -n $(TEST_JOBS)

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

# Wheels for scripts/gpu-check.sh on a GPU machine without internet (Python 3.12, x86-64):
# what such a machine lacks beside its own JAX. EnvPool's wheel (53 MB) only with
# GPU_WHEELS_ENVPOOL=1.
GPU_WHEELS := ale-py==0.12.1 tensorboardX==2.6.5
GPU_WHEELS_ENVPOOL_SET := envpool==1.2.5 dm-env gymnasium optree types-protobuf farama-notifications cloudpickle
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$(GPU_WHEELS) $(if $(GPU_WHEELS_ENVPOOL),$(GPU_WHEELS_ENVPOOL_SET))

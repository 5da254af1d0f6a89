# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install install-gpu demo test lint typecheck unit check-workers clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

GPU_STAMP := $(VENV)/.gpu-stamp
# The worker tests run the real diffusers pipelines on the CPU; torch 2.13.0 is the CPU build
# this machine's pip finds locally (an unpinned torch would pull a multi-GB CUDA build).
TORCH ?= torch==2.13.0

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(GPU_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check '$(TORCH)'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,gpu]'
	touch $(GPU_STAMP)

install: $(STAMP)  ## create .venv and install videokit with its dev tools

install-gpu: $(GPU_STAMP)  ## also install torch (CPU), diffusers and transformers for worker tests

demo: install  ## render examples/story.yaml with the CPU preview backend -> out/story/final.mp4
	$(BIN)/videokit render examples/story.yaml

lint: install-gpu  ## ruff (lint + format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-gpu  ## mypy --strict
	$(BIN)/mypy

unit: install-gpu  ## the pytest suite (exit 5, "no tests collected", counts as a failure)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken"; exit 1; fi; \
	exit $$rc

check-workers: install-gpu  ## run every worker script, entrypoint and Dockerfile check (no Docker)
	$(BIN)/python -m pytest tests/test_workers_scripts.py tests/test_deploy.py tests/test_tiny_workers.py -q

test: lint typecheck unit  ## everything CI runs

clean:  ## remove the venv, caches and renders
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
GPU_STAMP := $(VENV)/.gpu-stamp

# Every install takes its versions from the lock (used as pip constraints), so a fresh clone
# installs exactly what CI tested, whatever was released since. `make lock` refreshes it.
LOCK := requirements/lock.txt
PIP  := $(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint $(LOCK)

# Where `make lock` finds the CPU build of torch: this machine's wheel folder if pip has one
# (PIP_FIND_LINKS), else PyTorch's CPU index. The lock records torch==X+cpu; `make install-gpu`
# needs the same source (PIP_FIND_LINKS, or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).
TORCH_SOURCE ?= $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
LOCK_ARGS := pyproject.toml --extra dev --extra gpu --extra fp8 --constraint requirements/constraints.in \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make lock" --output-file $(LOCK)

.PHONY: install install-gpu demo test lint typecheck unit check-workers lock lock-upgrade \
	check-image-lock clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $(STAMP)

# The worker tests run the real diffusers pipelines on the CPU: the lock's torch is the CPU build.
$(GPU_STAMP): $(STAMP)
	$(PIP) -e '.[dev,gpu]'
	touch $(GPU_STAMP)

install: $(STAMP)  ## create .venv and install videokit with its dev tools (from the lock)

install-gpu: $(GPU_STAMP)  ## also install torch (CPU), diffusers and transformers for worker tests

demo: install  ## render examples/story.yaml with the CPU preview backend -> out/story/final.mp4
	$(BIN)/videokit render examples/story.yaml

lint: install-gpu  ## ruff (lint + format check) and the import layers (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install-gpu  ## mypy --strict
	$(BIN)/mypy

unit: install-gpu  ## the pytest suite (exit 5, "no tests collected", counts as a failure)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken"; exit 1; fi; \
	exit $$rc

check-workers: install-gpu  ## run every worker script, entrypoint and Dockerfile check (no Docker)
	$(BIN)/python -m pytest tests/test_workers_scripts.py tests/test_deploy.py tests/test_tiny_workers.py -q

test: lint typecheck unit  ## everything CI runs

# Only uv is needed to lock (not an install that the old lock might not satisfy any more).
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) uv

lock: $(BIN)/uv  ## re-resolve requirements/lock.txt after a dependency change in pyproject.toml
	$(BIN)/uv pip compile $(LOCK_ARGS) $(TORCH_SOURCE)
	$(MAKE) --no-print-directory check-image-lock

lock-upgrade: $(BIN)/uv  ## move every locked package to its newest allowed release (then make test)
	$(BIN)/uv pip compile $(LOCK_ARGS) $(TORCH_SOURCE) --upgrade
	$(MAKE) --no-print-directory check-image-lock

# The worker images run Python 3.12 and take torch from the PyTorch index: check that the gpu
# extra resolves there within the lock, exactly as the Dockerfiles constrain it.
check-image-lock: $(BIN)/uv
	grep -v '^torch==' $(LOCK) > $(VENV)/image-constraints.txt
	$(BIN)/uv pip compile pyproject.toml --extra gpu --extra fp8 --quiet --output-file /dev/null \
		--constraint $(VENV)/image-constraints.txt --constraint requirements/constraints.in \
		--python-version 3.12 --python-platform x86_64-manylinux_2_28

clean:  ## remove the venv, caches and renders
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck unit clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install videokit with its dev tools

demo: install  ## render examples/story.yaml with the CPU preview backend -> out/story/final.mp4
	$(BIN)/videokit render examples/story.yaml

lint: install  ## ruff (lint + format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install  ## mypy --strict
	$(BIN)/mypy

unit: install  ## the pytest suite (exit 5, "no tests collected", counts as a failure)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken"; exit 1; fi; \
	exit $$rc

test: lint typecheck unit  ## everything CI runs

clean:  ## remove the venv, caches and renders
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache .hypothesis

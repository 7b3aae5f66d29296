# mtl-runner developer commands. `make help` lists them.
# Each target creates or reuses the virtual environment in $(VENV) and installs what it needs.
# torch is installed first with a pin: an unpinned `torch` would pull a multi-GB CUDA build on a
# CPU machine. A GPU user overrides the pin, e.g. `make install TORCH=torch`.

VENV   ?= .venv
PYTHON ?= python3
TORCH  ?= torch==2.13.0
ARGS   ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(STAMP) ## create .venv and install mtl-runner with its dev tools (TORCH=... to override)

run: $(STAMP) ## run mtl-run on the embedded default (extra overrides: ARGS="weighting=dwa")
	$(BIN)/mtl-run $(ARGS)

test: $(STAMP) ## run the test suite (CPU; CUDA tests skip without a GPU)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## speed benchmarks (print ratios; not tests)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean: ## remove the virtual environment, caches and build files (outputs/ is kept)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

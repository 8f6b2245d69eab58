# ragops developer entry points. The README names two: `make demo` and `make test`.
# Everything they need is installed by these targets on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/uv/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)

.PHONY: install tools lint typecheck crds test test-fast demo bench clean

$(UV):
	$(PYTHON) -m venv .tools/uv
	.tools/uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The venv is rebuilt when the lock or the project metadata changes.
$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

install: $(VENV)/.installed ## a .venv with the project and its dev dependencies

tools: ## pinned etcd, Kubernetes, kwok, helm, kubeconform (from Go modules) and promtool (Debian)
	bash tools/build.sh
	bash tools/system-packages.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

crds: install ## regenerate crds/ from the API models
	$(BIN)/ragops crds

test: install tools lint typecheck ## everything CI runs
	$(BIN)/ragops crds --check
	$(BIN)/pytest

test-fast: install lint typecheck ## the suite without the control plane
	$(BIN)/pytest -m "not cluster"

demo: install tools ## the API on a local control plane: CRDs, examples, and what the apiserver refuses
	$(BIN)/python -m tests.support.api_demo

bench: install ## benchmarks; results in bench/results/*.json
	$(BIN)/python bench/kb_incremental.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

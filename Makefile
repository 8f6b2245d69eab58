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

.PHONY: install tools images lint typecheck crds test test-fast demo demo-cluster bench krew-archive clean

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
	bash tools/external-crds.sh
	bash tools/system-packages.sh

# Installs podman, buildah, skopeo and mmdebstrap if missing, bootstraps a Debian base, builds only
# what changed; OCI archives in dist/images/ (push: skopeo copy oci-archive:FILE docker://REF).
images: ## the operator and runtime images (podman), exported as OCI archives, with their sizes
	bash tools/images.sh

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

demo: install ## the whole story on this machine, no cluster, no API key: build, gate, serve, refuse, roll back
	$(BIN)/ragops demo

demo-cluster: install tools ## the same story through the operator on the local control plane (Jobs, Prometheus, rollback)
	$(BIN)/python -m tests.support.cluster_demo

# BENCH_FLAGS=--quick for small sizes while developing (results then go to a temp directory).
bench: install $(if $(wildcard bench/operator_scale.py),tools) ## benchmarks vs peers (the optional `bench` extra); results in bench/results/*.json, table in README
	$(UV) sync --frozen --quiet --extra bench
	bash tools/bench-corpus.sh
	$(BIN)/python -m bench.real_corpus $(BENCH_FLAGS)
	$(BIN)/python -m bench.kb_build $(BENCH_FLAGS)
	$(BIN)/python -m bench.kb_incremental $(BENCH_FLAGS)
	$(BIN)/python -m bench.sharded_build $(BENCH_FLAGS)
	$(BIN)/python -m bench.retrieval $(BENCH_FLAGS)
	$(BIN)/python -m bench.version_switch $(BENCH_FLAGS)
	$(BIN)/python -m bench.canary_split $(BENCH_FLAGS)
	$(BIN)/python -m bench.vector_memory $(BENCH_FLAGS)
	$(BIN)/python -m bench.hostile_clients $(BENCH_FLAGS)
	$(if $(wildcard bench/operator_scale.py),$(BIN)/python -m bench.operator_scale $(BENCH_FLAGS))
	$(if $(BENCH_FLAGS),,$(BIN)/python -m bench.report)

krew-archive: ## the krew archive of `kubectl ragops` (plugins/krew/ragops.yaml names its sha256)
	$(PYTHON) plugins/krew/archive.py dist/kubectl-ragops.zip

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

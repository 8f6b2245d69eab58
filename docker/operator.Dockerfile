# syntax=docker/dockerfile:1
# The operator image: ghcr.io/ragops/ragops-operator:0.1.0, running `ragops operator run`.
#
#   make images          # podman/buildah, on a Debian base bootstrapped here (tools/images.sh)
#   docker build -f docker/operator.Dockerfile -t ghcr.io/ragops/ragops-operator:0.1.0 .
#
# The builder stage is identical to runtime.Dockerfile's (a test keeps them equal), so one
# build caches it for both images, and both images share every layer but their configuration.
# Base images are pinned by tag; pin the digest too when publishing
# (`--build-arg BASE=python:3.11.14-slim-bookworm@sha256:...`): it cannot be resolved offline here.
#
# BUILD_BASE builds the venv, BASE runs it: any two images with the same python3.11 at the same
# path (the venv's interpreter is a symlink into the base). `make images` passes a Debian minbase
# and a shell-less Debian Python base made by tools/containers/base.sh.
ARG BUILD_BASE=python:3.11.14-slim-bookworm
ARG BASE=python:3.11.14-slim-bookworm

FROM ${BUILD_BASE} AS builder
# uv pinned as in the Makefile, in a venv of its own (Debian's python3 has no pip); it installs
# exactly the versions in uv.lock (--frozen), without the dev group or the optional extras (no
# embedded PostgreSQL: pods connect by DSN), and the project itself as a wheel (--no-editable)
# so /src is not needed later. Certificates come from the system store: a build behind a
# TLS-inspecting proxy mounts its CA bundle there for the RUN steps, never into a layer.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    UV_SYSTEM_CERTS=1
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check uv==0.13.9
ENV PATH=/opt/uv/bin:$PATH \
    UV_PROJECT_ENVIRONMENT=/opt/ragops \
    UV_PYTHON=python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /src
# Dependencies first: a source change does not reinstall them. Left out: hf-xet (11 MB), which
# huggingface_hub uses only to download from the Hub (ragops reads the static model from the
# wordllama wheel, never downloads); then what no pod ever runs: C/C++ sources and type stubs
# shipped in wheels, numpy's own test suite (about 30 MB together, measured 2026-12-05).
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-editable --no-install-project --no-install-package hf-xet \
 && site=/opt/ragops/lib/python3.11/site-packages \
 && find "$site" -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pyi' \) -delete \
 && find "$site/numpy" -depth -type d -name tests -exec rm -rf {} +
COPY README.md ./
COPY operator/ragops_operator operator/ragops_operator
COPY runtime/ragops_runtime runtime/ragops_runtime
RUN uv sync --frozen --no-dev --no-editable --no-install-package hf-xet

FROM ${BASE}
# Only the virtual environment crosses over: no uv, no pip, no sources, no compilers, no caches.
COPY --from=builder /opt/ragops /opt/ragops
ENV PATH=/opt/ragops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ragops-operator" \
      org.opencontainers.image.description="ragops operator: builds, gates, serves and rolls back RAG knowledge bases on Kubernetes" \
      org.opencontainers.image.source="https://github.com/ragops/ragops" \
      org.opencontainers.image.url="https://github.com/ragops/ragops" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8081
# Kopf's liveness endpoint (`--liveness`, default :8081/healthz). No curl in the image: Python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=4)"]
ENTRYPOINT ["ragops"]
CMD ["operator", "run"]

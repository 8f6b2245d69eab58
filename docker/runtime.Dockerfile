# syntax=docker/dockerfile:1
# The runtime image: ghcr.io/ragops/ragops:0.1.0, running `ragops serve`; the operator also runs
# its build and eval Jobs (`ragops kb build`, `ragops kb eval`) from it.
#
#   docker build -f docker/runtime.Dockerfile -t ghcr.io/ragops/ragops:0.1.0 .
#
# The builder stage is identical to operator.Dockerfile's (a test keeps them equal), so one
# build caches it for both images. Base images are pinned by tag; pin the digest too when
# publishing (`FROM python:3.11.14-slim-bookworm@sha256:...`): it cannot be resolved offline here.

FROM python:3.11.14-slim-bookworm AS builder
# uv pinned as in the Makefile; it installs exactly the versions in uv.lock (--frozen), without
# the dev group, and the project itself as a wheel (--no-editable) so /src is not needed later.
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/ragops \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /src
# Dependencies first: a source change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-editable --no-install-project
COPY README.md ./
COPY operator/ragops_operator operator/ragops_operator
COPY runtime/ragops_runtime runtime/ragops_runtime
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11.14-slim-bookworm
# Only the virtual environment crosses over: no uv, no pip cache, no sources, no compilers.
COPY --from=builder /opt/ragops /opt/ragops
ENV PATH=/opt/ragops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
# The runtime's /healthz on RAGOPS_PORT (default 8080). No curl in a slim image: Python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RAGOPS_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["ragops"]
CMD ["serve"]

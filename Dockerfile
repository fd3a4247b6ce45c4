# syntax=docker/dockerfile:1
# Lifeboat operator image: `lifeboat run` as a non-root user on a slim Python base.

FROM python:3.11-slim-bookworm AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/lifeboat \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
# Dependencies first, so that code changes do not invalidate this layer. sandbox/ (the
# local test world, a member of the uv workspace) only lends its pyproject.toml, so that
# uv sees the workspace uv.lock was made for; it is in the dev group, which --no-dev
# leaves out: neither it, nor moto or uv, nor hack/ reach the image.
COPY pyproject.toml uv.lock README.md ./
COPY sandbox/pyproject.toml sandbox/
RUN uv sync --frozen --no-dev --no-install-project
COPY controller ./controller
COPY manifests ./manifests
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="lifeboat" \
      org.opencontainers.image.description="Multi-cloud resilience controller for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 lifeboat \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin lifeboat
COPY --from=build /opt/lifeboat /opt/lifeboat
# glibc malloc: two arenas for the operator's thread pools instead of 8 per core, and
# fixed (not self-raising) trim and mmap thresholds, so that freed memory goes back to the
# system: 162 against 174 MiB RSS at 100 apps (bench/RESULTS.md, "Operator memory").
ENV PATH=/opt/lifeboat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    MALLOC_MMAP_THRESHOLD_=131072
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["lifeboat"]
CMD ["run"]

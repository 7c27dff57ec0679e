# syntax=docker/dockerfile:1.7
# One image for all four services and the migration job:
#   docker run IMAGE intake|dispatch|tracking|reporting|notifications     (or set SERVICE=<name> and give no argument)
#   docker run IMAGE migrate --database-url postgresql://...  (python -m shared.migrate)
#
# The base is pinned by tag; for reproducible production builds pin the digest as well, e.g.
#   FROM python:3.11.14-slim-bookworm@sha256:<digest from `docker buildx imagetools inspect`>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: resolve nothing, install exactly uv.lock (no dev group) into /app/.venv ----------------
FROM ${PYTHON_IMAGE} AS builder
# Same uv as the Makefile (UV_VERSION), from PyPI.
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN pip install "uv==${UV_VERSION}"
WORKDIR /app
# Dependencies first (their own layer, rebuilt only when the lock changes); the project itself is
# not installed into the venv: the source is copied beside it and run from /app.
COPY pyproject.toml uv.lock ./
# Runtime dependencies only: no dev group and no extras (local: the local broker wheel; bench).
RUN uv sync --locked --no-dev --no-install-project

# --- runtime: the venv, the source, a non-root user ------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# tzdata: deadlines use the calendar's zone (shared/reference/data/calendar.yaml, ZoneInfo); the
# Python tzdata wheel in the lock covers it too, the OS copy serves tools and logs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 hazard \
    && useradd --system --uid 10001 --gid hazard --home-dir /app --shell /usr/sbin/nologin hazard
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY --chown=root:root shared ./shared
COPY --chown=root:root services ./services
COPY --chown=root:root deploy/docker/entrypoint.sh deploy/docker/healthcheck.py /usr/local/bin/
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TZ=UTC
# The code is owned by root and read-only to the service user.
USER 10001:10001
# The healthcheck reads <SERVICE>__HTTP__PORT and asks GET /healthz (Kubernetes uses its own probes).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/healthcheck.py"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD []

# orderworker image: a builder stage resolves and installs the project (non-editable) into
# /app/.venv with uv; the final stage is python:3.11-slim with that venv, settings.toml and a
# non-root user. No lockfile is committed: pyproject.toml pins every version (the transitive ones
# under [tool.uv] constraint-dependencies), so the image gets the versions the tests ran on.

FROM python:3.11-slim AS builder

# UV_COMPILE_BYTECODE: .pyc files are built here, once; the final stage's user cannot write them
# (read-only code, PYTHONDONTWRITEBYTECODE), and without them every command and probe pays
# compiling its imports again: about a second of CPU.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /src

# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-dev --no-install-project

# Then the project itself, as a regular (non-editable) install: the image needs no source tree.
# db/ carries the Alembic migrations (db/migrations) inside the package.
COPY worker ./worker
COPY jobs ./jobs
COPY db ./db
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-dev --no-editable


FROM python:3.11-slim

LABEL org.opencontainers.image.title="orderworker" \
      org.opencontainers.image.description="arq worker: order jobs from Redis, totals in PostgreSQL"

# The state folder takes `orderworker demo`'s replica logs: /app is read-only for the user.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORDERWORKER_SETTINGS_FILE=/app/settings.toml \
    ORDERWORKER_STATE_DIR=/tmp/orderworker

RUN groupadd --system --gid 10001 orderworker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin orderworker

WORKDIR /app
# Owned by root and read-only for the worker user: the process never writes to its own code.
COPY --from=builder /app/.venv /app/.venv
COPY settings.toml /app/settings.toml

USER 10001:10001

# The worker drains in-flight jobs on SIGTERM (worker.shutdown_grace_s, 25 s by default): give it
# at least that long before SIGKILL (compose: stop_grace_period 30s).
STOPSIGNAL SIGTERM
# Healthy: this container's replica loop is turning (a local file, no server) and PostgreSQL and
# Redis answer now (3 s each). Three misses in a row: a short Redis blip does not turn it red.
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["orderworker", "health", "--live", "--ready"]

ENTRYPOINT ["orderworker"]
CMD ["worker"]

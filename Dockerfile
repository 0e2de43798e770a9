# syntax=docker/dockerfile:1
#
# The orchestrator daemon's container image (docs/operations.md, "Installing").
#
#   docker build -t runpod-fleet-orchestrator .
#   podman build --format docker -t runpod-fleet-orchestrator .   # podman: the docker format keeps the
#                                                                # HEALTHCHECK, which OCI images drop
#   docker run --stop-timeout 180 --env-file orchestrator.env \
#       -e RUNPOD_SSH_PRIVATE_KEY_PATH=/run/secrets/id_ed25519 \
#       -e RUNPOD_SSH_PUBLIC_KEY_PATH=/run/secrets/id_ed25519.pub \
#       -v /etc/orchestrator/id_ed25519:/run/secrets/id_ed25519:ro \
#       -v /etc/orchestrator/id_ed25519.pub:/run/secrets/id_ed25519.pub:ro \
#       runpod-fleet-orchestrator                   # = orchestrator run
#   docker run --rm --env-file orchestrator.env <the same -e and -v options> runpod-fleet-orchestrator plan
#
# Configuration comes from the environment only (deploy/orchestrator.env.example lists every
# variable); nothing secret is baked in: keys arrive as environment variables or mounted files at run
# time. Stages:
#   build     builds the wheels of the package and of every dependency at the versions and hashes of
#             requirements.lock (needs a network, not a compiler: every dependency ships manylinux
#             wheels for CPython 3.11), so two builds a month apart install the same code
#   emulator  the package plus OpenSSH's server, for `orchestrator sim serve` in deploy/docker-compose.yml
#             (its pods are sshd sandboxes); never deploy it against real Runpod
#   runtime   the daemon: the installed wheels (the migrations inside the package's), a non-root user;
#             the default target

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (pyproject's readme is README.md); .dockerignore keeps the rest of
# the checkout (tests, .env, keys, .venv, .git) out of the build context altogether. migrations/ is
# what the package's orchestrator/adapters/db/migrations links to: the wheel carries those files inside.
COPY pyproject.toml README.md requirements.lock ./
COPY orchestrator/ orchestrator/
COPY migrations/ migrations/
RUN python -m pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock \
    && python -m pip wheel --no-deps --wheel-dir /wheels . \
    && cp requirements.lock /wheels/

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS emulator
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /run/sshd
# Bind-mounting the wheels (BuildKit) instead of copying them keeps them out of every layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels --require-hashes -r /wheels/requirements.lock \
    && python -m pip install --no-index --no-deps --find-links=/wheels runpod-fleet-orchestrator
# The emulator runs as root: each emulated pod is an sshd in its own mount namespace.
EXPOSE 8765
ENTRYPOINT ["orchestrator"]
CMD ["sim", "serve", "--port", "8765"]

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="runpod-fleet-orchestrator" \
      org.opencontainers.image.description="Keeps the right number of Runpod GPU pods alive for a Supabase task queue"
# METRICS_PORT is off (0) by default outside the image; inside it, the health check needs /healthz, and
# METRICS_HOST opens it to every interface of the container (outside, 127.0.0.1 is the default), which
# `-p 9100:9100` needs; publish it only where the fleet's size and spend may be read.
# LOG_FORMAT stays auto: JSON lines when stdout is not a terminal, which is how containers run.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    METRICS_PORT=9100 \
    METRICS_HOST=0.0.0.0
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels --require-hashes -r /wheels/requirements.lock \
    && python -m pip install --no-index --no-deps --find-links=/wheels runpod-fleet-orchestrator
# A fixed numeric uid/gid, so orchestrators (Kubernetes runAsNonRoot) can verify it is not root and
# mounted key files can be made readable to exactly this user.
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin orchestrator
WORKDIR /app
# No file from the context: `orchestrator migrate` applies the migrations the installed wheel carries
# (in site-packages, owned by root, so the daemon cannot alter them).
USER 10001:10001
EXPOSE 9100
# Slim images have no curl: ask /healthz with the interpreter we already ship. The port is read at
# check time, so `-e METRICS_PORT=...` moves the check with the endpoint. /healthz fails (non-2xx)
# when the last tick is too old, and urlopen raises on that, so the exit code is 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9100'), timeout=5); sys.exit(0)"]
# Exec form: the daemon itself is PID 1 and receives `docker stop`'s SIGTERM directly (no shell in
# between); it finishes its tick, releases the lease and exits 0. Give it `--stop-timeout 180`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["orchestrator"]
CMD ["run"]

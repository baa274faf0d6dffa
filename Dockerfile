# One image for the three services and the `catena` command (docs/deploy.md):
#   podman build --format docker -t localhost/catena:latest .   (or: docker build -t ...)
# (podman's default OCI format drops HEALTHCHECK; --format docker keeps it.)
#   podman run --rm catena catena --help
# Dependencies come only from requirements.lock, with their hashes; the image holds
# no compiler, no source tree and runs as an unprivileged user.
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The build backend, pinned by the dev lock (setuptools, wheel and its packaging).
COPY requirements.lock requirements-dev.lock ./
RUN awk '/^(setuptools|wheel|packaging)==/{p=1} p{print} p && !/\\$/{p=0}' requirements-dev.lock > build.lock \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r build.lock
# The services' virtualenv: exact versions from the lock, wheels only.
RUN python3 -m venv /opt/catena \
 && /opt/catena/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY catena ./catena
COPY admin_api ./admin_api
COPY authgate ./authgate
COPY epg_worker ./epg_worker
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels . \
 && /opt/catena/bin/pip install --no-cache-dir --no-deps /wheels/catena-*.whl \
 && /opt/catena/bin/pip check

FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/catena --create-home catena
COPY --from=build /opt/catena /opt/catena
ENV PATH=/opt/catena/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CATENA_VAR_DIR=/var/lib/catena \
    CATENA_ADMIN_HOST=0.0.0.0 \
    CATENA_AUTH_HOST=0.0.0.0 \
    CATENA_EPG_HOST=0.0.0.0
USER catena
WORKDIR /var/lib/catena
VOLUME /var/lib/catena
EXPOSE 8080 8081 8082
# Whichever service this container runs (admin-api, authgate, epg-worker) answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["catena", "health"]
CMD ["catena", "--help"]

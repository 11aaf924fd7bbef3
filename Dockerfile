# The EduHub image: one image for the worker (`eduhub worker`, the default), the connector runtime
# (`eduhub connect`) and the one-shot tools (`eduhub acl apply`, `eduhub deploy certs`) of docker-compose.yml.
#
# Both stages start from the same exact tag. A digest (@sha256:...) would pin harder, but none can be
# resolved where this file is written and checked (no registry access); bump the tag deliberately,
# and pin the digest in your own registry mirror if you have one.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- builder: the project's wheel and every dependency's wheel ------------------------------------
FROM ${PYTHON_IMAGE} AS builder
# Compilers only here, for a dependency that has no wheel for the build platform; the runtime stage has none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY connectors ./connectors
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip wheel --no-deps -w /wheels . \
    && pip wheel -w /wheels .

# ---- runtime: the wheels installed, nothing else ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Bind-mounted from the builder, not copied: the wheels never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels eduhub
WORKDIR /app
# The installed package carries neither schemas/ nor a hub.yaml. deploy/ is not copied: only
# `eduhub local` (a JVM broker, never run in a container) reads it.
COPY schemas ./schemas
COPY hub.yaml ./hub.yaml
ENV EDUHUB_CONFIG=/app/hub.yaml EDUHUB_SCHEMA_DIR=/app/schemas
# The worker's local state (the dedup window's RocksDB store): owned by the runtime user, a volume to keep
# it. A named volume mounted here starts with this ownership, so the non-root worker can write it.
# /certs likewise: compose's cluster-certs service writes the cluster's PEM files there as this user (keys
# 0600, the CA world-readable); the brokers, another user, start as root and copy their key.
RUN mkdir -p /var/lib/eduhub /certs && chown 65534:65534 /var/lib/eduhub /certs
ENV EDUHUB_WORKER_STATE_DIR=/var/lib/eduhub
VOLUME /var/lib/eduhub
# 6066: the worker's /metrics, /healthz, /readyz and status page (worker.web_port); 8083: the connector
# runtime's REST API and probes (connect.port); 8088: the http connector's ingest server.
EXPOSE 6066 8083 8088
# nobody:nogroup, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 65534:65534
# The worker's /healthz by default; a container running `connect` sets EDUHUB_HEALTHCHECK_URL to its own.
# Python, not curl: the slim base has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "hub.ops.healthcheck"]
ENTRYPOINT ["eduhub"]
CMD ["worker"]

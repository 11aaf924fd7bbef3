# The hub worker image used by docker-compose.yml (and by a cluster deployment).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY connectors ./connectors
COPY schemas ./schemas
COPY deploy ./deploy
COPY hub.yaml ./hub.yaml
RUN pip install --no-cache-dir .
# The installed package does not carry schemas/ and deploy/: point the hub at the copies.
ENV EDUHUB_CONFIG=/app/hub.yaml EDUHUB_SCHEMA_DIR=/app/schemas EDUHUB_DEPLOY_DIR=/app/deploy
# The worker's local state (the dedup window's RocksDB store): writable by the worker, a volume to keep it.
RUN mkdir -p /var/lib/eduhub && chown nobody /var/lib/eduhub
ENV EDUHUB_WORKER_STATE_DIR=/var/lib/eduhub
VOLUME /var/lib/eduhub
EXPOSE 6066
USER nobody
ENTRYPOINT ["eduhub"]
CMD ["worker"]

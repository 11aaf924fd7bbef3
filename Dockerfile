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
EXPOSE 6066
USER nobody
ENTRYPOINT ["eduhub"]
CMD ["worker"]

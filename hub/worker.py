"""The worker: a Faust app that wires the validate stage, the registry and the web endpoints."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust
from mode import Service

from hub import web
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.registry import COMPATIBILITY, RegistryError, SchemaRegistry
from hub.schemas import Catalogue
from hub.topics import dlq_topic, ensure_topics, ingest_topic
from hub.validate import ValidateStage, Validator

APP_ID = "eduhub"
log = logging.getLogger(__name__)


async def prepare_schemas(registry: SchemaRegistry, catalogue: Catalogue, auto_register: bool) -> dict[str, int]:
    """Schema id of every entity: registered (BACKWARD_TRANSITIVE) or looked up in the registry."""
    ids = {}
    for entity in catalogue.entities.values():
        if auto_register:
            await registry.set_compatibility(entity.subject, COMPATIBILITY)
            ids[entity.entity] = await registry.register(entity.subject, entity.canonical_text)
        else:
            ids[entity.entity] = await registry.lookup(entity.subject, entity.canonical_text)
    return ids


def worker_topics(config: HubConfig, catalogue: Catalogue) -> list[tuple[str, int]]:
    partitions = config.kafka.ingest_partitions
    topics = [(ingest_topic(s), partitions) for s in config.source_ids]
    topics += [(dlq_topic(s), partitions) for s in config.source_ids]
    topics += [(e.topic, config.kafka.canonical_partitions) for e in catalogue.entities.values()]
    return topics


def create_app(config: HubConfig, catalogue: Catalogue | None = None, metrics: HubMetrics | None = None) -> faust.App:
    """The Faust app of one worker, configured from hub.yaml; `eduhub worker` runs it."""
    catalogue = catalogue or Catalogue.load()
    metrics = metrics or HubMetrics()
    kafka = config.kafka
    datadir = Path(config.worker.data_dir) / config.worker.instance_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        APP_ID,
        broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap_servers.split(",")],
        web_host=config.worker.web_host,
        web_bind=config.worker.web_host,
        web_port=config.worker.web_port,
        datadir=str(datadir),
        topic_replication_factor=kafka.replication_factor,
        topic_partitions=kafka.canonical_partitions,
        store="memory://",
    )
    password = config.registry.password.get_secret_value() if config.registry.password else None
    registry = SchemaRegistry(config.registry.url, username=config.registry.username, password=password,
                              timeout=config.registry.timeout_s)
    state: dict[str, ValidateStage] = {}

    class ValidateService(Service):
        """Runs the validate stage for the lifetime of the worker."""

        async def on_start(self) -> None:
            try:
                schema_ids = await prepare_schemas(registry, catalogue, config.registry.auto_register)
            except RegistryError as exc:
                metrics.registry_errors.labels("register").inc()
                raise RuntimeError(f"cannot prepare schemas: {exc}") from exc
            await ensure_topics(kafka.bootstrap_servers, worker_topics(config, catalogue), kafka.replication_factor)
            stage = ValidateStage(
                validator=Validator(catalogue, set(config.source_ids), council_code=config.exam.council_code),
                schema_ids=schema_ids,
                bootstrap_servers=kafka.bootstrap_servers,
                sources=config.source_ids,
                group_id=f"{APP_ID}-validate",
                transactional_id=f"{APP_ID}-validate-{config.worker.instance_id}",
                metrics=metrics,
                batch_max_records=config.worker.batch_max_records,
                batch_max_wait_ms=config.worker.batch_max_wait_ms,
            )
            await stage.start()
            state["validate"] = stage
            log.info("validate stage started: %s → edu.* (schema ids %s)", ", ".join(stage.topics), schema_ids)

        @Service.task
        async def _run(self) -> None:
            while "validate" not in state:
                await asyncio.sleep(0.05)
            await state["validate"].run()

        async def on_stop(self) -> None:
            stage = state.pop("validate", None)
            if stage is not None:
                await stage.stop()
            await registry.close()

    app.service(ValidateService)

    async def readiness() -> dict[str, bool]:
        stage = state.get("validate")
        return {
            "registry": await registry.ping(),
            "validate_stage": stage is not None,
            "partitions_assigned": stage is not None and stage.assigned > 0,
        }

    web.install(app, metrics, readiness)
    return app


def run_worker(config: HubConfig, loglevel: str = "info") -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM (what `eduhub worker` does)."""
    app = create_app(config)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

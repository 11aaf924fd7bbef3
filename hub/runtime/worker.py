"""The worker: a Faust app that wires the stages, the registry and the web endpoints.

Faust is the worker's service framework (start-up order, signals, timers) and web server; it runs no
agent, table or consumer group of its own. The hot path is the transactional aiokafka loop of
hub/kafka/stage.py, not Faust agents: measured here with the same validator, a naive Faust agent (one
awaited send per event) did about 2,100 events/s against 13,000–16,000 for the batch loop, and
Faust's exactly-once mode has known bugs (lost and repeated records around rebalances), while the hub
promises no loss, no repeats and fencing of frozen workers (docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import faust
from mode import Service

from hub.runtime import web
from hub.runtime.app import HubApp
from hub.contract.topics import AUDIT_TOPIC
from hub.routing.audit import audit_key
from hub.core.config import ConfigError, HubConfig
from hub.core.websec import server_ssl_context
from hub.contract.topics import changelog_topic
from hub.stages.dedup import DedupWindow, changelog_configs
from hub.stages.delivery import DeliveryGroup, HttpDeliverer
from hub.kafka.admin import broker_reachable
from hub.core.metrics import HubMetrics, error_label
from hub.contract.registry import COMPATIBILITY, RegistryError, SchemaRegistry
from hub.stages.route import RouteStage
from hub.contract.schemas import Catalogue
from hub.core.backoff import backoff_s
from hub.runtime.status import StatusSampler, connect_options, connector_states
from hub.routing.policy import SubscriptionPolicy, load_subscriptions
from hub.routing.subscriptions import HttpDelivery
from hub.contract.topics import ROUTE_DLQ_TOPIC, dlq_topic, ingest_topic, subscriber_dlq_topic
from hub.kafka.admin import ensure_topics, partitions_of
from hub.kafka.clients import KafkaClients
from hub.stages.validate import ValidateStage, Validator

APP_ID = "eduhub"
log = logging.getLogger(__name__)
# httpx logs every request at INFO: one line per delivery attempt would drown the worker's log.
logging.getLogger("httpx").setLevel(logging.WARNING)


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
    topics += [(e.topic, config.kafka.canonical_partitions) for e in catalogue.entities.values()]
    return topics


def dlq_configs(config: HubConfig) -> dict[str, str]:
    """Topic configs of every DLQ the hub creates: kept kafka.dlq_retention_days, then deleted."""
    return {"retention.ms": str(config.kafka.dlq_retention_days * 86_400_000)}


async def ensure_dlq_topics(clients: KafkaClients, config: HubConfig, topics: list[tuple[str, int]]) -> None:
    await ensure_topics(clients, topics, config.kafka.replication_factor, configs=dlq_configs(config))


async def check_copartitioned(kafka: KafkaClients, changelog: str, sources: list[str]) -> None:
    """Every ingest partition needs its changelog partition: refuse to start otherwise."""
    have = len(await partitions_of(kafka, changelog))
    for source in sources:
        need = len(await partitions_of(kafka, ingest_topic(source)))
        if need > have:
            raise ConfigError(f"topic {ingest_topic(source)} has {need} partitions but the dedup changelog {changelog} "
                              f"has {have}: add partitions to {changelog} (kafka-topics.sh --alter --partitions {need})")


def dedup_dir(config: HubConfig) -> Path:
    """Where this worker keeps its dedup store: <worker.state_dir>/<instance_id>/dedup (the id made a safe name)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", config.worker.instance_id).lstrip(".") or "_"
    return Path(config.worker.state_dir) / name / "dedup"


def http_secrets(policies: list[SubscriptionPolicy]) -> dict[str, bytes]:
    """The signing secret of every HTTP subscriber, from the variable its `delivery.secret_env` names."""
    secrets = {}
    for index, policy in enumerate(policies):
        delivery = policy.config.delivery
        if isinstance(delivery, HttpDelivery):
            value = os.environ.get(delivery.secret_env, "")
            if not value:
                raise ConfigError(f"hub.yaml: subscriptions.{index}.delivery.secret_env: the environment variable "
                                  f"{delivery.secret_env} is empty or unset — set it to the secret shared with "
                                  f"subscriber {policy.config.id!r} (it signs every POST)")
            secrets[policy.config.id] = value.encode()
    return secrets


def master_key(config: HubConfig) -> bytes:
    """The routing master key from the environment (never from hub.yaml, never logged)."""
    value = os.environ.get(config.routing.key_env, "")
    if not value:
        raise ConfigError(f"subscriptions need a master key for pseudonyms and audit references: set the environment "
                          f"variable {config.routing.key_env} (routing.key_env) to a long random secret")
    return value.encode()


async def prepare_routing(config: HubConfig, clients: KafkaClients, catalogue: Catalogue,
                          registry: SchemaRegistry, policies: list[SubscriptionPolicy]) -> dict[tuple[str, str], int]:
    """Register each subscriber's projected schemas and create its topics and the audit topic."""
    ids = {}
    topics = []
    for policy in policies:
        for entity in sorted(policy.entities):
            subject = f"{policy.topic(entity)}-value"
            if config.registry.auto_register:
                await registry.set_compatibility(subject, COMPATIBILITY)
                ids[(policy.config.id, entity)] = await registry.register(
                    subject, json.dumps(policy.projected_schema(entity), ensure_ascii=False))
            else:
                ids[(policy.config.id, entity)] = await registry.lookup(
                    subject, json.dumps(policy.projected_schema(entity), ensure_ascii=False))
            topics.append((policy.topic(entity), config.kafka.canonical_partitions))
    kafka = config.kafka
    await ensure_topics(clients, topics, kafka.replication_factor)
    await ensure_dlq_topics(clients, config, [(ROUTE_DLQ_TOPIC, kafka.canonical_partitions)])
    # Who received a person's data must stay answerable: the audit topic is never trimmed by time.
    await ensure_topics(clients, [(AUDIT_TOPIC, kafka.canonical_partitions)], kafka.replication_factor,
                        configs={"retention.ms": "-1"})
    return ids


class Stage(Protocol):
    turned_at: float  # monotonic time the stage's loop last turned

    async def start(self) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


def stage_service(name: str, build: Callable[[], Awaitable[Stage]], state: dict[str, Any], metrics: HubMetrics, *,
                  after: str | None = None, on_stop: Callable[[], Awaitable[None]] | None = None) -> type[Service]:
    """A Faust service that builds a stage once `after` is running, runs it for the worker's lifetime
    and stops it with the worker; `state[name]` holds it while it runs (readiness looks there).

    Building needs the registry and the broker: while either cannot be reached the service retries with
    backoff (readiness stays false) instead of exiting, so a worker may start before them."""

    class StageService(Service):
        @Service.task
        async def _run(self) -> None:
            while after is not None and after not in state:
                await asyncio.sleep(0.05)
            stage = await self._build()
            state[name] = stage
            await stage.run()

        async def _build(self) -> Stage:
            failures = 0
            while True:
                stage = None
                try:
                    stage = await build()
                    await stage.start()
                    return stage
                except (asyncio.CancelledError, ConfigError):
                    raise
                except Exception as exc:  # noqa: BLE001 — registry or broker not there yet: wait for it
                    failures += 1
                    metrics.stage_errors.labels(name, error_label(exc)).inc()
                    log.error("%s stage cannot start yet (%d in a row): %s: %s; retrying in %.0f s", name, failures,
                              type(exc).__name__, exc, backoff_s(failures))
                    if stage is not None:
                        await stage.stop()
                    await asyncio.sleep(backoff_s(failures))

        async def on_stop(self) -> None:
            stage = state.pop(name, None)
            if stage is not None:
                await stage.stop()
            if on_stop is not None:
                await on_stop()

        @property
        def shortlabel(self) -> str:  # how mode names it in the logs (the class name is shared)
            return f"{name.capitalize()}Service"

    return StageService


def create_app(config: HubConfig, catalogue: Catalogue | None = None, metrics: HubMetrics | None = None) -> faust.App:
    """The Faust app of one worker, configured from hub.yaml; `eduhub worker` runs it."""
    catalogue = catalogue or Catalogue.load()
    metrics = metrics or HubMetrics()
    kafka = config.kafka
    clients = KafkaClients.from_config(kafka)
    log.info("Kafka: %s", clients.describe())
    app = HubApp(
        APP_ID,
        web_host=config.worker.web_host,
        web_bind=config.worker.web_host,
        web_port=config.worker.web_port,
        web_ssl_context=server_ssl_context(config.worker.tls_cert_file, config.worker.tls_key_file, "worker"),
    )
    password = config.registry.password.get_secret_value() if config.registry.password else None
    registry = SchemaRegistry(config.registry.url, username=config.registry.username, password=password,
                              timeout=config.registry.timeout_s)
    state: dict[str, Any] = {}
    windows: list[DedupWindow] = []  # opened once (its store is locked while open), closed on stop

    async def start_validate() -> ValidateStage:
        # Kafka first: credentials it refuses stop the worker at once, whatever the registry's state.
        await ensure_topics(clients, worker_topics(config, catalogue), kafka.replication_factor)
        await ensure_dlq_topics(clients, config, [(dlq_topic(s), kafka.ingest_partitions) for s in config.source_ids])
        try:
            schema_ids = await prepare_schemas(registry, catalogue, config.registry.auto_register)
        except RegistryError:
            metrics.registry_errors.labels("register").inc()
            raise
        state["schema_ids"] = schema_ids  # the canonical schemas' ids, which the route stage reads as
        group_id = f"{APP_ID}-validate"
        dedup = None
        if config.worker.dedup_window_s:
            # Co-partitioned with the ingest topics: ingest partition p keeps its window in partition p.
            if not windows:
                windows.append(DedupWindow(changelog_topic(group_id), config.worker.dedup_window_s,
                                           state_dir=dedup_dir(config)))
            dedup = windows[0]
            await ensure_topics(clients, [(dedup.topic, kafka.ingest_partitions)],
                                kafka.replication_factor, configs=changelog_configs(dedup.window_s))
            await check_copartitioned(clients, dedup.topic, config.source_ids)
        stage = ValidateStage(
            validator=Validator(catalogue, set(config.source_ids), council_code=config.exam.council_code),
            schema_ids=schema_ids, kafka=clients, sources=config.source_ids,
            group_id=group_id, transactional_prefix=group_id, dedup=dedup,
            metrics=metrics, batch_max_records=config.worker.batch_max_records,
            batch_max_wait_ms=config.worker.batch_max_wait_ms,
        )
        log.info("validate stage: %s → edu.* (schema ids %s)", ", ".join(stage.topics), schema_ids)
        return stage

    async def stop_validate() -> None:
        await registry.close()
        while windows:
            windows.pop().close()

    app.service(stage_service("validate", start_validate, state, metrics, on_stop=stop_validate))

    if config.subscriptions:
        key = master_key(config)
        policies = load_subscriptions(config.subscriptions, catalogue, key)
        secrets = http_secrets(policies)

        async def start_route() -> RouteStage:
            schema_ids = await prepare_routing(config, clients, catalogue, registry, policies)
            log.info("route stage: %d subscriptions", len(policies))
            return RouteStage(
                catalogue=catalogue, policies=policies, registry=registry, schema_ids=schema_ids,
                kafka=clients, group_id=f"{APP_ID}-route",
                transactional_prefix=f"{APP_ID}-route", metrics=metrics,
                audit_key=audit_key(key), canonical_ids=state["schema_ids"],
                batch_max_records=config.worker.batch_max_records,
                batch_max_wait_ms=config.worker.batch_max_wait_ms)

        # The canonical topics exist once validate started; the subscriber topics once route did.
        app.service(stage_service("route", start_route, state, metrics, after="validate"))

        if secrets:
            async def start_delivery() -> DeliveryGroup:
                http = [p for p in policies if p.config.id in secrets]
                await ensure_dlq_topics(clients, config, [(subscriber_dlq_topic(p.config.id),
                                                           kafka.canonical_partitions) for p in http])
                log.info("HTTP delivery: %s", ", ".join(p.config.id for p in http))
                return DeliveryGroup([HttpDeliverer(p, secret=secrets[p.config.id],
                                                   kafka=clients, registry=registry,
                                                   metrics=metrics) for p in http])

            app.service(stage_service("deliver", start_delivery, state, metrics, after="route"))

    async def readiness() -> dict[str, bool]:
        stage = state.get("validate")
        checks = {
            "broker": stage is not None and await broker_reachable(stage.client),
            "registry": await registry.ping(),
            "validate_stage": stage is not None,
            # 0 while the assigned partitions' state (the dedup window) is being restored
            "partitions_assigned": stage is not None and stage.assigned > 0,
        }
        if config.subscriptions:
            checks["route_stage"] = "route" in state
        if config.subscriptions and secrets:
            checks["http_delivery"] = "deliver" in state
        return checks

    sampler = StatusSampler(config, metrics, config.subscriptions)
    connect_api = connect_options(config)  # base URL, bearer token, CA

    @app.timer(2.0)
    async def sample_status() -> None:
        sampler.sample()

    async def status() -> dict[str, Any]:
        connectors, error = await connector_states(connect_api) if config.connectors else ([], None)
        return sampler.snapshot(connectors, error)

    web.install(app, metrics, readiness, status, lambda: stages_turning(state, config.worker.stall_timeout_s))
    app.eduhub_stages = state  # type: ignore[attr-defined]  (HubWorker marks them stopping on a signal)
    return app


def stages_turning(state: dict[str, Any], stall_timeout_s: float, now: float | None = None) -> dict[str, bool]:
    """Each running stage: has its loop turned within `stall_timeout_s`? (/healthz fails on a False)"""
    now = time.monotonic() if now is None else now
    return {name: now - stage.turned_at < stall_timeout_s
            for name, stage in state.items() if hasattr(stage, "turned_at")}


class HubWorker(faust.Worker):
    """A Faust worker that always stops: on SIGTERM/SIGINT the stages stop taking partitions at once,
    and a process that has not exited `shutdown_timeout_s` later exits anyway (a rebalance, a restore or a
    broker that does not answer cannot hold it; transactions left open abort on the broker)."""

    def __init__(self, app: faust.App, *, shutdown_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.shutdown_timeout_s = shutdown_timeout_s

    def _schedule_shutdown(self, signal: Any) -> None:
        if not self._signal_stop_time:
            exit_after(self.shutdown_timeout_s)
            for stage in list(getattr(self.app, "eduhub_stages", {}).values()):
                request_stop = getattr(stage, "request_stop", None)
                if request_stop is not None:
                    request_stop()
        super()._schedule_shutdown(signal)


def exit_after(seconds: float) -> threading.Timer:
    """Exit the process `seconds` from now unless it has exited by then (a thread: a blocked loop cannot hold it)."""
    def expire() -> None:
        log.error("the worker did not stop within %.0f s of the signal (worker.shutdown_timeout_s); exiting now",
                  seconds)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def run_worker(config: HubConfig, loglevel: str = "info") -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM (what `eduhub worker` does)."""
    app = create_app(config)
    worker = HubWorker(app, shutdown_timeout_s=config.worker.shutdown_timeout_s, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

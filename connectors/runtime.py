"""The connector runtime: publishes what connectors yield, stores their offsets in Kafka, retries, reports."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import SecretStr, ValidationError

from connectors.base import KINDS, ConnectorConfig, SourceConnector, SourceRecord
from hub.core.backoff import backoff_s, half_jitter
from hub.core.config import ConfigError, HubConfig, format_errors
from hub.kafka.io import read_to_end
from hub.core.metrics import HubMetrics
from hub.contract.topics import ingest_topic
from hub.kafka.admin import ensure_topics
from hub.kafka.clients import KafkaClients

log = logging.getLogger(__name__)
# Where each kind lives; imported on first use so a hub without spreadsheets never loads openpyxl.
KIND_MODULES = {"sql": "connectors.sql", "outbox": "connectors.outbox", "http": "connectors.http",
                "file": "connectors.file", "debezium": "connectors.debezium"}
OFFSET_PARTITIONS = 12
BACKOFF_MAX_S = 60.0


def connector_class(kind: str) -> type[SourceConnector]:
    if kind not in KINDS and kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[kind])
    if kind not in KINDS:
        raise KeyError(kind)
    return KINDS[kind]


def build_connectors(config: HubConfig, kafka: KafkaClients | None = None) -> list[SourceConnector]:
    """Instantiate every connector of hub.yaml, validating each against its kind's config model, each with
    the Kafka connection of its principal (`kafka`: the hub's, default from hub.yaml)."""
    kafka = kafka or KafkaClients.from_config(config.kafka)
    built: list[SourceConnector] = []
    names: set[str] = set()
    for index, raw in enumerate(config.connectors):
        where = f"connectors.{index}."
        kind = raw.get("kind")
        try:
            cls = connector_class(kind) if isinstance(kind, str) else None
        except KeyError:
            cls = None
        if cls is None:
            raise ConfigError(f"hub.yaml: {where}kind: {kind!r} is not a connector kind — expected one of "
                              f"{', '.join(sorted(KIND_MODULES))}")
        if kind == "debezium" and not raw.get("bootstrap_servers"):
            # A Debezium topic lives on the hub's own cluster unless the entry names another.
            raw = {**raw, "bootstrap_servers": config.kafka.bootstrap_servers}
        try:
            connector_config = cls.config_model.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "hub.yaml", cls.config_model, prefix=where)) from None
        if connector_config.source not in config.source_ids:
            raise ConfigError(f"hub.yaml: {where}source: {connector_config.source!r} is not a registered source — "
                              f"declare it under `sources`")
        if connector_config.name in names:
            raise ConfigError(f"hub.yaml: {where}name: connector name {connector_config.name!r} is used twice")
        names.add(connector_config.name)
        connector = cls(connector_config)
        connector.kafka = connector_kafka(kafka, connector_config, where)
        built.append(connector)
    return built


def connector_kafka(kafka: KafkaClients, connector: ConnectorConfig, where: str,
                    environ: dict[str, str] | None = None) -> KafkaClients:
    """A connector's connection: its own SASL user (kafka_username, password from kafka_password_env) or,
    unset, the hub's `kafka`. `where` ("connectors.2.") names the entry in errors."""
    if connector.kafka_username is None and connector.kafka_password_env is None:
        return kafka
    if connector.kafka_username is None or connector.kafka_password_env is None:
        raise ConfigError(f"hub.yaml: {where}kafka_username and {where}kafka_password_env: set both (the connector's "
                          f"SASL user and the environment variable holding its password) or neither (the hub's user)")
    if not kafka.sasl:
        raise ConfigError(f"hub.yaml: {where}kafka_username: kafka.security_protocol is {kafka.security_protocol}, "
                          f"which has no users: set it to SASL_SSL, or remove kafka_username and kafka_password_env")
    env = connector.kafka_password_env
    password = (os.environ if environ is None else environ).get(env, "")
    if not password:
        raise ConfigError(f"hub.yaml: {where}kafka_password_env: the environment variable {env} is empty or unset — "
                          f"set it to the password of Kafka user {connector.kafka_username!r}")
    return kafka.as_principal(connector.kafka_username, SecretStr(password),
                              credentials=f"{where}kafka_username and {env}")


class OffsetStore:
    """Source offsets of connectors in a compacted topic, keyed by connector name (as Kafka Connect's)."""

    def __init__(self, kafka: KafkaClients, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic

    async def ensure(self, replication_factor: int) -> None:
        await ensure_topics(self.kafka, [(self.topic, OFFSET_PARTITIONS)], replication_factor,
                            configs={"cleanup.policy": "compact"})

    async def read_all(self) -> dict[str, dict[str, Any] | None]:
        """The latest stored offset of every connector (None where it was reset)."""
        offsets: dict[str, dict[str, Any] | None] = {}
        for message in await read_to_end(self.kafka, self.topic):
            offsets[message.key.decode()] = None if message.value is None else json.loads(message.value)
        return offsets

    async def write(self, producer: AIOKafkaProducer, name: str, offset: dict[str, Any] | None) -> None:
        """Store (None: reset) a connector's offset through `producer` (the connector's principal);
        returns once Kafka acknowledged it."""
        value = None if offset is None else json.dumps(offset, ensure_ascii=False, sort_keys=True).encode()
        await (await producer.send(self.topic, value, key=name.encode()))


@dataclass
class ConnectorStatus:
    name: str
    kind: str
    source: str
    state: str = "UNASSIGNED"  # RUNNING, PAUSED, STOPPED, RETRYING, FAILED
    offset: dict[str, Any] | None = None
    published: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    snapshot: dict[str, int] | None = None  # {"read": n, "total": m} while a first snapshot runs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConnectorRuntime:
    """Runs one connector: poll, publish to ingest.<source> (idempotent, keyed), store offset, tell it.

    A record's offset is stored only after Kafka acknowledged the record, and the connector hears
    `committed` only after that: a crash at any point re-reads from the stored offset and re-sends
    changes with their same event ids, which the hub drops as repeats.
    """

    def __init__(self, connector: SourceConnector, *, producer: AIOKafkaProducer, offsets: OffsetStore,
                 metrics: HubMetrics) -> None:
        self.connector = connector
        self.config: ConnectorConfig = connector.config
        self.producer = producer
        self.offsets = offsets
        self.metrics = metrics
        self.topic = ingest_topic(self.config.source)
        self.status = ConnectorStatus(self.config.name, self.config.kind, self.config.source)
        self._labels = (self.config.name, self.config.source)
        # Series exist from the start at 0, so rates and alerts have data before the first error.
        for counter in (metrics.connector_errors, metrics.connector_published):
            counter.labels(*self._labels)
        self._task: asyncio.Task | None = None
        self._started = False
        self._stored: dict[str, Any] | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._wake = asyncio.Event()

    async def start(self, stored: dict[str, Any] | None) -> None:
        """Start the connector and its loop. A source that cannot be opened now (its database is down,
        say) leaves the connector RETRYING, its loop retrying the start with backoff: one unreachable
        source never stops the runtime and the other connectors."""
        self.status.offset = stored
        self._stored = stored
        try:
            await self._start_source()
        except Exception as exc:  # noqa: BLE001 — retried by the loop
            self._failed(exc, "start")
        self._task = asyncio.create_task(self._run(), name=f"connector-{self.config.name}")

    async def _start_source(self) -> None:
        await self.connector.start(self._stored)
        self._started = True
        self._refresh_snapshot()
        self._set_state("RUNNING")

    def _failed(self, exc: Exception, during: str) -> None:
        self.status.last_error = f"{type(exc).__name__}: {exc}"
        self.status.last_error_at = time.time()
        self.metrics.connector_errors.labels(*self._labels).inc()
        self._set_state("RETRYING")
        if during == "start":
            log.warning("connector %s: cannot start: %s; retrying", self.config.name, self.status.last_error)

    async def stop(self) -> None:
        """Stop polling and release the source; the stored offset stays."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await self.connector.stop()  # also after a failed start: it may hold what it opened
            self._started = False
        self._set_state("STOPPED")

    def pause(self) -> None:
        self._resume.clear()
        self._set_state("PAUSED")

    def resume(self) -> None:
        self._resume.set()
        self._wake.set()
        if self.status.state == "PAUSED":
            self._set_state("RUNNING")

    async def restart(self) -> None:
        await self.stop()
        stored = (await self.offsets.read_all()).get(self.config.name)
        await self.start(stored)

    async def reset_offset(self, offset: dict[str, Any] | None) -> None:
        """Replace the stored offset (None: start over with a snapshot). Only while STOPPED (KIP-875)."""
        if self.status.state != "STOPPED":
            raise RuntimeError(f"connector {self.config.name} is {self.status.state}: stop it before changing offsets")
        await self.offsets.write(self.producer, self.config.name, offset)
        self.status.offset = offset

    def _set_state(self, state: str) -> None:
        self.status.state = state
        self.metrics.connector_up.labels(*self._labels).set(1 if state == "RUNNING" else 0)

    async def _idle(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        pending: list[SourceRecord] = []
        failures = 0  # failures in a row: the wait doubles from 1 s up to BACKOFF_MAX_S
        while True:
            await self._resume.wait()
            try:
                if not self._started:
                    await self._start_source()
                if not pending:
                    pending = await self.connector.poll()
                if not pending:
                    await self._idle(self.config.poll_interval_s)
                    continue
                await self._publish(pending)
                await self.connector.committed(pending)
                pending = []
                self._refresh_snapshot()
                failures = 0
                if self.status.state == "RETRYING":
                    self._set_state("RUNNING")
            except asyncio.CancelledError:
                _fail_waiters(pending, RuntimeError("connector stopped"))
                raise
            except Exception as exc:  # noqa: BLE001 — any failure of the source or Kafka is retried
                self._failed(exc, "poll")
                failures += 1
                backoff = backoff_s(failures, 1.0, BACKOFF_MAX_S)
                log.warning("connector %s: %s; retrying in %.1f s", self.config.name, self.status.last_error, backoff)
                # A pushed record's sender is waiting: tell it now, it will retry with the same event id.
                _fail_waiters(pending, exc)
                pending = [r for r in pending if r.acknowledged is None]
                await asyncio.sleep(half_jitter(backoff))

    def _refresh_snapshot(self) -> None:
        progress = self.connector.snapshot_progress()
        self.status.snapshot = None if progress is None else {"read": progress[0], "total": progress[1]}

    async def _publish(self, records: Sequence[SourceRecord]) -> None:
        send = self.producer.send
        futures = []
        for record in records:
            envelope = record.envelope
            key = envelope.get("key")
            futures.append(await send(self.topic, json.dumps(envelope, ensure_ascii=False).encode(),
                                      key=key.encode() if isinstance(key, str) else None))
        await asyncio.gather(*futures)
        await self.offsets.write(self.producer, self.config.name, records[-1].offset)
        for record in records:
            if record.acknowledged is not None and not record.acknowledged.done():
                record.acknowledged.set_result(True)
        self.status.offset = records[-1].offset
        self.status.published += len(records)
        self.status.last_success_at = time.time()
        self.metrics.connector_published.labels(*self._labels).inc(len(records))
        self.metrics.connector_last_success.labels(*self._labels).set(self.status.last_success_at)


def _fail_waiters(records: Sequence[SourceRecord], exc: BaseException) -> None:
    for record in records:
        if record.acknowledged is not None and not record.acknowledged.done():
            record.acknowledged.set_exception(exc)


class ConnectService:
    """Every connector of hub.yaml in one process. Connectors of one principal share one idempotent
    producer; a connector with its own (kafka_username) gets its own, for its records and its offsets,
    so that Kafka sees, and its ACLs allow, that principal only. Topics are created and offsets read
    as the hub's principal."""

    def __init__(self, config: HubConfig, metrics: HubMetrics | None = None,
                 connectors: list[SourceConnector] | None = None) -> None:
        self.config = config
        self.metrics = metrics or HubMetrics()
        self.kafka = KafkaClients.from_config(config.kafka)
        self._connectors = connectors if connectors is not None else build_connectors(config, self.kafka)
        self.offsets = OffsetStore(self.kafka, config.connect.offsets_topic)
        # acks=all + idempotence: a retried send never duplicates or reorders within a partition.
        self.producers: dict[KafkaClients, AIOKafkaProducer] = {}
        for connector in self._connectors:
            kafka = self._kafka_of(connector)
            if kafka not in self.producers:
                self.producers[kafka] = kafka.producer(enable_idempotence=True, acks="all", linger_ms=5)
        self.runtimes: dict[str, ConnectorRuntime] = {}

    def _kafka_of(self, connector: SourceConnector) -> KafkaClients:
        return connector.kafka or self.kafka

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # a refused login, say: close what did start
            raise

    async def _start(self) -> None:
        kafka = self.config.kafka
        await self.offsets.ensure(kafka.replication_factor)
        sources = sorted({c.config.source for c in self._connectors})
        await ensure_topics(self.kafka, [(ingest_topic(s), kafka.ingest_partitions) for s in sources],
                            kafka.replication_factor)
        for clients, producer in self.producers.items():
            await clients.start(producer)
            log.info("publishing as %s", clients.describe())
        stored = await self.offsets.read_all()
        for connector in self._connectors:
            connector.kafka = self._kafka_of(connector)
            runtime = ConnectorRuntime(connector, producer=self.producers[connector.kafka], offsets=self.offsets,
                                       metrics=self.metrics)
            self.runtimes[connector.config.name] = runtime
            await runtime.start(stored.get(connector.config.name))

    async def stop(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.stop()
        for producer in self.producers.values():
            await producer.stop()

    def get(self, name: str) -> ConnectorRuntime:
        if name not in self.runtimes:
            raise KeyError(name)
        return self.runtimes[name]

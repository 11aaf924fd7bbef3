"""Throughput benchmark of the validate stage against a plain aiokafka loop on the same input."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro

from hub.demo.simulators import ExamRegistrationSimulator
from hub.core.config import HubConfig, SourceConfig
from hub.stages.dedup import DedupWindow, changelog_configs
from hub.core.metrics import HubMetrics
from hub.contract.registry import SchemaRegistry
from hub.contract.schemas import Catalogue
from hub.contract.topics import dlq_topic, ingest_topic
from hub.kafka.admin import ensure_topics
from hub.kafka.clients import KafkaClients
from hub.stages.validate import ValidateStage, Validator
from hub.runtime.worker import prepare_schemas

ENTITY = "exam.registration"


@dataclass
class Figure:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def _fill(kafka: KafkaClients, topic: str, count: int, bad_ratio: float) -> Figure:
    simulator = ExamRegistrationSimulator(seed=2026, source=topic.removeprefix("ingest."), bad_ratio=bad_ratio)
    lines = [(json.dumps(e, ensure_ascii=False).encode(), str(e.get("key", "")).encode())
             for e in simulator.envelopes(count)]
    producer = kafka.producer(enable_idempotence=True, linger_ms=20, max_batch_size=1024 * 1024)
    await kafka.start(producer)
    started = time.perf_counter()
    try:
        for value, key in lines:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return Figure("produce input (idempotent producer)", count, time.perf_counter() - started)


async def _plain_loop(kafka: KafkaClients, topic: str, count: int, parsed_schema, out_topic: str) -> Figure:
    """The floor to compare with: batch consume, json.loads, fastavro encode, send without awaiting each."""
    consumer = kafka.consumer(topic, group_id=f"bench-plain-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
                              enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = kafka.producer(linger_ms=5, max_batch_size=512 * 1024)
    await kafka.start(consumer)
    await kafka.start(producer)
    done = 0
    started = None
    try:
        while done < count:
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            if started is None and batches:
                started = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    doc = json.loads(message.value)
                    buffer = io.BytesIO()
                    try:
                        fastavro.schemaless_writer(buffer, parsed_schema, doc.get("data"))
                    except Exception:  # the plain loop has no DLQ: it drops what it cannot encode
                        pass
                    await producer.send(out_topic, buffer.getvalue(), key=message.key)
                    done += 1
            await consumer.commit()
        await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()
    return Figure("plain aiokafka loop (no validation, no transactions)", done, time.perf_counter() - started)


async def _hub_stage(config: HubConfig, kafka: KafkaClients, source: str, count: int, schema_ids: dict[str, int],
                     catalogue: Catalogue, prefix: str) -> Figure:
    """The real validate stage, every guarantee on, writing to prefixed copies of its topics."""
    dedup = DedupWindow(f"{prefix}dedup-changelog", config.worker.dedup_window_s)
    await ensure_topics(kafka, [(dedup.topic, config.kafka.ingest_partitions)],
                        config.kafka.replication_factor, configs=changelog_configs(dedup.window_s))
    stage = ValidateStage(
        validator=Validator(catalogue, {source}), schema_ids=schema_ids, dedup=dedup,
        kafka=kafka, sources=[source],
        group_id=f"bench-hub-{uuid.uuid4().hex[:8]}", transactional_prefix=f"bench-hub-{uuid.uuid4().hex[:8]}",
        metrics=HubMetrics(), batch_max_records=config.worker.batch_max_records,
        batch_max_wait_ms=config.worker.batch_max_wait_ms, topic_prefix=prefix,
    )
    await stage.start()
    runner = asyncio.create_task(stage.run())
    try:
        while stage.processed < count:
            if runner.done():
                runner.result()  # raises what stopped the stage
            await asyncio.sleep(0.005)
        finished = time.perf_counter()
    finally:
        await stage.stop()
        await asyncio.gather(runner, return_exceptions=True)
    return Figure("hub validate stage (full validation, dedup, DLQ, transactions)", stage.processed,
                  finished - stage.first_batch_at)


async def run_bench(config: HubConfig, count: int, bad_ratio: float, echo: Callable[[str], None]) -> list[Figure]:
    """Fill a fresh ingest topic with `count` realistic envelopes, then time both loops over it."""
    kafka = KafkaClients.from_config(config.kafka)
    source = f"bench-{uuid.uuid4().hex[:8]}"
    topic = ingest_topic(source)
    prefix = f"{source}."
    catalogue = Catalogue.load()
    entity = catalogue[ENTITY]
    partitions = config.kafka.ingest_partitions
    outputs = [(prefix + e.topic, partitions) for e in catalogue.entities.values()]  # the stage writes to all
    await ensure_topics(kafka, [(topic, partitions), *outputs, (prefix + dlq_topic(source), partitions),
                                    (f"{topic}.plain-out", partitions)], config.kafka.replication_factor)
    password = config.registry.password.get_secret_value() if config.registry.password else None
    async with SchemaRegistry(config.registry.url, username=config.registry.username, password=password) as registry:
        schema_ids = await prepare_schemas(registry, catalogue, config.registry.auto_register)
    echo(f"filling {topic} ({partitions} partitions) with {count} envelopes ({bad_ratio:.0%} invalid)…")
    figures = [await _fill(kafka, topic, count, bad_ratio)]
    echo(f"  {figures[-1].rate:,.0f}/s")
    echo("plain aiokafka loop…")
    figures.append(await _plain_loop(kafka, topic, count, entity.parsed, f"{topic}.plain-out"))
    echo(f"  {figures[-1].rate:,.0f}/s")
    echo("hub validate stage…")
    figures.append(await _hub_stage(config, kafka, source, count, schema_ids, catalogue, prefix))
    echo(f"  {figures[-1].rate:,.0f}/s")
    return figures


def classes_table(name: str, metadata: Any) -> Any:
    """A school.class source table as the `sql` connector reads it by default (id, created/updated)."""
    import sqlalchemy as sa

    return sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True),
                    *[sa.Column(c, sa.Text) for c in ("class_id", "school_code", "school_year", "name",
                                                      "homeroom_teacher_id")],
                    sa.Column("grade", sa.Integer), sa.Column("size", sa.Integer),
                    sa.Column("created_at", sa.DateTime), sa.Column("updated_at", sa.DateTime))


async def run_sql_bench(config: HubConfig, url: str, rows: int, batch_size: int,
                        echo: Callable[[str], None]) -> Figure:
    """Rows/s of the `sql` connector with its runtime: a fresh table of `rows` classes in the database
    at `url`, published to a fresh ingest topic (snapshot, batch_size rows a poll)."""
    from datetime import datetime, timedelta

    import sqlalchemy as sa

    from connectors.runtime import ConnectService

    table = f"bench_classes_{uuid.uuid4().hex[:8]}"
    source = f"bench-{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    classes = classes_table(table, metadata)
    metadata.create_all(engine)
    base = datetime(2026, 1, 1, 7, 0)
    echo(f"inserting {rows} rows into {table}…")
    with engine.begin() as conn:
        for start in range(0, rows, 10_000):
            conn.execute(classes.insert(), [
                {"id": n + 1, "class_id": f"31THPT{n % 90:03d}-2025-2026-10A{n}", "school_code": f"31THPT{n % 90:03d}",
                 "school_year": "2025-2026", "name": f"10A{n}", "homeroom_teacher_id": None, "grade": 10,
                 "size": 40, "created_at": base + timedelta(seconds=n), "updated_at": base + timedelta(seconds=n)}
                for n in range(start, min(start + 10_000, rows))])
    bench_config = config.model_copy(update={
        "sources": [*config.sources, SourceConfig(id=source)],
        "connectors": [{"name": source, "kind": "sql", "source": source, "url": url, "table": table,
                        "entity": "school.class", "batch_size": batch_size}],
        "connect": config.connect.model_copy(update={"offsets_topic": f"{source}.offsets"}),
    })
    service = ConnectService(bench_config)
    await service.start()
    runtime = service.get(source)
    started = time.perf_counter()
    try:
        while runtime.status.published < rows:
            if runtime.status.last_error:
                raise RuntimeError(runtime.status.last_error)
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        metadata.drop_all(engine)
    return Figure("sql connector: snapshot read + publish + offsets", rows, elapsed)

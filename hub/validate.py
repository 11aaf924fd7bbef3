"""The validate stage: ingest envelopes → canonical Avro records, or dead letters with reasons."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from hub import dlq
from hub.envelope import Envelope, Problem, check_envelope, event_id_of, read_json
from hub.metrics import HubMetrics
from hub.produce import BatchWriter
from hub.rules import RuleContext, apply_rules
from hub.schemas import Catalogue, EntitySchema
from hub.topics import dlq_topic, ingest_topic, source_of_ingest_topic

STAGE = "validate"
UNKNOWN = "unknown"
VALID = ""  # the outcome key of a valid event in the per-batch counts
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Valid:
    """An event fit for its canonical topic: `record` is None for a delete (a tombstone)."""

    envelope: Envelope
    entity: EntitySchema
    record: dict[str, Any] | None


@dataclass(slots=True)
class Invalid:
    event_id: str | None
    entity: str
    problems: list[Problem]


class Validator:
    """Validates raw ingest records; the one validation path for the worker and offline tools.

    >>> v = Validator(Catalogue.load(), sources={"exam-reg"})
    >>> v.validate(b"not json").problems[0].rule
    'envelope.not_json'
    """

    def __init__(self, catalogue: Catalogue, sources: set[str] | None = None,
                 clock: Callable[[], datetime] | None = None, council_code: str = "03") -> None:
        self.catalogue = catalogue
        self.sources = frozenset(sources) if sources is not None else None
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self.context = RuleContext(council_code=council_code)

    def validate(self, raw: bytes | None, topic_source: str | None = None, now: datetime | None = None) -> Valid | Invalid:
        if raw is None:
            return Invalid(None, UNKNOWN, [Problem("", "envelope.empty", "the record has no value")])
        doc, problem = read_json(raw)
        if problem is not None:
            return Invalid(None, UNKNOWN, [problem])
        envelope, problems = check_envelope(
            doc, entities=self.catalogue.names, sources=self.sources, topic_source=topic_source,
            now=now or self._clock(),
        )
        if envelope is None:
            entity = doc.get("entity") if isinstance(doc, dict) else None
            return Invalid(event_id_of(doc), entity if entity in self.catalogue.names else UNKNOWN, problems)
        schema = self.catalogue[envelope.entity]
        if envelope.data is None:
            return Valid(envelope, schema, None)
        record, problems = schema.to_record(envelope.data)
        if record is not None:
            problems = apply_rules(envelope.entity, record, self.context)
            key = schema.key_of(record)
            if key != envelope.key:
                problems.append(
                    Problem("key", "envelope.key_mismatch",
                            f"key {envelope.key!r} differs from the key built from data: {key!r}")
                )
        if problems:
            return Invalid(envelope.event_id, envelope.entity, problems)
        return Valid(envelope, schema, record)


def report(result: Valid | Invalid) -> dict[str, Any]:
    """A validation result in the public shape of `eduhub validate`; serialise it with `schemas.dumps`
    (the record is still the Avro datum: dates, timestamps and decimals become JSON there)."""
    if isinstance(result, Valid):
        envelope = result.envelope
        return {"event_id": envelope.event_id, "valid": True, "topic": result.entity.topic, "key": envelope.key,
                "record": result.record}
    return {"event_id": result.event_id, "valid": False, "errors": [p.as_dict() for p in result.problems]}


class ValidateStage:
    """Reads `ingest.<source>` topics and writes canonical topics or DLQs, one transaction a batch.

    Each batch's output records and its input offsets commit atomically (Kafka transactions),
    so after any crash every input record is in exactly one output for read_committed readers.
    Sends are not awaited one by one: the transaction commit waits for all of them at once.
    """

    def __init__(self, *, validator: Validator, schema_ids: dict[str, int], bootstrap_servers: str,
                 sources: list[str], group_id: str, transactional_id: str, metrics: HubMetrics,
                 batch_max_records: int = 20_000, batch_max_wait_ms: int = 50, topic_prefix: str = "") -> None:
        self.validator = validator
        # Output topics get this prefix; only the benchmark sets it, to keep its output apart.
        self.topic_prefix = topic_prefix
        self.schema_ids = schema_ids
        self.metrics = metrics
        self.group_id = group_id
        self.topics = [ingest_topic(s) for s in sources]
        self.batch_max_records = batch_max_records
        self.batch_max_wait_ms = batch_max_wait_ms
        self.consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            transactional_id=transactional_id,
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=512 * 1024,
        )
        self.writer = BatchWriter(self.producer)
        self.output_topics = [topic_prefix + e.topic for e in validator.catalogue.entities.values()]
        self.output_topics += [topic_prefix + dlq_topic(s) for s in sources]
        self.processed = 0
        self.first_batch_at: float | None = None  # perf_counter() of the first batch read
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self.consumer.stop()
        await self.producer.stop()

    @property
    def assigned(self) -> int:
        return len(self.consumer.assignment())

    async def run(self) -> None:
        """Process batches until stopped. A bad record goes to the DLQ; it never stops a partition."""
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(
                timeout_ms=self.batch_max_wait_ms or 1, max_records=self.batch_max_records
            )
            self.metrics.assigned_partitions.labels(STAGE).set(self.assigned)
            if not batches:
                continue
            started = time.perf_counter()
            if self.first_batch_at is None:
                self.first_batch_at = started
            try:
                await self._process(batches)
            except KafkaError:
                # The transaction aborted: nothing of this batch is visible. Rewind to the last
                # committed offsets so the batch is read and processed again.
                log.exception("validate batch failed; re-reading from the committed offsets")
                self.writer.discard()
                await self._rewind(list(batches))
                await asyncio.sleep(1)
                continue
            self.metrics.batch_seconds.labels(STAGE).observe(time.perf_counter() - started)

    async def _rewind(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)

    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        now = datetime.now(timezone.utc)
        offsets: dict[TopicPartition, int] = {}
        # Counted locally and added to the metrics once a batch: a labelled inc() per event
        # costs more than the rest of the bookkeeping.
        counts: Counter[tuple[str, str, str]] = Counter()
        writer = self.writer
        # Records get the broker-visible time of writing (timestamp None), never occurred_at:
        # time-based retention would delete at once a record about a change months old.
        append = writer.append
        prefix = self.topic_prefix
        await writer.prepare(self.output_topics, refresh=True)
        async with self.producer.transaction():
            for tp, messages in batches.items():
                source = source_of_ingest_topic(tp.topic)
                dead_letters = prefix + dlq_topic(source)
                for message in messages:
                    try:
                        result = self.validator.validate(message.value, topic_source=source, now=now)
                    except Exception as exc:  # a bug of ours must not stop the partition either
                        log.exception("validator failed on %s[%d]@%d", tp.topic, tp.partition, message.offset)
                        result = Invalid(None, UNKNOWN, [Problem("", "hub.internal_error", repr(exc))])
                    if isinstance(result, Valid):
                        envelope = result.envelope
                        value = None
                        if result.record is not None:
                            value = result.entity.encode(self.schema_ids[envelope.entity], result.record)
                        append(prefix + result.entity.topic, envelope.key.encode(), value,
                                     None, envelope.headers())
                        counts[(source, envelope.entity, VALID)] += 1
                    else:
                        headers = dlq.dead_letter_headers(
                            result.problems, stage=STAGE, topic=tp.topic, partition=tp.partition,
                            offset=message.offset, event_id=result.event_id, original=message.headers or (),
                        )
                        append(dead_letters, message.key, message.value, None, headers)
                        counts[(source, result.entity, result.problems[0].rule)] += 1
                offsets[tp] = messages[-1].offset + 1
                await writer.drain()
            await writer.flush()
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)
        self._count(counts)
        self.processed += sum(len(m) for m in batches.values())

    def _count(self, counts: Counter[tuple[str, str, str]]) -> None:
        metrics = self.metrics
        dlq_writes: Counter[str] = Counter()
        for (source, entity, outcome), n in counts.items():
            metrics.ingested.labels(source, entity).inc(n)
            if outcome == VALID:
                metrics.valid.labels(source, entity).inc(n)
            else:
                metrics.invalid.labels(source, entity, outcome).inc(n)
                dlq_writes[source] += n
        for source, n in dlq_writes.items():
            metrics.dlq_writes.labels(source, STAGE).inc(n)

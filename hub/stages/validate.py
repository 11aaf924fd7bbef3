"""The validate stage: ingest envelopes → canonical Avro records, or dead letters with reasons."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from aiokafka import TopicPartition

from hub.contract import dlq
from hub.stages.dedup import DedupWindow
from hub.contract.envelope import Envelope, Problem, check_envelope, event_id_of, read_json, text_problems
from hub.core.metrics import HubMetrics
from hub.contract.rules import RuleContext, apply_rules
from hub.contract.schemas import Catalogue, EntitySchema
from hub.kafka.stage import TransactionalStage
from hub.kafka.clients import KafkaClients
from hub.contract.topics import dlq_topic, ingest_topic, source_of_ingest_topic

STAGE = "validate"
UNKNOWN = "unknown"
VALID = ""  # the outcome key of a valid event in the per-batch counts
DUPLICATE = "\0duplicate"  # the outcome key of a valid event whose event_id was accepted before
NO_KAFKA_KEY = object()  # offline validation: there is no Kafka record key to compare with
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

    def validate(self, raw: bytes | None, topic_source: str | None = None, now: datetime | None = None,
                 kafka_key: bytes | None | object = NO_KAFKA_KEY) -> Valid | Invalid:
        """Valid or Invalid for any input whatever; `kafka_key` is the ingest record's key, which must be
        the envelope's key (else the record sits in another key's partition and per-key order breaks)."""
        if raw is None:
            return Invalid(None, UNKNOWN, [Problem("", "envelope.empty", "the record has no value")])
        doc, problem = read_json(raw)
        if problem is not None:
            return Invalid(None, UNKNOWN, [problem])
        problems = text_problems(raw, doc)
        if problems:
            return self._invalid(doc, problems)
        envelope, problems = check_envelope(
            doc, entities=self.catalogue.names, sources=self.sources, topic_source=topic_source,
            now=now or self._clock(),
        )
        if envelope is None:
            return self._invalid(doc, problems)
        schema = self.catalogue[envelope.entity]
        record = None
        if envelope.data is not None:
            record, problems = schema.to_record(envelope.data)
            if record is not None:
                problems = apply_rules(envelope.entity, record, self.context)
                key = schema.key_of(record)
                if key != envelope.key:
                    problems.append(
                        Problem("key", "envelope.key_mismatch",
                                f"key {envelope.key!r} differs from the key built from data: {key!r}")
                    )
        if kafka_key is not NO_KAFKA_KEY:
            if kafka_key is None:
                problems.append(Problem("key", "envelope.kafka_key_missing",
                                        "the Kafka record has no key; publish it keyed by the envelope's key"))
            elif kafka_key != envelope.key.encode():
                problems.append(Problem("key", "envelope.kafka_key_mismatch",
                                        f"the Kafka record's key differs from the envelope's key {envelope.key!r}"))
        if problems:
            return Invalid(envelope.event_id, envelope.entity, problems)
        return Valid(envelope, schema, record)

    def _invalid(self, doc: Any, problems: list[Problem]) -> Invalid:
        entity = doc.get("entity") if isinstance(doc, dict) else None
        event_id = event_id_of(doc)
        if any(p.field == "event_id" for p in problems):
            event_id = None  # not text the DLQ headers could carry
        known = isinstance(entity, str) and entity in self.catalogue.names  # a hostile entity may be a list
        return Invalid(event_id, entity if known else UNKNOWN, problems)


def report(result: Valid | Invalid) -> dict[str, Any]:
    """A validation result in the public shape of `eduhub validate`; serialise it with `schemas.dumps`
    (the record is still the Avro datum: dates, timestamps and decimals become JSON there)."""
    if isinstance(result, Valid):
        envelope = result.envelope
        return {"event_id": envelope.event_id, "valid": True, "topic": result.entity.topic, "key": envelope.key,
                "record": result.record}
    return {"event_id": result.event_id, "valid": False, "errors": [p.as_dict() for p in result.problems]}


class ValidateStage(TransactionalStage):
    """Reads `ingest.<source>` topics and writes canonical topics or DLQs, one transaction a batch:
    every input record ends in exactly one of its canonical topic or its DLQ. A bad record goes to
    the DLQ; it never stops a partition."""

    stage = STAGE

    def __init__(self, *, validator: Validator, schema_ids: dict[str, int], kafka: KafkaClients,
                 sources: list[str], group_id: str, transactional_prefix: str, metrics: HubMetrics,
                 batch_max_records: int = 20_000, batch_max_wait_ms: int = 50, topic_prefix: str = "",
                 dedup: DedupWindow | None = None) -> None:
        outputs = [topic_prefix + e.topic for e in validator.catalogue.entities.values()]
        outputs += [topic_prefix + dlq_topic(s) for s in sources]
        if dedup is not None:
            outputs.append(dedup.topic)
        super().__init__(topics=[ingest_topic(s) for s in sources], kafka=kafka,
                         group_id=group_id, transactional_prefix=transactional_prefix, metrics=metrics,
                         output_topics=outputs, batch_max_records=batch_max_records,
                         batch_max_wait_ms=batch_max_wait_ms)
        self.validator = validator
        # Output topics get this prefix; only the benchmark sets it, to keep its output apart.
        self.topic_prefix = topic_prefix
        self.schema_ids = schema_ids
        self.dedup = dedup
        self._refused = Invalid(None, UNKNOWN, [])  # why _output() refused the record it was last given

    async def process(self, batches: dict[TopicPartition, list[Any]]) -> Counter[tuple[str, str, str]]:
        """Returns the batch's outcomes by (source, entity, outcome), added to the metrics once its
        transaction committed (a labelled inc() per event costs more than the rest of the bookkeeping)."""
        now = datetime.now(timezone.utc)
        counts: Counter[tuple[str, str, str]] = Counter()
        writer = self.writer
        # Records get the broker-visible time of writing (timestamp None), never occurred_at:
        # time-based retention would delete at once a record about a change months old.
        append = writer.append
        prefix = self.topic_prefix
        dedup = self.dedup
        now_s = now.timestamp()
        for tp, messages in batches.items():
            source = source_of_ingest_topic(tp.topic)
            dead_letters = prefix + dlq_topic(source)
            repeated = dedup.checker(tp, now_s) if dedup is not None else None
            for message in messages:
                output = self._output(message, source, now, prefix)
                if output is not None:
                    topic, key, value, headers, entity, event_id = output
                    # Only accepted events enter the window: a rejected event may be re-sent, fixed, under
                    # the same event_id. Checked last: every step that could refuse the event is behind us.
                    if repeated is not None and repeated(event_id):
                        counts[(source, entity, DUPLICATE)] += 1
                        continue
                    append(topic, key, value, None, headers)
                    counts[(source, entity, VALID)] += 1
                    continue
                result = self._refused
                headers = dlq.dead_letter_headers(
                    result.problems, stage=STAGE, topic=tp.topic, partition=tp.partition,
                    offset=message.offset, event_id=result.event_id, original=message.headers or (),
                )
                append(dead_letters, message.key, dlq.fit(message.value, message.key, headers), None, headers)
                counts[(source, result.entity, result.problems[0].rule)] += 1
            await writer.drain()
        if dedup is not None:
            dedup.write(writer, int(now_s * 1000), batches.keys())
        return counts

    def _output(self, message: Any, source: str, now: datetime, prefix: str
                ) -> tuple[str, bytes, bytes | None, list[tuple[str, bytes]], str, str] | None:
        """The canonical record (topic, key, value, headers, entity, event_id) of a valid event; None for a dead letter,
        whose Invalid is left in `self._refused`. Never raises: whatever a record holds, it ends somewhere."""
        entity = UNKNOWN
        try:
            result = self.validator.validate(message.value, topic_source=source, now=now, kafka_key=message.key)
            if isinstance(result, Invalid):
                self._refused = result
                return None
            envelope = result.envelope
            entity = envelope.entity
            value = None
            if result.record is not None:
                try:
                    value = result.entity.encode(self.schema_ids[entity], result.record)
                except Exception as exc:  # a value the checks let through but fastavro refuses
                    self._refused = Invalid(envelope.event_id, entity, [Problem(
                        "data", "schema.encode_failed", f"the record does not encode as Avro: {type(exc).__name__}: {exc}")])
                    return None
                if len(value) > dlq.MAX_RECORD_BYTES:
                    self._refused = Invalid(envelope.event_id, entity, [Problem(
                        "data", "schema.record_too_large",
                        f"the canonical record has {len(value)} bytes; at most {dlq.MAX_RECORD_BYTES}")])
                    return None
            return (prefix + result.entity.topic, envelope.key.encode(), value, envelope.headers(), entity,
                    envelope.event_id)
        except Exception as exc:  # a bug of ours must not stop the partition either
            log.exception("validate failed on %s[%d]@%d", message.topic, message.partition, message.offset)
            self._refused = Invalid(None, entity, [Problem("", "hub.internal_error", f"{type(exc).__name__}: {exc}")])
            return None

    def committed(self, batches: dict[TopicPartition, list[Any]], outcome: Counter[tuple[str, str, str]]) -> None:
        metrics = self.metrics
        dlq_writes: Counter[str] = Counter()
        if self.dedup is not None:
            self.dedup.committed(batches.keys())
        for (source, entity, result), n in outcome.items():
            metrics.ingested.labels(source, entity).inc(n)
            if result == VALID:
                metrics.valid.labels(source, entity).inc(n)
            elif result == DUPLICATE:
                metrics.deduplicated.labels(source, entity).inc(n)
            else:
                metrics.invalid.labels(source, entity, result).inc(n)
                dlq_writes[source] += n
        for source, n in dlq_writes.items():
            metrics.dlq_writes.labels(source, STAGE).inc(n)

    def aborted(self, batches: dict[TopicPartition, list[Any]]) -> None:
        if self.dedup is not None:
            self.dedup.aborted(batches.keys())

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        if self.dedup is not None:
            await self.dedup.restore(self.kafka, partitions)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        if self.dedup is not None:
            self.dedup.revoke(partitions)

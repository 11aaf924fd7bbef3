"""The route stage: canonical records → each subscriber's topic, projected and masked, with an audit trail."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import fastavro
from aiokafka import TopicPartition

from hub.contract import dlq
from hub.contract.topics import AUDIT_TOPIC
from hub.routing.audit import REFS_HEADER, audit_entry, audit_record_key, audit_refs
from hub.contract.envelope import HEADER_EVENT_ID, HEADER_OCCURRED_AT, HEADER_SOURCE, header_value, parse_timestamp
from hub.core.metrics import HubMetrics
from hub.contract.registry import RecordError, SchemaRegistry
from hub.contract.schemas import Catalogue, EntitySchema, encode_wire, wire_header
from hub.kafka.stage import TransactionalStage
from hub.kafka.clients import KafkaClients
from hub.routing.policy import SubscriptionPolicy
from hub.contract.topics import ROUTE_DLQ_TOPIC

STAGE = "route"
SUBSCRIBER_HEADER = "eduhub.subscriber"
DEAD_LETTER = "\0dead letter"  # the entity slot of a per-batch count of dead letters, by source
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Tally:
    """What one batch routed, counted into the metrics once its transaction committed."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (subscriber, entity) or (source, DEAD_LETTER)
    kafka_delivered: list[tuple[str, str | None]] = field(default_factory=list)  # (subscriber, occurred_at) for latency


class RouteStage(TransactionalStage):
    """Reads every canonical topic and writes, per matching subscription, the projected record to
    `sub.<subscriber>.<entity>` plus an audit record to `hub.audit`, one transaction a batch
    (outputs, audit and input offsets commit together: no duplicates for read_committed readers)."""

    stage = STAGE

    def __init__(self, *, catalogue: Catalogue, policies: list[SubscriptionPolicy], registry: SchemaRegistry,
                 schema_ids: dict[tuple[str, str], int], kafka: KafkaClients, group_id: str,
                 transactional_prefix: str, metrics: HubMetrics, audit_key: bytes,
                 canonical_ids: dict[str, int] | None = None,
                 batch_max_records: int = 20_000, batch_max_wait_ms: int = 50, topic_prefix: str = "") -> None:
        # Input and output topics get `topic_prefix`; only the benchmark sets it, to keep its topics apart.
        self.topic_prefix = topic_prefix
        self.audit_topic = topic_prefix + AUDIT_TOPIC
        self.dlq_topic = topic_prefix + ROUTE_DLQ_TOPIC
        self.by_topic = {topic_prefix + e.topic: e for e in catalogue.entities.values()}
        super().__init__(topics=list(self.by_topic), kafka=kafka, group_id=group_id,
                         transactional_prefix=transactional_prefix, metrics=metrics,
                         output_topics=[self.audit_topic, self.dlq_topic]
                         + [topic_prefix + p.topic(e) for p in policies for e in p.entities],
                         batch_max_records=batch_max_records, batch_max_wait_ms=batch_max_wait_ms)
        self.policies = policies
        self.registry = registry
        self.schema_ids = schema_ids
        # Records are read as the current canonical schema (id → parsed): one written before a compatible
        # change is resolved to it, so projection sees every field of today's schema.
        self.readers = {e.entity: ((canonical_ids or {}).get(e.entity, -1), e.parsed)
                        for e in catalogue.entities.values()}
        self.audit_key = audit_key
        # The wire header of records written with today's canonical schema: their body is passed on as
        # it is to subscribers that receive the whole record (see SubscriptionPolicy.receives_whole).
        self._current_headers = {entity: wire_header(schema_id) for entity, (schema_id, _) in self.readers.items()
                                 if schema_id >= 0}
        self._parsed_schemas: dict[tuple[str, str], Any] = {}
        self._by_kafka = {p.config.id for p in policies if p.config.delivery.kind == "kafka"}

    def _parsed(self, policy: SubscriptionPolicy, entity: str) -> Any:
        """The fastavro-parsed projected schema of a subscriber's entity (parsed once)."""
        key = (policy.config.id, entity)
        parsed = self._parsed_schemas.get(key)
        if parsed is None:
            parsed = self._parsed_schemas[key] = fastavro.parse_schema(policy.projected_schema(entity))
        return parsed

    async def process(self, batches: dict[TopicPartition, list[Any]]) -> Tally:
        writer = self.writer
        tally = Tally()
        now = datetime.now(timezone.utc).isoformat()
        for tp, messages in batches.items():
            entity = self.by_topic[tp.topic]
            for message in messages:
                try:
                    record = await self._decode(entity, message)
                except RecordError as exc:  # the record's own bytes: no subscriber can get it
                    self._dead_letter(message, exc.problem, tally)
                    continue
                # RegistryError propagates: the registry is down, the batch aborts and is retried later.
                self._route(entity, message, record, now, tally)
            await writer.drain()
        return tally

    async def _decode(self, entity: EntitySchema, message: Any) -> dict[str, Any] | None:
        """The canonical record (None for a tombstone), read as today's schema; RecordError if it cannot be."""
        if message.key is None:
            raise RecordError("record.null_key", "a canonical record must have the entity key as its Kafka key")
        try:
            message.key.decode()
        except UnicodeDecodeError as exc:
            raise RecordError("record.invalid_key", f"the Kafka key is not UTF-8: {exc}") from None
        if message.value is None:
            return None
        record = await self.registry.decode_record(message.value, self.readers[entity.entity])
        if not isinstance(record, dict):
            raise RecordError("record.avro_decode", f"the value decodes to {type(record).__name__}, not a record")
        return record

    def _route(self, entity: EntitySchema, message: Any, record: dict[str, Any] | None, now: str,
               tally: Tally) -> None:
        """Write the record for each matching subscriber; a subscriber whose projection or encoding fails
        gets a dead letter instead, and the other subscribers still get the record."""
        headers = list(message.headers or ())
        event_id = header_value(headers, HEADER_EVENT_ID)
        occurred = header_value(headers, HEADER_OCCURRED_AT)
        entity_key = message.key.decode()
        value = message.value
        # Decoded with the same schema and nothing left over (decode_body checks): the body as it is.
        body = value[5:] if value is not None and value[:5] == self._current_headers.get(entity.entity) else None
        refs = None  # the audit references of this record: the same for every subscriber, hashed once
        for policy in self.policies:
            if entity.entity not in policy.entities:
                continue
            try:
                output = self._project(policy, entity.entity, entity_key, record, body)
            except RecordError as exc:
                log.warning("route: %s[%d]@%d for %s: %s", message.topic, message.partition, message.offset,
                            policy.config.id, exc.problem.message)
                self._dead_letter(message, exc.problem, tally, subscriber=policy.config.id)
                continue
            if output is None:
                continue
            key, value = output
            out_headers = [*headers, (SUBSCRIBER_HEADER, policy.config.id.encode())]
            if refs is None:
                refs = audit_refs(self.audit_key, entity_key, record)
            if policy.config.delivery.kind == "http":
                # The topic is the subscriber's queue: the delivery stage audits the outcome.
                out_headers.append((REFS_HEADER, json.dumps(refs).encode()))
            else:
                # keyed by the entity key's reference: hub.audit never holds a key in clear
                self.writer.append(self.audit_topic, audit_record_key(refs), audit_entry(
                    refs, subscriber=policy.config.id, entity=entity.entity, event_id=event_id, at=now,
                    outcome="delivered"), None, [])
                tally.kafka_delivered.append((policy.config.id, occurred))
            self.writer.append(self.topic_prefix + policy.topic(entity.entity), key, value, None, out_headers)
            tally.counts[(policy.config.id, entity.entity)] += 1

    def _project(self, policy: SubscriptionPolicy, entity: str, entity_key: str, record: dict[str, Any] | None,
                 body: bytes | None = None) -> tuple[bytes, bytes | None] | None:
        """(key, value) of the subscriber's record, None when its filter leaves the record out; `body` is
        the canonical Avro body when the record was written with today's schema."""
        try:
            if record is None:  # a delete: every subscriber of the entity gets the tombstone
                return policy.key_for_delete(entity, entity_key).encode(), None
            if body is not None and policy.receives_whole(entity):  # the same bytes, under its schema id
                if not policy.admits(entity, record):
                    return None
                return (policy.key_of(entity, record).encode(),
                        wire_header(self.schema_ids[(policy.config.id, entity)]) + body)
            projected = policy.apply(entity, record)
            if projected is None:
                return None
            key = policy.key_of(entity, projected).encode()
        except Exception as exc:  # noqa: BLE001 — a record the policy cannot handle must not stop the stage
            raise RecordError("record.project_failed", f"projection for subscriber {policy.config.id!r} failed: "
                                                       f"{type(exc).__name__}: {exc}") from None
        try:
            return key, encode_wire(self.schema_ids[(policy.config.id, entity)], self._parsed(policy, entity),
                                    projected)
        except Exception as exc:  # noqa: BLE001
            raise RecordError("record.encode_failed", f"the projected record for subscriber {policy.config.id!r} "
                                                      f"does not encode: {type(exc).__name__}: {exc}") from None

    def _dead_letter(self, message: Any, problem: Any, tally: Tally, subscriber: str | None = None) -> None:
        """`hub.dlq.route` gets the original record with the reason (and the subscriber that missed it)."""
        original = list(message.headers or ())
        headers = dlq.dead_letter_headers(
            [problem], stage=STAGE, topic=message.topic, partition=message.partition, offset=message.offset,
            event_id=header_value(original, HEADER_EVENT_ID), original=original)
        if subscriber is not None:
            headers.append((SUBSCRIBER_HEADER, subscriber.encode()))
        self.writer.append(self.dlq_topic, message.key, dlq.fit(message.value, message.key, headers), None, headers)
        tally.counts[(header_value(original, HEADER_SOURCE) or "", DEAD_LETTER)] += 1

    def committed(self, batches: dict[TopicPartition, list[Any]], outcome: Tally) -> None:
        for (subscriber, entity_name), n in outcome.counts.items():
            if entity_name == DEAD_LETTER:  # here `subscriber` is the source the record came from
                self.metrics.dlq_writes.labels(subscriber, STAGE).inc(n)
                continue
            self.metrics.routed.labels(subscriber, entity_name).inc(n)
            if subscriber in self._by_kafka:  # a Kafka subscriber has it once the transaction committed
                self.metrics.delivered.labels(subscriber, entity_name).inc(n)
        now = time.time()
        # An event reaches several subscribers: its timestamp is parsed once, each histogram looked up once.
        ages: dict[str | None, float | None] = {}
        observers: dict[str, Any] = {}
        for subscriber, occurred in outcome.kafka_delivered:
            if occurred not in ages:
                at = parse_timestamp(occurred)
                ages[occurred] = None if at is None else max(0.0, now - at.timestamp())
            age = ages[occurred]
            if age is not None:
                observe = observers.get(subscriber)
                if observe is None:
                    observe = observers[subscriber] = self.metrics.end_to_end_seconds.labels(subscriber).observe
                observe(age)

"""The route stage: canonical records → each subscriber's topic, projected and masked, with an audit trail."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import fastavro
from aiokafka import TopicPartition

from hub.audit import AUDIT_TOPIC, REFS_HEADER, audit_entry, audit_refs
from hub.envelope import HEADER_EVENT_ID, HEADER_OCCURRED_AT, header_value, parse_timestamp
from hub.metrics import HubMetrics
from hub.registry import SchemaRegistry
from hub.schemas import Catalogue, decode_body, encode_wire, split_wire
from hub.stage import TransactionalStage
from hub.subscriptions import SubscriptionPolicy

STAGE = "route"
SUBSCRIBER_HEADER = "eduhub.subscriber"


class RouteStage(TransactionalStage):
    """Reads every canonical topic and writes, per matching subscription, the projected record to
    `sub.<subscriber>.<entity>` plus an audit record to `hub.audit`, one transaction a batch
    (outputs, audit and input offsets commit together: no duplicates for read_committed readers)."""

    stage = STAGE

    def __init__(self, *, catalogue: Catalogue, policies: list[SubscriptionPolicy], registry: SchemaRegistry,
                 schema_ids: dict[tuple[str, str], int], bootstrap_servers: str, group_id: str,
                 transactional_id: str, metrics: HubMetrics, audit_key: bytes,
                 batch_max_records: int = 20_000, batch_max_wait_ms: int = 50) -> None:
        self.by_topic = {e.topic: e for e in catalogue.entities.values()}
        super().__init__(topics=list(self.by_topic), bootstrap_servers=bootstrap_servers, group_id=group_id,
                         transactional_id=transactional_id, metrics=metrics,
                         output_topics=[AUDIT_TOPIC] + [p.topic(e) for p in policies for e in p.entities],
                         batch_max_records=batch_max_records, batch_max_wait_ms=batch_max_wait_ms)
        self.policies = policies
        self.registry = registry
        self.schema_ids = schema_ids
        self.audit_key = audit_key
        self._parsed_schemas: dict[tuple[str, str], Any] = {}
        self._counts: Counter[tuple[str, str]] = Counter()
        self._kafka_delivered: list[tuple[str, str | None]] = []  # (subscriber, occurred_at header) for latency
        self._by_kafka = {p.config.id for p in policies if p.config.delivery.kind == "kafka"}

    def _parsed(self, policy: SubscriptionPolicy, entity: str) -> Any:
        """The fastavro-parsed projected schema of a subscriber's entity (parsed once)."""
        key = (policy.config.id, entity)
        parsed = self._parsed_schemas.get(key)
        if parsed is None:
            parsed = self._parsed_schemas[key] = fastavro.parse_schema(policy.projected_schema(entity))
        return parsed

    async def _record(self, value: bytes) -> dict[str, Any]:
        schema_id, body = split_wire(value)
        return decode_body(await self.registry.parsed_schema(schema_id), body)

    async def process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        writer = self.writer
        counts = self._counts
        counts.clear()
        self._kafka_delivered.clear()
        now = datetime.now(timezone.utc).isoformat()
        for tp, messages in batches.items():
            entity = self.by_topic[tp.topic]
            for message in messages:
                headers = list(message.headers or ())
                event_id = header_value(headers, HEADER_EVENT_ID)
                occurred = header_value(headers, HEADER_OCCURRED_AT)
                record = None if message.value is None else await self._record(message.value)
                refs = None  # the audit references of this record: the same for every subscriber, hashed once
                for policy in self.policies:
                    if entity.entity not in policy.entities:
                        continue
                    if record is None:  # a delete: every subscriber of the entity gets the tombstone
                        key = policy.key_for_delete(entity.entity, message.key.decode())
                        value = None
                    else:
                        projected = policy.apply(entity.entity, record)
                        if projected is None:
                            continue
                        key = policy.key_of(entity.entity, projected)
                        value = encode_wire(self.schema_ids[(policy.config.id, entity.entity)],
                                            self._parsed(policy, entity.entity), projected)
                    out_headers = [*headers, (SUBSCRIBER_HEADER, policy.config.id.encode())]
                    if refs is None:
                        refs = audit_refs(self.audit_key, message.key.decode(), record)
                    if policy.config.delivery.kind == "http":
                        # The topic is the subscriber's queue: the delivery stage audits the outcome.
                        out_headers.append((REFS_HEADER, json.dumps(refs).encode()))
                    else:
                        writer.append(AUDIT_TOPIC, message.key, audit_entry(
                            refs, subscriber=policy.config.id, entity=entity.entity, event_id=event_id, at=now,
                            outcome="delivered"), None, [])
                        self._kafka_delivered.append((policy.config.id, occurred))
                    writer.append(policy.topic(entity.entity), key.encode(), value, None, out_headers)
                    counts[(policy.config.id, entity.entity)] += 1
            await writer.drain()

    def committed(self, batches: dict[TopicPartition, list[Any]]) -> None:
        for (subscriber, entity_name), n in self._counts.items():
            self.metrics.routed.labels(subscriber, entity_name).inc(n)
            if subscriber in self._by_kafka:  # a Kafka subscriber has it once the transaction committed
                self.metrics.delivered.labels(subscriber, entity_name).inc(n)
        now = time.time()
        for subscriber, occurred in self._kafka_delivered:
            at = parse_timestamp(occurred)
            if at is not None:
                self.metrics.end_to_end_seconds.labels(subscriber).observe(max(0.0, now - at.timestamp()))

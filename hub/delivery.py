"""HTTP delivery: a subscriber's queue topic → signed POSTs, with retries, per-key order, a circuit breaker and a DLQ."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub import dlq
from hub.audit import AUDIT_TOPIC, REFS_HEADER, audit_entry
from hub.envelope import (HEADER_EVENT_ID, HEADER_OCCURRED_AT, HEADER_OP, HEADER_SOURCE, Problem, header_value,
                          parse_timestamp)
from hub.metrics import HubMetrics
from hub.registry import SchemaRegistry
from hub.schemas import to_json
from hub.signing import signed_headers
from hub.stage import export_lag
from hub.subscriptions import HttpDelivery, SubscriptionPolicy
from hub.topics import subscriber_dlq_topic

STAGE = "deliver"
REJECTED = "delivery.rejected"
log = logging.getLogger(__name__)
# Answers that say "not now" rather than "not this event": they never use up an event's attempts,
# so a subscriber that is down or overloaded for hours loses nothing (events wait in Kafka).
UNAVAILABLE_STATUSES = frozenset({408, 425, 429, 502, 503, 504})


class CircuitBreaker:
    """Closed → open after `failures` consecutive failures; open for `open_s`, then half-open: one
    probe request; its success closes the breaker, its failure opens it again."""

    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.open_s = open_s
        self.clock = clock
        self.state = "closed"
        self.consecutive = 0
        self.open_until = 0.0
        self._probing = False

    def allow(self) -> tuple[bool, float]:
        """(may send now, else seconds to wait before asking again); a True in half-open is the probe."""
        if self.state == "closed":
            return True, 0.0
        if self.state == "open":
            remaining = self.open_until - self.clock()
            if remaining > 0:
                return False, remaining
            self.state = "half_open"
        if self._probing:
            return False, 0.05
        self._probing = True
        return True, 0.0

    async def acquire(self) -> None:
        while True:
            allowed, wait = self.allow()
            if allowed:
                return
            await asyncio.sleep(min(wait, 1.0))

    def success(self) -> None:
        self.state, self.consecutive, self._probing = "closed", 0, False

    def failure(self) -> None:
        self.consecutive += 1
        self._probing = False
        if self.state == "half_open" or self.consecutive >= self.failures:
            self.state = "open"
            self.open_until = self.clock() + self.open_s


def backoff_s(attempt: int, initial_s: float, max_s: float, rand: Callable[[float, float], float] = random.uniform) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial·2^(attempt-1))]."""
    return rand(0.0, min(max_s, initial_s * 2 ** (attempt - 1)))


class HttpDeliverer:
    """Delivers one HTTP subscriber's records, read from its `sub.<id>.<entity>` topics.

    Per batch: records are grouped by key; each key's records go one after the other (a key waits
    while its earlier event retries), keys go in parallel (up to `max_in_flight`). The consumer
    offsets are committed once every record of the batch was delivered or dead-lettered: at-least-
    once, and the body's `event_id` lets the receiver drop a repeat after a crash.
    A non-2xx answer is a failed attempt; after `max_attempts` the record goes to the subscriber's
    DLQ `hub.dlq.sub.<id>`. Connection errors, timeouts and 408/425/429/502/503/504 never use up
    attempts; together with 5xx they count towards the circuit breaker, which stops all sending
    while open.
    """

    def __init__(self, policy: SubscriptionPolicy, *, secret: bytes, bootstrap_servers: str,
                 registry: SchemaRegistry, metrics: HubMetrics, group_id: str | None = None, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        delivery = policy.config.delivery
        assert isinstance(delivery, HttpDelivery)
        self.policy = policy
        self.subscriber = policy.config.id
        self.delivery = delivery
        self.secret = secret
        self.registry = registry
        self.metrics = metrics
        self.sleep = sleep
        self.topics = [policy.topic(e) for e in sorted(policy.entities)]
        self.entity_of = {policy.topic(e): e for e in policy.entities}
        self.dlq_topic = subscriber_dlq_topic(self.subscriber)
        self.group_id = group_id or f"eduhub-deliver-{self.subscriber}"
        self.breaker = CircuitBreaker(delivery.breaker_failures, delivery.breaker_open_s)
        self.consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=bootstrap_servers, group_id=self.group_id,
                                         enable_auto_commit=False, auto_offset_reset="earliest",
                                         isolation_level="read_committed")
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
        self.client = httpx.AsyncClient(timeout=delivery.timeout_s)
        self.delivered = 0
        # Series exist from the start at 0, so dashboards and alerts see a healthy subscriber as 0, not as no data.
        for entity in policy.entities:
            for counter in (metrics.delivered, metrics.delivery_failures, metrics.delivery_dead_letters):
                counter.labels(self.subscriber, entity)
        metrics.circuit_open.labels(self.subscriber).set(0)
        self._next_offsets: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self.consumer.stop()
        await self.producer.stop()
        await self.client.aclose()

    @property
    def assigned(self) -> int:
        return len(self.consumer.assignment())

    async def run(self) -> None:
        semaphore = asyncio.Semaphore(self.delivery.max_in_flight)

        async def chain(messages: list[Any]) -> None:
            async with semaphore:
                for message in messages:
                    await self.deliver(message)

        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=500, max_records=self.delivery.batch_max_records)
            self.metrics.assigned_partitions.labels(f"{STAGE}:{self.subscriber}").set(self.assigned)
            if not batches:
                self._lag()
                continue
            by_key: dict[tuple[TopicPartition, bytes | None], list[Any]] = {}
            for tp, messages in batches.items():
                for message in messages:
                    by_key.setdefault((tp, message.key), []).append(message)
            await asyncio.gather(*(chain(messages) for messages in by_key.values()))
            await self.producer.flush()  # dead letters and audit records before the offsets
            offsets = {tp: messages[-1].offset + 1 for tp, messages in batches.items()}
            await self.consumer.commit(offsets)
            self._next_offsets.update(offsets)
            self._lag()

    def _lag(self) -> None:
        export_lag(self.metrics, self.consumer, self.group_id, self._next_offsets)

    def body(self, message: Any, record: dict[str, Any] | None) -> bytes:
        """The JSON the subscriber receives: the event's identity and the projected record (null for a delete)."""
        headers = message.headers
        return json.dumps({
            "event_id": header_value(headers, HEADER_EVENT_ID),
            "subscriber": self.subscriber,
            "entity": self.entity_of[message.topic],
            "key": message.key.decode() if message.key is not None else None,
            "op": header_value(headers, HEADER_OP),  # the envelope's op code, as the data dictionary defines it
            "occurred_at": header_value(headers, HEADER_OCCURRED_AT),
            "source": header_value(headers, HEADER_SOURCE),
            "record": None if record is None else to_json(record),
        }, ensure_ascii=False, separators=(",", ":")).encode()

    async def deliver(self, message: Any) -> None:
        """POST one record until it is accepted or dead-lettered (never raises for the subscriber's answers)."""
        record = None if message.value is None else await self.registry.decode(message.value)
        body = self.body(message, record)
        entity = self.entity_of[message.topic]
        attempts = 0
        tries = 0
        while True:
            await self.breaker.acquire()
            tries += 1
            problem = await self._post(body)
            if problem is None:
                self.breaker.success()
                self.metrics.circuit_open.labels(self.subscriber).set(0)
                self.delivered += 1
                self.metrics.delivered.labels(self.subscriber, entity).inc()
                self._observe_latency(message)
                await self._audit(message, entity, "delivered")
                return
            self.metrics.delivery_failures.labels(self.subscriber, entity).inc()
            unavailable, server_side, text = problem
            if unavailable or server_side:
                self.breaker.failure()
                self.metrics.circuit_open.labels(self.subscriber).set(int(self.breaker.state == "open"))
            if not unavailable:
                attempts += 1
                if attempts >= self.delivery.max_attempts:
                    await self._dead_letter(message, entity, text, attempts)
                    return
            if unavailable:
                log.info("delivery to %s: endpoint unavailable (%s); waiting, attempts unused", self.subscriber, text)
            else:
                log.info("delivery to %s refused (%s); attempt %d of %d", self.subscriber, text, attempts,
                         self.delivery.max_attempts)
            await self.sleep(backoff_s(tries, self.delivery.backoff_initial_s, self.delivery.backoff_max_s))

    async def _post(self, body: bytes) -> tuple[bool, bool, str] | None:
        """None when accepted, else (unavailable, server-side, description)."""
        headers = {"Content-Type": "application/json", **signed_headers(self.secret, int(time.time()), body)}
        try:
            response = await self.client.post(self.delivery.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return True, True, f"{type(exc).__name__}: {exc}".rstrip(": ")
        if 200 <= response.status_code < 300:
            return None
        text = f"HTTP {response.status_code}: {response.text[:200]}"
        return response.status_code in UNAVAILABLE_STATUSES, response.status_code >= 500, text

    def _observe_latency(self, message: Any) -> None:
        at = parse_timestamp(header_value(message.headers, HEADER_OCCURRED_AT))
        if at is not None:
            self.metrics.end_to_end_seconds.labels(self.subscriber).observe(max(0.0, time.time() - at.timestamp()))

    async def _audit(self, message: Any, entity: str, outcome: str) -> None:
        refs_text = header_value(message.headers, REFS_HEADER)
        refs = json.loads(refs_text) if refs_text else {"key_ref": None, "person_refs": []}
        entry = audit_entry(refs, subscriber=self.subscriber, entity=entity,
                            event_id=header_value(message.headers, HEADER_EVENT_ID),
                            at=datetime.now(timezone.utc).isoformat(), outcome=outcome)
        # The send is queued, not awaited to the broker: the batch's flush waits for it before the commit.
        await self.producer.send(AUDIT_TOPIC, entry, key=message.key)

    async def _dead_letter(self, message: Any, entity: str, text: str, attempts: int) -> None:
        problems = [Problem("", REJECTED, f"{self.delivery.url} refused the event {attempts} times; last: {text}")]
        headers = dlq.dead_letter_headers(
            problems, stage=STAGE, topic=message.topic, partition=message.partition, offset=message.offset,
            event_id=header_value(message.headers, HEADER_EVENT_ID), original=message.headers or ())
        await self.producer.send(self.dlq_topic, message.value, key=message.key, headers=headers)
        source = header_value(message.headers, HEADER_SOURCE) or ""
        self.metrics.dlq_writes.labels(source, STAGE).inc()
        self.metrics.delivery_dead_letters.labels(self.subscriber, entity).inc()
        await self._audit(message, entity, "dead_lettered")
        log.warning("event %s for %s dead-lettered to %s after %d attempts: %s",
                    header_value(message.headers, HEADER_EVENT_ID), self.subscriber, self.dlq_topic, attempts, text)


class DeliveryGroup:
    """Every HTTP subscriber's deliverer, started, run and stopped together (one worker service)."""

    def __init__(self, deliverers: list[HttpDeliverer]) -> None:
        self.deliverers = deliverers

    async def start(self) -> None:
        for deliverer in self.deliverers:
            await deliverer.start()

    async def run(self) -> None:
        await asyncio.gather(*(d.run() for d in self.deliverers))

    async def stop(self) -> None:
        for deliverer in self.deliverers:
            await deliverer.stop()

"""HTTP delivery: a subscriber's queue topic → signed POSTs, with retries, per-key order, a circuit breaker and a DLQ."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

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


class OffsetTracker:
    """A partition's fetched offsets, in order, and which are finished: the commit may advance only up
    to the oldest unfinished one, however many later ones (other keys) are done."""

    def __init__(self) -> None:
        self._offsets: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None

    def add(self, offset: int) -> None:
        self._offsets.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)

    def committable(self) -> int | None:
        """The offset to commit (the next to read after the finished prefix), or None if nothing new."""
        while self._offsets and self._offsets[0] in self._done:
            offset = self._offsets.popleft()
            self._done.discard(offset)
            self._next = offset + 1
        return self._next


class _Revocations(ConsumerRebalanceListener):
    def __init__(self, deliverer: "HttpDeliverer") -> None:
        self.deliverer = deliverer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.deliverer.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


class HttpDeliverer:
    """Delivers one HTTP subscriber's records, read from its `sub.<id>.<entity>` topics.

    Records are queued per key as they are fetched; each key's records go one after the other (a key
    waits while its earlier event retries) while every other key goes on, `max_in_flight` POSTs at
    once. Fetching pauses while `max_buffered` records wait. Every second the offsets are committed
    per partition up to the oldest record not yet delivered or dead-lettered: at-least-once, and
    the body's `event_id` lets the receiver drop a repeat after a crash.
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
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=self.group_id,
                                         enable_auto_commit=False, auto_offset_reset="earliest",
                                         isolation_level="read_committed")
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
        self.client = httpx.AsyncClient(timeout=delivery.timeout_s)
        # Series exist from the start at 0, so dashboards and alerts see a healthy subscriber as 0, not as no data.
        for entity in policy.entities:
            for counter in (metrics.delivered, metrics.delivery_failures, metrics.delivery_dead_letters):
                counter.labels(self.subscriber, entity)
        metrics.circuit_open.labels(self.subscriber).set(0)
        self._next_offsets: dict[TopicPartition, int] = {}  # committed positions
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._queues: dict[tuple[TopicPartition, bytes | None], deque[Any]] = {}
        self._drains: dict[tuple[TopicPartition, bytes | None], asyncio.Task] = {}
        self._buffered = 0
        self._failure: BaseException | None = None
        # POSTs in flight at once; a key waiting out its backoff or an open breaker holds no slot.
        self._slots = asyncio.Semaphore(delivery.max_in_flight)
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self.revoked(set(self._trackers))  # commit what was delivered before leaving the group
        await self.consumer.stop()
        await self.producer.stop()
        await self.client.aclose()

    @property
    def assigned(self) -> int:
        return len(self.consumer.assignment())

    async def run(self) -> None:
        """Fetch, deliver and commit until stopped; raises what broke a delivery (the worker then stops)."""
        self.consumer.subscribe(self.topics, listener=_Revocations(self))
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            if self._failure is not None:
                raise self._failure
            self._backpressure()
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.delivery.batch_max_records)
            self.metrics.assigned_partitions.labels(f"{STAGE}:{self.subscriber}").set(self.assigned)
            for tp, messages in batches.items():
                tracker = self._trackers.setdefault(tp, OffsetTracker())
                for message in messages:
                    tracker.add(message.offset)
                    self._buffered += 1
                    key = (tp, message.key)
                    self._queues.setdefault(key, deque()).append(message)
                    if key not in self._drains:
                        self._drains[key] = task = asyncio.create_task(self._drain(key))
                        task.add_done_callback(self._drained)
            if not batches or time.monotonic() - last_commit >= 1.0:
                await self._commit()
                last_commit = time.monotonic()
                self._lag()

    def _backpressure(self) -> None:
        """Stop fetching while too many records wait for delivery (a slow subscriber must not fill memory)."""
        assigned = self.consumer.assignment()
        if self._buffered >= self.delivery.max_buffered:
            self.consumer.pause(*assigned)
        elif self.consumer.paused():
            self.consumer.resume(*assigned)

    async def _drain(self, key: tuple[TopicPartition, bytes | None]) -> None:
        """Deliver one key's records in order; other keys' drains run meanwhile."""
        queue = self._queues[key]
        tracker = self._trackers[key[0]]
        try:
            while queue:
                message = queue[0]
                await self.deliver(message)
                queue.popleft()
                tracker.done(message.offset)
                self._buffered -= 1
            del self._queues[key]  # no await since the queue emptied: a record fetched later starts a new drain
        finally:
            if self._drains.get(key) is asyncio.current_task():
                del self._drains[key]

    def _drained(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()  # run() raises it: a bug must not silently stall a key

    async def _commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit, per partition, up to the oldest record not yet delivered or dead-lettered."""
        offsets = {}
        for tp in list(partitions if partitions is not None else self._trackers):
            tracker = self._trackers.get(tp)
            position = tracker.committable() if tracker is not None else None
            if position is not None and position != self._next_offsets.get(tp):
                offsets[tp] = position
        if not offsets:
            return
        await self.producer.flush()  # the dead letters and audit records of those records first
        await self.consumer.commit(offsets)
        self._next_offsets.update(offsets)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions go to another worker: stop their deliveries, commit what is done, forget the rest
        (the new owner delivers it again: at-least-once, the event_id lets the receiver drop repeats)."""
        tasks = [t for (tp, _), t in self._drains.items() if tp in partitions]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._commit(partitions)
        for key in [k for k in self._queues if k[0] in partitions]:
            self._buffered -= len(self._queues.pop(key))
        for tp in partitions:
            self._trackers.pop(tp, None)
            self._next_offsets.pop(tp, None)

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
            async with self._slots:
                problem = await self._post(body)
            if problem is None:
                self.breaker.success()
                self.metrics.circuit_open.labels(self.subscriber).set(0)
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

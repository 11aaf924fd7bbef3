"""HTTP delivery: subscriber queue → signed POSTs, at least once (receivers drop repeats by the body's event_id)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from hub.contract import dlq
from hub.contract.topics import AUDIT_TOPIC
from hub.routing.audit import audit_entry, audit_record_key
from hub.contract.envelope import HEADER_EVENT_ID, HEADER_OCCURRED_AT, HEADER_OP, HEADER_SOURCE, Problem, parse_timestamp
from hub.core.backoff import backoff_s, full_jitter
from hub.core.metrics import HubMetrics, export_lag
from hub.contract.registry import RecordError, RegistryError, SchemaRegistry, is_transient
from hub.contract.schemas import to_json
from hub.kafka.clients import KafkaClients
from hub.stages.breaker import CircuitBreaker
from hub.stages.http_support import audit_refs_of, describe, header_text, key_text, post
from hub.stages.key_queues import KeyQueues
from hub.routing.policy import SubscriptionPolicy
from hub.routing.subscriptions import HttpDelivery
from hub.contract.topics import ROUTE_DLQ_TOPIC, subscriber_dlq_topic

STAGE = "deliver"
REJECTED = "delivery.rejected"
INTERNAL_ERROR = "record.internal_error"
log = logging.getLogger(__name__)
T = TypeVar("T")


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
    while open. A record that can never be delivered whatever the subscriber answers (it does not
    decode, has no UTF-8 key, or its body cannot be built) goes to `hub.dlq.route` at once; an
    unreachable registry or broker is waited out. No record stops the others or the loop.
    """

    # aiokafka waits forever for an unreachable broker's commit or close: stop() must end all the same.
    close_timeout_s = 10.0
    kafka_backoff_s = (1.0, 30.0)  # first and longest wait after a failed fetch, commit or dead-letter send

    def __init__(self, policy: SubscriptionPolicy, *, secret: bytes, kafka: KafkaClients,
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
        self.kafka = kafka
        self.consumer = kafka.consumer(group_id=self.group_id, enable_auto_commit=False,
                                       auto_offset_reset="earliest", isolation_level="read_committed")
        self.producer = kafka.producer(enable_idempotence=True)
        self.client = httpx.AsyncClient(timeout=delivery.timeout_s)
        # Series exist from the start at 0, so dashboards and alerts see a healthy subscriber as 0, not as no data.
        for entity in policy.entities:
            for counter in (metrics.delivered, metrics.delivery_failures, metrics.delivery_dead_letters):
                counter.labels(self.subscriber, entity)
        metrics.circuit_open.labels(self.subscriber).set(0)
        self._next_offsets: dict[TopicPartition, int] = {}  # committed positions
        self._keys = KeyQueues(self._handle, self._drained)  # fetched records not yet delivered, per key
        self._committed_at = time.monotonic()
        self.turned_at = time.monotonic()  # liveness: when run()'s loop last turned
        # POSTs in flight at once; a key waiting out its backoff or an open breaker holds no slot.
        self._slots = asyncio.Semaphore(delivery.max_in_flight)
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.kafka.start(self.producer)
        await self.kafka.start(self.consumer)

    async def stop(self) -> None:
        """Commit what was delivered, then close the clients, each within `close_timeout_s`."""
        self._stopping.set()
        await self.revoked(set(self._keys.partitions))
        for close in (self.consumer.stop, self.producer.stop, self.client.aclose):
            try:
                await asyncio.wait_for(close(), self.close_timeout_s)
            except Exception as exc:  # noqa: BLE001 — a broker that is down must not hold the worker's exit
                log.warning("delivery to %s: closing failed (%s)", self.subscriber, describe(exc))

    def request_stop(self) -> None:
        """Finish the loop (stop() then commits and closes)."""
        self._stopping.set()

    @property
    def assigned(self) -> int:
        return len(self.consumer.assignment())

    async def run(self) -> None:
        """Fetch, deliver and commit until stopped. A Kafka failure is logged, counted and waited out
        (1 s doubling to 30 s); problems of single records never reach this loop."""
        self.consumer.subscribe(self.topics, listener=_Revocations(self))
        failures = 0
        while not self._stopping.is_set():
            self._turned()
            try:
                await self._turn()
            except KafkaError as exc:
                failures += 1
                await self._kafka_failed("fetch or commit", exc, failures)
            else:
                failures = 0

    def _turned(self) -> None:
        self.turned_at = time.monotonic()
        self.metrics.stage_last_turn.labels(f"{STAGE}:{self.subscriber}").set(time.time())

    async def _turn(self) -> None:
        self._backpressure()
        batches = await self.consumer.getmany(timeout_ms=200, max_records=self.delivery.batch_max_records)
        self.metrics.assigned_partitions.labels(f"{STAGE}:{self.subscriber}").set(self.assigned)
        for tp, messages in batches.items():
            self._keys.add(tp, messages)
        if not batches or time.monotonic() - self._committed_at >= 1.0:
            await self._commit()
            self._committed_at = time.monotonic()
            self._lag()

    async def _kafka_failed(self, what: str, exc: KafkaError, failures: int) -> None:
        delay = backoff_s(failures, *self.kafka_backoff_s)
        self.metrics.stage_errors.labels(STAGE, type(exc).__name__).inc()
        log.warning("delivery to %s: %s failed (%s); retrying in %.0f s", self.subscriber, what, describe(exc), delay)
        with contextlib.suppress(asyncio.TimeoutError):  # stop() need not wait out the backoff
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _kafka_retry(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()` until Kafka takes it; each failure is logged, counted and waited out."""
        failures = 0
        while True:
            try:
                return await operation()
            except KafkaError as exc:
                failures += 1
                await self._kafka_failed(what, exc, failures)

    def _backpressure(self) -> None:
        """Stop fetching while too many records wait for delivery (a slow subscriber must not fill memory)."""
        assigned = self.consumer.assignment()
        if self._keys.buffered >= self.delivery.max_buffered:
            self.consumer.pause(*assigned)
        elif self.consumer.paused():
            self.consumer.resume(*assigned)

    async def _handle(self, message: Any) -> None:
        """Deliver one record, or dead-letter it to the route DLQ when it can never be delivered."""
        try:
            await self.deliver(message)
        except RecordError as exc:
            await self._dead_letter(message, ROUTE_DLQ_TOPIC, exc.problem)
        except Exception as exc:  # a bug met on this record: it must not hold back the others
            self.metrics.stage_errors.labels(STAGE, type(exc).__name__).inc()
            problem = Problem("", INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            await self._dead_letter(message, ROUTE_DLQ_TOPIC, problem, exc_info=exc)

    def _drained(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Only a failure of dead-lettering itself gets here: the key's records stay queued and
        # uncommitted (nothing is lost); its next fetched record, or the next owner, starts it again.
        exc = task.exception()
        self.metrics.stage_errors.labels(STAGE, type(exc).__name__).inc()
        log.error("delivery to %s: a key's records stopped", self.subscriber, exc_info=exc)

    async def _commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit, per partition, up to the oldest record not yet delivered or dead-lettered."""
        offsets = {}
        for tp in list(partitions if partitions is not None else self._keys.partitions):
            position = self._keys.committable(tp)
            if position is not None and position != self._next_offsets.get(tp):
                offsets[tp] = position
        if not offsets:
            return
        try:
            await asyncio.wait_for(self._flush_and_commit(offsets), self.close_timeout_s)
        except asyncio.TimeoutError:
            raise KafkaTimeoutError(f"commit not done in {self.close_timeout_s:.0f} s") from None
        self._next_offsets.update(offsets)

    async def _flush_and_commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.producer.flush()  # the audit records of those records first
        await self.consumer.commit(offsets)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions go to another worker: stop their deliveries, commit what is done, forget the rest
        (the new owner delivers it again: at-least-once, the event_id lets the receiver drop repeats)."""
        await self._keys.cancel(partitions)
        try:
            await self._commit(partitions)
        except KafkaError as exc:  # the next owner starts from the last commit: a few records go twice
            log.warning("delivery to %s: commit on leaving partitions failed (%s)", self.subscriber, describe(exc))
        self._keys.forget(partitions)
        for tp in partitions:
            self._next_offsets.pop(tp, None)

    def _lag(self) -> None:
        export_lag(self.metrics, self.consumer, self.group_id, self._next_offsets)

    def body(self, message: Any, record: dict[str, Any] | None) -> bytes:
        """The JSON the subscriber receives: the event's identity and the projected record (null for a delete)."""
        return json.dumps({
            "event_id": header_text(message, HEADER_EVENT_ID),
            "subscriber": self.subscriber,
            "entity": self.entity_of[message.topic],
            "key": key_text(message.key),
            "op": header_text(message, HEADER_OP),  # the envelope's op code, as the data dictionary defines it
            "occurred_at": header_text(message, HEADER_OCCURRED_AT),
            "source": header_text(message, HEADER_SOURCE),
            "record": None if record is None else to_json(record),
        }, ensure_ascii=False, separators=(",", ":")).encode()

    async def _decoded(self, value: bytes | None) -> Any:
        """The record (None for a delete); RecordError when it never decodes, a registry that cannot
        answer now is waited out (the record is fine, the registry will be back)."""
        if value is None:
            return None
        waits = 0
        while True:
            try:
                return await self.registry.decode_record(value)
            except RegistryError as exc:
                if not is_transient(exc):
                    raise  # the registry refuses for good: an internal error of this record (see _handle)
                waits += 1
                self.metrics.stage_errors.labels(STAGE, "registry").inc()
                if waits == 1:  # once per record, not once per retry
                    log.warning("delivery to %s: the schema registry cannot answer (%s); retrying",
                                self.subscriber, exc)
                await self.sleep(backoff_s(waits, self.delivery.backoff_initial_s, self.delivery.backoff_max_s,
                                           full_jitter))

    async def deliver(self, message: Any) -> None:
        """POST one record until it is accepted or dead-lettered (never raises for the subscriber's answers;
        RecordError when the record itself can never be delivered)."""
        body = self.body(message, await self._decoded(message.value))
        entity = self.entity_of[message.topic]
        attempts = 0
        tries = 0
        while True:
            tries += 1
            problem = await self._attempt(body)
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
                    self.metrics.delivery_dead_letters.labels(self.subscriber, entity).inc()
                    await self._dead_letter(message, self.dlq_topic, Problem(
                        "", REJECTED, f"{self.delivery.url} refused the event {attempts} times; last: {text}"))
                    return
            if unavailable:
                log.info("delivery to %s: endpoint unavailable (%s); waiting, attempts unused", self.subscriber, text)
            else:
                log.info("delivery to %s refused (%s); attempt %d of %d", self.subscriber, text, attempts,
                         self.delivery.max_attempts)
            await self.sleep(backoff_s(tries, self.delivery.backoff_initial_s, self.delivery.backoff_max_s,
                                       full_jitter))

    async def _attempt(self, body: bytes) -> tuple[bool, bool, str] | None:
        """One POST once the breaker allows it and a slot is free."""
        await self.breaker.acquire()
        try:
            async with self._slots:
                return await self._post(body)
        except BaseException:
            self.breaker.abandon()  # else a probe cancelled by a rebalance would hold the breaker half-open forever
            raise

    async def _post(self, body: bytes) -> tuple[bool, bool, str] | None:
        """None when accepted, else (unavailable, server-side, description)."""
        return await post(self.client, self.delivery.url, self.secret, body)

    def _observe_latency(self, message: Any) -> None:
        at = parse_timestamp(header_text(message, HEADER_OCCURRED_AT))
        if at is not None:
            self.metrics.end_to_end_seconds.labels(self.subscriber).observe(max(0.0, time.time() - at.timestamp()))

    async def _audit(self, message: Any, entity: str, outcome: str) -> None:
        refs = audit_refs_of(message)
        entry = audit_entry(refs, subscriber=self.subscriber, entity=entity,
                            event_id=header_text(message, HEADER_EVENT_ID),
                            at=datetime.now(timezone.utc).isoformat(), outcome=outcome)
        # The send is queued, not awaited to the broker: the commit's flush waits for it. Keyed by the
        # entity key's reference, never by the record's key (a `keep` subscriber's key is a clear id).
        await self._kafka_retry("audit send", lambda: self.producer.send(AUDIT_TOPIC, entry,
                                                                         key=audit_record_key(refs)))

    async def _dead_letter(self, message: Any, topic: str, problem: Problem,
                           exc_info: BaseException | None = None) -> None:
        """The record, untouched, to `topic` with why in `eduhub.errors.*` headers; awaited to the broker,
        since its offset counts as done (and may be committed) once this returns."""
        event_id = header_text(message, HEADER_EVENT_ID)
        headers = dlq.dead_letter_headers(
            [problem], stage=STAGE, topic=message.topic, partition=message.partition, offset=message.offset,
            event_id=event_id, original=message.headers or ())
        value = dlq.fit(message.value, message.key, headers)  # the headers added must not make it too large
        await self._kafka_retry(f"dead letter to {topic}", lambda: self.producer.send_and_wait(
            topic, value, key=message.key, headers=headers))
        self.metrics.dlq_writes.labels(header_text(message, HEADER_SOURCE) or "", STAGE).inc()
        # The audit entry's references come from the route stage's header, never from the key, so a
        # keyless record is audited too (hub.audit is not compacted: a null key is fine there).
        await self._audit(message, self.entity_of[message.topic], "dead_lettered")
        log.warning("event %s for %s (%s[%d]@%d) dead-lettered to %s: %s: %s", event_id, self.subscriber,
                    message.topic, message.partition, message.offset, topic, problem.rule, problem.message,
                    exc_info=exc_info)


class DeliveryGroup:
    """Every HTTP subscriber's deliverer, started, run and stopped together (one worker service)."""

    def __init__(self, deliverers: list[HttpDeliverer]) -> None:
        self.deliverers = deliverers

    @property
    def turned_at(self) -> float:
        """When the stalest deliverer's loop last turned (time.monotonic())."""
        return min((d.turned_at for d in self.deliverers), default=time.monotonic())

    async def start(self) -> None:
        for deliverer in self.deliverers:
            await deliverer.start()

    def request_stop(self) -> None:
        for deliverer in self.deliverers:
            deliverer.request_stop()

    async def run(self) -> None:
        await asyncio.gather(*(d.run() for d in self.deliverers))

    async def stop(self) -> None:
        for deliverer in self.deliverers:
            await deliverer.stop()

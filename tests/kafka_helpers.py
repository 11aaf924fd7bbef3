"""Test helpers that talk to the real broker directly (not through the hub's own code paths)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from aiokafka import TopicPartition

from hub.kafka import io as kafkaio
from hub.kafka.admin import partitions_of
from hub.kafka.clients import KafkaClients

# Every helper takes the broker as "host:port" (plaintext) or as a KafkaClients (a secure listener).
Broker = str | KafkaClients


def clients(bootstrap: Broker) -> KafkaClients:
    return bootstrap if isinstance(bootstrap, KafkaClients) else KafkaClients.plain(bootstrap)


async def _partitions(bootstrap: Broker, topic: str) -> list[int]:
    try:
        return await partitions_of(clients(bootstrap), topic)
    except LookupError:
        return []


async def _read_until(bootstrap: Broker, topic: str, done: Callable[[list], bool], bound_s: float) -> list:
    partitions = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while not partitions and loop.time() < deadline:
        partitions = await _partitions(bootstrap, topic)
        if not partitions:
            await asyncio.sleep(0.5)
    consumer = clients(bootstrap).consumer(group_id=None, enable_auto_commit=False,
                                           isolation_level="read_committed")
    await consumer.start()
    records: list = []
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while loop.time() < deadline and not done(records):
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def read_topic(bootstrap: Broker, topic: str, done: Callable[[list], bool], bound_s: float = 60.0) -> list:
    """Committed records of a topic from the beginning, read until `done(records)` or the bound."""
    return asyncio.run(_read_until(bootstrap, topic, done, bound_s))


def read_to_end(bootstrap: Broker, topic: str) -> list:
    """Every committed record of a topic up to its current end (a snapshot, no waiting)."""
    return asyncio.run(kafkaio.read_to_end(clients(bootstrap), topic))


def wait_until(predicate: Callable[[], bool], bound_s: float = 60.0, interval_s: float = 0.5) -> bool:
    """Poll `predicate` until it holds or the bound passes; returns its last value (assert on that)."""
    import time

    deadline = time.monotonic() + bound_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def produce_raw(bootstrap: Broker, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    """Produce (key, value) pairs as they are, in order, and wait for the acknowledgements."""

    async def go() -> None:
        producer = clients(bootstrap).producer(enable_idempotence=True)
        await producer.start()
        try:
            for key, value in values:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(go())


def header(record, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode()
    return None


def registration_envelope(source: str, **overrides: Any) -> dict[str, Any]:
    """A valid exam.registration envelope with a fresh event_id and registration_id."""
    registration_id = overrides.pop("registration_id", f"2026{uuid.uuid4().int % 10**8:08d}")
    now = datetime.now(timezone(timedelta(hours=7))).replace(microsecond=0)
    data = {
        "registration_id": registration_id,
        "exam_year": 2026,
        "council_code": "03",
        "national_id": "031308001234",
        "full_name": "Nguyễn Thị Thu Hà",
        "date_of_birth": "2008-05-01",
        "gender": "FEMALE",
        "candidate_type": "CURRENT_STUDENT",
        "school_code": "31THPT001",
        "subjects": ["MATH", "LITERATURE", "HISTORY", "FOREIGN_LANGUAGE"],
        "foreign_language": "N1",
        "language_exemption": False,
        "exemption_certificate": None,
        "priority_area": "KV2",
        "priority_group": None,
        "registered_at": (now - timedelta(minutes=1)).isoformat(),
        "status": "SUBMITTED",
    }
    data.update(overrides.pop("data", {}))
    envelope = {
        "event_id": str(uuid.uuid4()),
        "source": source,
        "entity": "exam.registration",
        "op": "c",
        "key": registration_id,
        "occurred_at": now.isoformat(),
        "data": data,
    }
    envelope.update(overrides)
    return envelope


def encode(envelope: dict) -> bytes:
    return json.dumps(envelope, ensure_ascii=False).encode()

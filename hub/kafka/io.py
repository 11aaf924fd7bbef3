"""Publish ingest envelopes and read any hub topic back decoded (the `ingest` and `tail` commands)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from hub.contract.registry import SchemaRegistry
from hub.contract.schemas import MAGIC, to_json
from hub.contract.topics import ingest_topic
from hub.kafka.admin import ensure_topics, partitions_of
from hub.kafka.clients import KafkaClients


def envelope_key(line: bytes) -> bytes | None:
    """The entity key of a raw envelope, to partition by; None when the line cannot be read
    (the hub still receives it, and dead-letters it with the reason)."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    key = doc.get("key") if isinstance(doc, dict) else None
    return key.encode() if isinstance(key, str) else None


async def publish_envelopes(kafka: KafkaClients, source: str, lines: Iterable[bytes], *,
                            partitions: int = 12, replication_factor: int = 1) -> int:
    """Publish raw envelope lines to ingest.<source>, keyed by entity key, idempotently; returns the count."""
    topic = ingest_topic(source)
    await ensure_topics(kafka, [(topic, partitions)], replication_factor)
    producer = kafka.producer(enable_idempotence=True, linger_ms=5)
    await kafka.start(producer)
    count = 0
    try:
        pending = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            pending.append(await producer.send(topic, line, key=envelope_key(line)))
            count += 1
        await producer.flush()
        for future in pending:
            future.result()  # raises if Kafka did not acknowledge
    finally:
        await producer.stop()
    return count


def _text(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()


async def decode_value(registry: SchemaRegistry | None, value: bytes | None) -> Any:
    """Avro via the registry when the value is in Confluent wire format, JSON if it parses, else text."""
    if value is None:
        return None
    if registry is not None and len(value) > 5 and value[0] == MAGIC:
        return to_json(await registry.decode(value))
    try:
        return json.loads(value)
    except ValueError:
        return _text(value)


async def tail(kafka: KafkaClients, topic: str, *, registry: SchemaRegistry | None, from_beginning: bool,
               max_records: int | None, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
    """Decoded records of a topic, as dicts, until `max_records` or `timeout_s` of silence.

    Reads committed data only (as a subscriber does) and joins no consumer group.
    """
    assigned = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
    consumer = kafka.consumer(enable_auto_commit=False, isolation_level="read_committed", group_id=None)
    await kafka.start(consumer)
    try:
        consumer.assign(assigned)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        seen = 0
        while max_records is None or seen < max_records:
            batch = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=500)
            if not batch:
                return
            messages = sorted((m for ms in batch.values() for m in ms), key=lambda m: (m.timestamp, m.partition))
            for message in messages:
                yield {
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "timestamp": message.timestamp,
                    "key": _text(message.key),
                    "headers": {k: _text(v) for k, v in (message.headers or ())},
                    "value": await decode_value(registry, message.value),
                }
                seen += 1
                if max_records is not None and seen >= max_records:
                    return
    finally:
        await consumer.stop()


async def read_to_end(kafka: KafkaClients, topic: str) -> list[ConsumerRecord]:
    """Every committed record of a topic, from the beginning up to its end now (no waiting for more)."""
    return (await read_range(kafka, topic, {}))[0]


async def read_range(kafka: KafkaClients, topic: str, starts: dict[int, int],
                     **consumer_options: Any) -> tuple[list[ConsumerRecord], dict[int, int]]:
    """Committed records of a topic from `starts` (partition → offset; others from 0) up to its end now,
    in offset order per partition, and the offset reached in each partition."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                              **consumer_options)
    await kafka.start(consumer)
    records: list[ConsumerRecord] = []
    positions = dict(starts)
    try:
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, starts.get(tp.partition, 0))
        ends = await consumer.end_offsets(partitions)  # last stable offsets under read_committed
        remaining = {tp for tp in partitions if ends[tp] > starts.get(tp.partition, 0)}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        for tp in partitions:
            positions[tp.partition] = await consumer.position(tp)
    finally:
        await consumer.stop()
    return records, positions

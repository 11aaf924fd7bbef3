"""Poison records on an HTTP subscriber's queue, against a real broker, registry, worker and receiver:
each goes to hub.dlq.route once with its rule, the valid records around it reach the receiver in order,
and the worker keeps running."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import PORT_OFFSET
from tests.integration.test_http_delivery import (_keys, order_by_key, ours, receivers,  # noqa: F401 (fixtures)
                                                  students, subscription)
from tests.kafka_helpers import encode, header, produce_raw, read_to_end, wait_until

pytestmark = pytest.mark.integration
RECEIVER_PORT = 27201 + PORT_OFFSET


def poison(template, source: str) -> dict[str, tuple[bytes | None, bytes | None, list, str]]:
    """Hostile records made from a real queued one: event id → (key, value, headers, expected rule)."""
    key, value = template.key, template.value
    cases = {
        "not-wire": (key, b'{"student_id": "031309000001"}', "record.not_wire_format"),
        "truncated": (key, value[:8], "record.avro_decode"),
        "unknown-schema": (key, b"\x00\x7f\xff\xff\xf0" + value[5:], "record.unknown_schema"),
        "null-key": (None, value, "record.null_key"),
        "bad-key": (b"\xff\xfe" + key, value, "record.invalid_key"),
    }
    out = {}
    for name, (poison_key, poison_value, rule) in cases.items():
        event_id = f"poison-{name}-{uuid.uuid4().hex[:8]}"
        headers = [(k, v) for k, v in template.headers if k not in ("eduhub.event_id", "eduhub.source")]
        headers += [("eduhub.event_id", event_id.encode()), ("eduhub.source", source.encode())]
        if name == "null-key":
            headers.append(("eduhub.trace_id", None))  # a null header value (Kafka allows one) must do no harm
        out[event_id] = (poison_key, poison_value, headers, rule)
    return out


def produce_to_partition(bootstrap: str, topic: str, partition: int, records) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for key, value, headers, _ in records:
                await producer.send_and_wait(topic, value, key=key, headers=headers, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(go())


def test_poison_records_on_the_queue_are_dead_lettered_once_and_the_rest_is_delivered_in_order(
        local_stack, start_worker, unique_source, receivers):  # noqa: F811
    bootstrap = local_stack.bootstrap_servers
    receiver = receivers(RECEIVER_PORT)
    subscriber = f"poison-{unique_source}"
    queue = f"sub.{subscriber}.school.student"
    worker = start_worker([unique_source], subscriptions=subscription(subscriber, receiver.url))
    before = students(unique_source, keys=2, versions=2)
    produce_raw(bootstrap, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in before])
    assert wait_until(lambda: len(ours(receiver, unique_source)[0]) >= len(before), bound_s=120)

    # Between the learners' changes, hostile records in the partition of the first learner's key.
    template = next(r for r in read_to_end(bootstrap, queue) if header(r, "eduhub.source") == unique_source)
    hostile = poison(template, unique_source)
    produce_to_partition(bootstrap, queue, template.partition, hostile.values())
    after = students(unique_source, keys=2, versions=4)[len(before):]  # the learners' later changes
    produce_raw(bootstrap, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in after])

    sent = before + after
    assert wait_until(lambda: len(ours(receiver, unique_source)[0]) >= len(sent), bound_s=120)
    accepted, _ = ours(receiver, unique_source)
    assert Counter(b["event_id"] for b in accepted) == Counter(e["event_id"] for e in sent)
    assert order_by_key(accepted) == order_by_key([{"key": e["key"], "event_id": e["event_id"]} for e in sent])

    def letters() -> list:
        return [r for r in read_to_end(bootstrap, "hub.dlq.route") if header(r, "eduhub.errors.event_id") in hostile]

    assert wait_until(lambda: len(letters()) >= len(hostile), bound_s=60)
    found = letters()
    assert Counter(header(r, "eduhub.errors.event_id") for r in found) == Counter(list(hostile))  # each once
    for letter in found:
        key, value, _, rule = hostile[header(letter, "eduhub.errors.event_id")]
        assert header(letter, "eduhub.errors.rule") == rule
        assert header(letter, "eduhub.errors.stage") == "deliver"
        assert (letter.key, letter.value) == (key, value)  # the original, untouched

    def audited() -> Counter:
        entries = [json.loads(r.value) for r in read_to_end(bootstrap, "hub.audit")]
        return Counter(e["outcome"] for e in entries if e["event_id"] in hostile)

    wait_until(lambda: sum(audited().values()) >= len(hostile), bound_s=30)
    assert audited() == Counter({"dead_lettered": len(hostile)})
    assert worker.process.poll() is None  # the same worker process, still running

"""Routing on the real broker and registry: who gets which entities, rows and fields, masked how,
decoded from the subscriber topics' bytes with the registry's schemas; and the audit trail."""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import avro.io
import avro.schema
import httpx
import pytest

from hub.contract.schemas import Catalogue, to_json
from tests.kafka_helpers import encode, header, produce_raw, read_to_end, wait_until
from tests.unit.test_contract import examples

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = Catalogue.load()
KEY = "integration-test-master-key-0123456789"


def decode(registry_url: str, value: bytes) -> dict:
    schema_id = int.from_bytes(value[1:5], "big")
    text = httpx.get(f"{registry_url}/schemas/ids/{schema_id}", timeout=10).json()["schema"]
    return avro.io.DatumReader(avro.schema.parse(text)).read(avro.io.BinaryDecoder(io.BytesIO(value[5:])))


def topic_records(local_stack, topic: str, source: str) -> list:
    """This test's records of a topic: the route stage also routes what other tests' workers wrote."""
    try:
        records = read_to_end(local_stack.bootstrap_servers, topic)
    except LookupError:
        return []
    return [r for r in records if header(r, "eduhub.source") == source]


def test_routing_matrix_and_audit(local_stack, start_worker, unique_source, monkeypatch):
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", KEY)
    full, parent, grade11 = f"full-{unique_source}", f"parent-{unique_source}", f"g11-{unique_source}"
    subscriptions = [
        {"id": full, "entities": ["*"], "pii_default": "keep"},
        {"id": parent, "entities": ["school.score", "school.term_result"], "pii": {"student_id": "pseudonymise"}},
        {"id": grade11, "entities": ["school.student"], "filter": "grade >= 11 and status == 'STUDYING'",
         "pii": {"guardian_phone": "mask"}},
    ]
    start_worker([unique_source], subscriptions=subscriptions)

    sent = []
    for envelope in examples():
        envelope = copy.deepcopy(envelope)
        envelope["source"], envelope["event_id"] = unique_source, str(uuid.uuid4())
        sent.append(envelope)
    student = next(e for e in sent if e["entity"] == "school.student")
    older = copy.deepcopy(student)
    older["event_id"] = str(uuid.uuid4())
    older["data"].update(student_id="031309007777", grade=11, class_name="11A2")
    older["key"] = "031309007777"
    sent.append(older)
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in sent])

    def all_delivered() -> bool:
        keys: dict[str, set[str]] = {}
        for envelope in sent:
            topic = f"sub.{full}.{envelope['entity']}"
            if topic not in keys:
                keys[topic] = {r.key.decode() for r in topic_records(local_stack, topic, unique_source)}
            if envelope["key"] not in keys[topic]:
                return False
        return True

    wait_until(all_delivered, bound_s=120, interval_s=1)

    # The full subscriber: every entity, every field as the canonical record.
    for envelope in sent:
        topic = f"sub.{full}.{envelope['entity']}"
        records = [r for r in topic_records(local_stack, topic, unique_source) if r.key.decode() == envelope["key"]]
        assert records, topic
        canonical = Validator_record(envelope)
        assert to_json(decode(local_stack.registry_url, records[-1].value)) == to_json(canonical)

    # The parent app: scores and term results only, no personal ID in clear, not even in the key.
    assert topic_records(local_stack, f"sub.{parent}.school.student", unique_source) == []
    for entity in ("school.score", "school.term_result"):
        (record,) = topic_records(local_stack, f"sub.{parent}.{entity}", unique_source)
        value = decode(local_stack.registry_url, record.value)
        assert value["student_id"] != student["data"]["student_id"] and len(value["student_id"]) == 32
        assert student["data"]["student_id"] not in record.key.decode()

    # The filtered subscriber: only the grade-11 student, PII dropped by default, the phone masked.
    (record,) = topic_records(local_stack, f"sub.{grade11}.school.student", unique_source)
    value = decode(local_stack.registry_url, record.value)
    assert value["grade"] == 11 and "full_name" not in value and "date_of_birth" not in value
    assert value["guardian_phone"] != older["data"]["guardian_phone"] and "*" in value["guardian_phone"]

    # The audit: who received the grade-11 learner's data.
    done = subprocess.run([sys.executable, "-m", "hub", "audit", "who-received", "031309007777", "--json"],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "EDUHUB_CONFIG": "", "EDUHUB_KAFKA_BOOTSTRAP_SERVERS":
                               local_stack.bootstrap_servers, "EDUHUB_PSEUDONYM_KEY": KEY})
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(g["subscriber"] for g in got) == sorted([full, grade11])
    assert all(g["entity"] == "school.student" and g["event_id"] == older["event_id"] for g in got)
    audit_text = b"".join(r.value for r in read_to_end(local_stack.bootstrap_servers, "hub.audit"))
    assert b"031309007777" not in audit_text  # references, never the ID itself


def Validator_record(envelope: dict) -> dict:
    from hub.stages.validate import Validator

    return Validator(CATALOGUE).validate(json.dumps(envelope, ensure_ascii=False).encode()).record


def test_repeated_event_id_across_a_worker_restart_is_delivered_once(local_stack, start_worker, unique_source,
                                                                      monkeypatch):
    """The dedup window lives in Kafka: a restarted worker still knows the event_ids accepted before."""
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", KEY)
    subscriber = f"once-{unique_source}"
    subscriptions = [{"id": subscriber, "entities": ["school.student"], "pii_default": "keep"}]
    instance = f"it-dedup-{uuid.uuid4().hex[:6]}"
    first = start_worker([unique_source], instance_id=instance, subscriptions=subscriptions)
    student = copy.deepcopy(next(e for e in examples() if e["entity"] == "school.student"))
    student["source"], student["event_id"] = unique_source, str(uuid.uuid4())
    topic = f"sub.{subscriber}.school.student"
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(student["key"].encode(), encode(student))])
    wait_until(lambda: len(topic_records(local_stack, topic, unique_source)) == 1, bound_s=120, interval_s=1)
    assert first.stop() == 0

    second = start_worker([unique_source], instance_id=instance, subscriptions=subscriptions)
    marker = copy.deepcopy(student)  # same key, so same partition, read after the repeat
    marker["event_id"] = str(uuid.uuid4())
    marker["data"]["class_name"] = "10A9"
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}",
                [(student["key"].encode(), encode(student)), (marker["key"].encode(), encode(marker))])
    wait_until(lambda: len(topic_records(local_stack, topic, unique_source)) >= 2, bound_s=120, interval_s=1)
    delivered = [header(r, "eduhub.event_id") for r in topic_records(local_stack, topic, unique_source)]
    assert delivered == [student["event_id"], marker["event_id"]]
    canonical = [header(r, "eduhub.event_id") for r in topic_records(local_stack, "edu.school.student", unique_source)]
    assert canonical.count(student["event_id"]) == 1
    metrics = httpx.get(f"{second.url}/metrics", timeout=10).text
    assert f'eduhub_events_deduplicated_total{{entity="school.student",source="{unique_source}"}} 1.0' in metrics

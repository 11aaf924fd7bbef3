"""hub.audit holds keyed references only, in its keys as in its values, under a key no subscriber can get."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from pydantic import ValidationError

from hub.contract.schemas import Catalogue, dumps
from hub.contract.topics import AUDIT_TOPIC, ROUTE_DLQ_TOPIC
from hub.core.metrics import HubMetrics
from hub.routing.audit import REFS_HEADER, audit_key, audit_record, audit_refs, legacy_audit_key, person_ref, \
    who_received
from hub.routing.errors import SubscriptionError
from hub.routing.policy import load_subscriptions
from hub.routing.pseudonyms import hub_key, subscriber_key
from hub.routing.subscriptions import SubscriptionConfig
from hub.stages.route import RouteStage, Tally
from tests.unit.test_delivery import deliverer_with, record, run_until_committed, student
from tests.unit.test_subscriptions import EXAMPLES

MASTER = b"unit-test-master-key-0123456789"
CATALOGUE = Catalogue.load()
# A 12-digit personal id standing alone (a run of digits inside a hex reference does not count).
PERSONAL_ID = re.compile(rb"(?<![0-9a-f])[0-9]{12}(?![0-9a-f])")


def test_no_subscriber_id_yields_the_audit_key():
    # Before: audit_key(master) = HMAC(master, "eduhub-audit") = the key of a subscriber named eduhub-audit.
    assert audit_key(MASTER) != subscriber_key(MASTER, "eduhub-audit")
    assert audit_key(MASTER) == hub_key(MASTER, "audit")
    # The hub's labels hold ':', which no subscriber id can (the id pattern, checked where the key is made).
    with pytest.raises(SubscriptionError, match="not a subscriber id"):
        subscriber_key(MASTER, "eduhub:audit")
    with pytest.raises(ValidationError, match="reserved"):
        SubscriptionConfig(id="eduhub-audit", entities=["*"])
    with pytest.raises(SubscriptionError, match="16 bytes"):
        audit_key(b"short")


def test_existing_subscribers_keep_their_pseudonyms():
    # subscriber_key is unchanged: HMAC-SHA256(master, id), so the pseudonyms app teams hold stay valid.
    import hashlib
    import hmac

    assert subscriber_key(MASTER, "analytics") == hmac.new(MASTER, b"analytics", hashlib.sha256).digest()


def test_who_received_finds_records_written_under_the_legacy_audit_key_too():
    old = audit_record(legacy_audit_key(MASTER), subscriber="moet-sync", entity="school.student",
                       entity_key="031309001234", event_id="old", record={"student_id": "031309001234"}, at="t0")
    new = audit_record(audit_key(MASTER), subscriber="moet-sync", entity="school.student",
                       entity_key="031309001234", event_id="new", record={"student_id": "031309001234"}, at="t1")
    keys = [audit_key(MASTER), legacy_audit_key(MASTER)]
    assert [e["event_id"] for e in who_received(keys, [old, new], "031309001234")] == ["old", "new"]
    assert [e["event_id"] for e in who_received(audit_key(MASTER), [old, new], "031309001234")] == ["new"]
    assert person_ref(audit_key(MASTER), "x") != person_ref(legacy_audit_key(MASTER), "x")


class FakeWriter:
    def __init__(self) -> None:
        self.appended: list[tuple[str, bytes | None, bytes | None, list]] = []

    def append(self, topic, key, value, timestamp_ms, headers) -> None:
        self.appended.append((topic, key, value, list(headers or ())))


class Message:
    def __init__(self, topic: str, key: str, value: bytes | None) -> None:
        self.topic, self.partition, self.offset = topic, 0, 0
        self.key, self.value = key.encode(), value
        self.headers = [("eduhub.event_id", b"e-1"), ("eduhub.source", b"smas")]


def test_the_route_stage_keys_audit_records_by_reference_never_by_the_entity_key():
    """Before: a Kafka subscriber's audit record was keyed by message.key, a learner's personal id in clear."""
    from hub.routing.subscriptions import DEMO_SUBSCRIPTIONS

    policies = load_subscriptions(DEMO_SUBSCRIPTIONS, CATALOGUE, MASTER)
    ids = {(p.config.id, e): 1 for p in policies for e in p.entities}
    key = audit_key(MASTER)

    # The routing step alone, without the stage's Kafka clients (what _route reads of the stage).
    stage = RouteStage.__new__(RouteStage)
    stage.policies, stage.schema_ids, stage.audit_key, stage.metrics = policies, ids, key, HubMetrics()
    stage._parsed_schemas = {}
    stage.topic_prefix, stage.audit_topic, stage.dlq_topic = "", AUDIT_TOPIC, ROUTE_DLQ_TOPIC
    stage._current_headers = {}  # no record is passed on as it is here: every one is encoded
    tally = Tally()
    stage.writer = writer = FakeWriter()
    for entity, records in EXAMPLES.items():
        schema = CATALOGUE[entity]
        for r in records:
            stage._route(schema, Message(schema.topic, schema.key_of(r), b"v"), r, "now", tally)
            stage._route(schema, Message(schema.topic, schema.key_of(r), None), None, "now", tally)  # a delete
    assert not [t for t, *_ in writer.appended if t.startswith("hub.dlq")]
    audit = [(k, v) for topic, k, v, _ in writer.appended if topic == AUDIT_TOPIC]
    assert audit and {json.loads(v)["entity"] for _, v in audit} == set(EXAMPLES)
    clear = {CATALOGUE[e].key_of(r).encode() for e, rs in EXAMPLES.items() for r in rs}
    clear |= {str(r[f]).encode() for rs in EXAMPLES.values() for r in rs
              for f in ("student_id", "national_id", "applicant_id") if r.get(f)}
    for k, v in audit:
        assert not PERSONAL_ID.search(k) and not PERSONAL_ID.search(v), (k, v)
        assert not [c for c in clear if c in k or c in v], (k, v)
        assert k.decode() == json.loads(v)["key_ref"]
    student_key = audit_refs(key, "031309001234", None)["key_ref"].encode()
    assert student_key in {k for k, _ in audit}


def test_http_delivery_keys_audit_records_by_reference_never_by_the_record_key():
    """Before: the delivery stage keyed the audit record by the subscriber record's key (clear for `keep`)."""
    refs = audit_refs(audit_key(MASTER), "031309000001", {"student_id": "031309000001"})
    messages = [record(0, b"031309000001", student(1), "e-1", **{REFS_HEADER: json.dumps(refs).encode()}),
                record(1, b"031309000002", student(2), "e-2")]  # no references: keyless audit record

    async def scenario():
        deliverer, _ = await deliverer_with([messages])
        await run_until_committed(deliverer, 2)
        return deliverer

    sent = asyncio.run(scenario()).producer.sent
    audit = {json.loads(v)["event_id"]: k for topic, v, k, _ in sent if topic == AUDIT_TOPIC}
    assert audit == {"e-1": refs["key_ref"].encode(), "e-2": None}
    assert all(b"031309000001" not in (v or b"") for topic, v, _, _ in sent if topic == AUDIT_TOPIC)
    assert "031309000001" not in dumps(refs)

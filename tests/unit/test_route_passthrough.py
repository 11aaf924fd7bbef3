"""The route stage passes the canonical Avro body on, unchanged, to a subscriber that receives the whole
record, and encodes it afresh for everyone else: both give the subscriber the same datum."""

from __future__ import annotations

import io

import fastavro
import pytest

from hub.contract.schemas import Catalogue, decode_body, encode_wire, split_wire, wire_header
from hub.core.metrics import HubMetrics
from hub.routing.audit import audit_key
from hub.routing.policy import load_subscriptions
from hub.routing.subscriptions import DEMO_SUBSCRIPTIONS
from hub.stages.route import RouteStage, Tally
from tests.unit.test_audit_privacy import FakeWriter, Message
from tests.unit.test_subscriptions import EXAMPLES

CATALOGUE = Catalogue.load()
MASTER = b"m" * 32
CANONICAL_ID = 7


def _stage(current_ids: dict[str, int]) -> tuple[RouteStage, list]:
    policies = load_subscriptions(DEMO_SUBSCRIPTIONS, CATALOGUE, MASTER)
    ids = {(p.config.id, e): 100 + n for n, (p, e) in enumerate((p, e) for p in policies for e in sorted(p.entities))}
    stage = RouteStage.__new__(RouteStage)  # the routing step alone, without Kafka clients
    stage.policies, stage.schema_ids, stage.audit_key, stage.metrics = policies, ids, audit_key(MASTER), HubMetrics()
    stage._parsed_schemas, stage.topic_prefix = {}, ""
    stage.audit_topic, stage.dlq_topic = "hub.audit", "hub.dlq.route"
    stage.readers = {e.entity: (current_ids.get(e.entity, -1), e.parsed) for e in CATALOGUE.entities.values()}
    stage._current_headers = {e: wire_header(i) for e, (i, _) in stage.readers.items() if i >= 0}
    stage.writer = FakeWriter()
    return stage, policies


def _routed(stage: RouteStage, entity: str, value: bytes, record: dict) -> dict[str, tuple[bytes, bytes]]:
    schema = CATALOGUE[entity]
    stage.writer = writer = FakeWriter()
    stage._route(schema, Message(schema.topic, schema.key_of(record), value), record, "now", Tally())
    return {topic: (key, val) for topic, key, val, _ in writer.appended if topic.startswith("sub.")}


@pytest.mark.parametrize("entity", sorted(EXAMPLES))
def test_whole_record_subscribers_get_the_canonical_body_and_the_same_datum_as_an_encoding(entity: str) -> None:
    schema = CATALOGUE[entity]
    stage, policies = _stage({entity: CANONICAL_ID})
    whole = [p for p in policies if entity in p.entities and p.receives_whole(entity)]
    for record in EXAMPLES[entity]:
        value = schema.encode(CANONICAL_ID, record)
        datum = decode_body(schema.parsed, value[5:])
        routed = _routed(stage, entity, value, datum)
        for policy in policies:
            topic = policy.topic(entity)
            if topic not in routed:
                continue
            key, out = routed[topic]
            schema_id, body = split_wire(out)
            assert schema_id == stage.schema_ids[(policy.config.id, entity)]
            parsed = stage._parsed(policy, entity)
            projected = policy.apply(entity, datum)
            # whatever path it took, the subscriber reads exactly the projected record, under its key
            assert decode_body(parsed, body) == decode_body(parsed, encode_wire(1, parsed, projected)[5:])
            assert key == policy.key_of(entity, projected).encode()
            if policy in whole:
                assert body == value[5:]  # passed on, not encoded again
                assert projected == datum  # which is right only because its projection changes nothing


def test_a_subscriber_with_any_hidden_field_is_never_passed_the_body() -> None:
    policies = {p.config.id: p for p in load_subscriptions(DEMO_SUBSCRIPTIONS, CATALOGUE, MASTER)}
    assert policies["moet-sync"].receives_whole("exam.registration")  # every field kept
    assert not policies["analytics"].receives_whole("exam.registration")  # pseudonymises and masks
    assert policies["analytics"].receives_whole("school.school")  # no personal field to hide
    assert not policies["parent-app"].receives_whole("school.score")  # a field selection


def test_a_record_of_an_older_schema_is_encoded_afresh() -> None:
    entity = "exam.registration"
    schema = CATALOGUE[entity]
    stage, policies = _stage({entity: CANONICAL_ID})
    record = EXAMPLES[entity][0]
    old = schema.encode(CANONICAL_ID - 1, record)  # another writer id: its body may have another layout
    datum = decode_body(schema.parsed, old[5:])
    routed = _routed(stage, entity, old, datum)
    moet = next(p for p in policies if p.config.id == "moet-sync")
    assert moet.receives_whole(entity)
    key, out = routed[moet.topic(entity)]
    parsed = stage._parsed(moet, entity)
    assert out == encode_wire(stage.schema_ids[("moet-sync", entity)], parsed, moet.apply(entity, datum))


def test_a_body_with_bytes_left_over_does_not_decode() -> None:
    schema = CATALOGUE["exam.registration"]
    body = schema.encode(CANONICAL_ID, EXAMPLES["exam.registration"][0])[5:]
    assert fastavro.schemaless_reader(io.BytesIO(body + b"\x00junk"), schema.parsed)  # fastavro alone reads it
    with pytest.raises(ValueError, match="5 bytes left after the record"):
        decode_body(schema.parsed, body + b"\x00junk")

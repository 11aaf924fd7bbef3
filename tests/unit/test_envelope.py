"""Envelope checks of data dictionary §1: each rule reported with its id and field."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from hub.contract.envelope import check_envelope, read_json
from tests.kafka_helpers import registration_envelope

ENTITIES = frozenset({"exam.registration"})
NOW = datetime(2026, 6, 1, 1, 0, tzinfo=timezone.utc)


def rules(doc, **kwargs):
    envelope, problems = check_envelope(doc, entities=ENTITIES, now=kwargs.pop("now", NOW), **kwargs)
    return [(p.field, p.rule) for p in problems]


def base(**overrides):
    doc = registration_envelope("exam-reg")
    doc["occurred_at"] = "2026-06-01T08:00:00+07:00"
    doc.update(overrides)
    return doc


def test_a_valid_envelope_passes():
    envelope, problems = check_envelope(base(trace_id="t-1"), entities=ENTITIES, sources={"exam-reg"},
                                        topic_source="exam-reg", now=NOW)
    assert problems == []
    assert envelope.occurred_at == NOW and envelope.trace_id == "t-1"


@pytest.mark.parametrize("raw, rule", [
    (b"\xff\xfe", "envelope.encoding"),
    (b"{not json", "envelope.not_json"),
])
def test_unreadable_bytes_are_problems_not_exceptions(raw, rule):
    doc, problem = read_json(raw)
    assert doc is None and problem.rule == rule


@pytest.mark.parametrize("doc, expected", [
    ([], [("", "envelope.not_object")]),
    (base(evnet_id="x"), [("evnet_id", "envelope.unknown_field")]),
    ({k: v for k, v in base().items() if k != "key"}, [("key", "envelope.missing_field")]),
    (base(op=1), [("op", "envelope.type")]),
    (base(event_id="123"), [("event_id", "envelope.event_id_format")]),
    (base(source="Exam_Reg"), [("source", "envelope.source_format")]),
    (base(entity="exam.nope"), [("entity", "envelope.entity_unknown")]),
    (base(op="x"), [("op", "envelope.op_invalid")]),
    (base(occurred_at="2026-06-01T08:00:00"), [("occurred_at", "envelope.occurred_at_format")]),
    (base(occurred_at="2026-06-01 08:00"), [("occurred_at", "envelope.occurred_at_format")]),
    (base(occurred_at="2026-06-01T08:06:00+07:00"), [("occurred_at", "envelope.occurred_at_future")]),
    (base(data=None), [("data", "envelope.data_required")]),
    (base(data=[1]), [("data", "envelope.type")]),
    (base(op="d"), [("data", "envelope.data_forbidden")]),
    (base(trace_id=5), [("trace_id", "envelope.type")]),
    (base(key=""), [("key", "envelope.missing_field")]),
])
def test_each_envelope_rule(doc, expected):
    assert rules(doc) == expected


def test_source_must_be_registered_and_match_the_topic():
    assert rules(base(), sources={"other"}) == [("source", "envelope.source_unregistered")]
    assert rules(base(), sources={"exam-reg", "other"}, topic_source="other") == [
        ("source", "envelope.source_mismatch")]


def test_four_minutes_ahead_is_allowed_and_z_is_utc():
    assert rules(base(occurred_at="2026-06-01T01:04:00Z")) == []


def test_delete_without_data_is_valid():
    doc = base(op="d")
    del doc["data"]
    assert rules(doc) == []


def test_problems_serialise_as_the_public_error_shape():
    _, problems = check_envelope(base(op="x"), entities=ENTITIES, now=NOW)
    assert json.loads(json.dumps(problems[0].as_dict())) == {
        "field": "op", "rule": "envelope.op_invalid", "message": "op 'x' must be one of c, u, d, r"}

"""The one validation path (worker and offline tools) and the dead-letter headers it leads to."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from hub.contract import dlq
from hub.contract.schemas import Catalogue
from hub.stages.validate import Invalid, Valid, Validator
from tests.kafka_helpers import encode, registration_envelope

NOW = datetime.now(timezone.utc)


def validator():
    return Validator(Catalogue.load(), sources={"exam-reg"})


def test_valid_event():
    result = validator().validate(encode(registration_envelope("exam-reg")), topic_source="exam-reg")
    assert isinstance(result, Valid) and result.record["exam_year"] == 2026


def test_delete_is_valid_without_data():
    envelope = registration_envelope("exam-reg", op="d")
    del envelope["data"]
    result = validator().validate(encode(envelope))
    assert isinstance(result, Valid) and result.record is None


def test_key_must_equal_the_key_built_from_data():
    result = validator().validate(encode(registration_envelope("exam-reg", key="other")))
    assert isinstance(result, Invalid)
    assert [(p.field, p.rule) for p in result.problems] == [("key", "envelope.key_mismatch")]


def test_unreadable_and_empty_records_are_invalid_with_unknown_entity():
    for raw, rule in ((b"[", "envelope.not_json"), (None, "envelope.empty"), (b"[]", "envelope.not_object")):
        result = validator().validate(raw)
        assert isinstance(result, Invalid) and result.entity == "unknown" and result.problems[0].rule == rule


def test_invalid_keeps_event_id_and_entity_for_metrics_and_headers():
    envelope = registration_envelope("exam-reg")
    envelope["data"]["gender"] = "?"
    result = validator().validate(encode(envelope))
    assert result.event_id == envelope["event_id"] and result.entity == "exam.registration"


def test_dead_letter_headers_keep_every_reason_and_the_original_headers():
    result = validator().validate(encode(registration_envelope("exam-reg", op="x", event_id="nope")))
    headers = dlq.dead_letter_headers(result.problems, stage="validate", topic="ingest.exam-reg", partition=2,
                                      offset=41, event_id=result.event_id, original=[("traceparent", b"00-ab")])
    as_dict = dict(headers)
    assert as_dict[dlq.RULE] == b"envelope.event_id_format"
    assert as_dict[dlq.PARTITION] == b"2" and as_dict[dlq.OFFSET] == b"41"
    assert [r["rule"] for r in json.loads(as_dict[dlq.REASONS])] == ["envelope.event_id_format",
                                                                      "envelope.op_invalid"]
    assert dlq.reasons_of(headers) == json.loads(as_dict[dlq.REASONS])
    assert headers[-1] == ("traceparent", b"00-ab")

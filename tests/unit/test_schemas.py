"""The schema catalogue: JSON → canonical Avro datum, precise schema errors, wire format."""

from __future__ import annotations

import io
import unicodedata
from datetime import date, datetime, timezone

import fastavro
import pytest

from hub.contract.coerce import normalize_text
from hub.contract.schemas import Catalogue, split_wire, to_json
from tests.kafka_helpers import registration_envelope


@pytest.fixture(scope="module")
def registration():
    return Catalogue.load()["exam.registration"]


def data(**overrides):
    d = registration_envelope("exam-reg")["data"]
    d.update(overrides)
    return d


def test_catalogue_names_topics_and_subjects(registration):
    assert registration.topic == "edu.exam.registration"
    assert registration.subject == "edu.exam.registration-value"
    assert registration.key_fields == ("registration_id",)
    assert registration.schema["namespace"] == "vn.edu.exam"


def test_every_field_has_a_doc_and_pii_is_marked(registration):
    fields = {f["name"]: f for f in registration.schema["fields"]}
    assert all(f.get("doc") for f in fields.values())
    assert {n for n, f in fields.items() if f.get("pii")} == {"national_id", "full_name", "date_of_birth"}


def test_valid_data_becomes_a_typed_record(registration):
    record, problems = registration.to_record(data(registered_at="2026-04-01T08:00:00+07:00"))
    assert problems == []
    assert record["date_of_birth"] == date(2008, 5, 1)
    assert record["registered_at"] == datetime(2026, 4, 1, 1, 0, tzinfo=timezone.utc)
    assert registration.key_of(record) == record["registration_id"]


def test_defaults_fill_absent_optional_fields(registration):
    d = data()
    for name in ("school_code", "language_exemption", "exemption_certificate", "priority_group"):
        del d[name]
    record, problems = registration.to_record(d)
    assert problems == []
    assert record["language_exemption"] is False and record["school_code"] is None


def test_nfd_names_come_out_nfc_trimmed_and_collapsed(registration):
    nfd = unicodedata.normalize("NFD", "  Nguyễn   Thị  Thu Hà ")
    record, _ = registration.to_record(data(full_name=nfd))
    assert record["full_name"] == "Nguyễn Thị Thu Hà"
    assert unicodedata.is_normalized("NFC", record["full_name"])


def test_old_and_new_tone_placement_are_kept_as_sent():
    assert normalize_text("Hoà") == "Hoà" and normalize_text("Hòa") == "Hòa"


@pytest.mark.parametrize("overrides, field, rule", [
    ({"gender": "X"}, "data.gender", "schema.enum"),
    ({"exam_year": "2026"}, "data.exam_year", "schema.type"),
    ({"exam_year": True}, "data.exam_year", "schema.type"),
    ({"date_of_birth": "01/05/2008"}, "data.date_of_birth", "schema.date_format"),
    ({"registered_at": "2026-04-01T08:00:00"}, "data.registered_at", "schema.timestamp_format"),
    ({"subjects": ["MATH", "ART"]}, "data.subjects[1]", "schema.enum"),
    ({"subjects": "MATH"}, "data.subjects", "schema.type"),
    ({"nickname": "An"}, "data.nickname", "schema.unknown_field"),
    ({"exemption_certificate": {"kind": "IELTS"}}, "data.exemption_certificate.expires_on", "schema.required"),
    ({"full_name": None}, "data.full_name", "schema.type"),
])
def test_schema_problems_name_the_field_and_rule(registration, overrides, field, rule):
    record, problems = registration.to_record(data(**overrides))
    assert record is None
    assert [(p.field, p.rule) for p in problems] == [(field, rule)]


def test_missing_required_field(registration):
    d = data()
    del d["full_name"]
    _, problems = registration.to_record(d)
    assert [(p.field, p.rule) for p in problems] == [("data.full_name", "schema.required")]


def test_wire_format_round_trip(registration):
    record, _ = registration.to_record(data())
    value = registration.encode(42, record)
    schema_id, body = split_wire(value)
    assert value[0] == 0 and schema_id == 42
    assert fastavro.schemaless_reader(io.BytesIO(body), registration.parsed) == record
    with pytest.raises(ValueError):
        split_wire(b"{json}")


def test_to_json_gives_iso_dates_and_utc_timestamps(registration):
    record, _ = registration.to_record(data(registered_at="2026-04-01T08:00:00+07:00"))
    out = to_json(record)
    assert out["date_of_birth"] == "2008-05-01" and out["registered_at"] == "2026-04-01T01:00:00Z"

"""The data contract end to end offline: examples of every entity, NFD input, generated docs, `eduhub validate`."""

from __future__ import annotations

import copy
import json
import unicodedata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hub.ops.cli import app
from hub.contract.docs import asyncapi, readme
from hub.contract.schemas import SCHEMA_DIR, Catalogue, dumps
from hub.stages.validate import Invalid, Valid, Validator, report

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "entities.jsonl"
CATALOGUE = Catalogue.load()


def examples() -> list[dict]:
    return [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]


def validate(envelope: dict) -> Valid | Invalid:
    return Validator(CATALOGUE).validate(json.dumps(envelope, ensure_ascii=False).encode())


def test_the_catalogue_has_the_ten_entities_of_the_dictionary():
    assert sorted(CATALOGUE.names) == [
        "enrollment.application", "enrollment.result", "exam.registration", "exam.result", "school.class",
        "school.school", "school.score", "school.student", "school.teacher", "school.term_result"]
    for entity in CATALOGUE.entities.values():
        assert entity.schema["namespace"] == f"vn.edu.{entity.entity.split('.')[0]}"


def test_examples_cover_every_entity_and_are_valid():
    found = set()
    for envelope in examples():
        result = validate(envelope)
        assert isinstance(result, Valid), (envelope["entity"], getattr(result, "problems", None))
        found.add(envelope["entity"])
    assert found == set(CATALOGUE.names)


def _to_nfd(value):
    if isinstance(value, str):
        return unicodedata.normalize("NFD", value)
    if isinstance(value, dict):
        return {k: _to_nfd(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_nfd(v) for v in value]
    return value


@pytest.mark.parametrize("envelope", examples(), ids=lambda e: e["key"])
def test_nfd_input_validates_and_comes_out_nfc(envelope):
    nfd = copy.deepcopy(envelope)
    nfd["data"] = _to_nfd(envelope["data"])
    nfc_result, nfd_result = validate(envelope), validate(nfd)
    assert isinstance(nfd_result, Valid), getattr(nfd_result, "problems", None)
    assert nfd_result.record == nfc_result.record
    text = dumps(nfd_result.record)
    assert unicodedata.is_normalized("NFC", text)


@pytest.mark.parametrize("envelope", examples(), ids=lambda e: e["key"])
def test_a_missing_required_field_is_reported_for_every_entity(envelope):
    broken = copy.deepcopy(envelope)
    required = next(f["name"] for f in CATALOGUE[envelope["entity"]].schema["fields"] if "default" not in f)
    del broken["data"][required]
    result = validate(broken)
    assert isinstance(result, Invalid)
    assert (f"data.{required}", "schema.required") in [(p.field, p.rule) for p in result.problems]


@pytest.mark.parametrize("envelope", examples(), ids=lambda e: e["key"])
def test_an_unknown_field_in_data_is_reported_for_every_entity(envelope):
    broken = copy.deepcopy(envelope)
    broken["data"]["remarks"] = "x"
    assert [(p.field, p.rule) for p in validate(broken).problems] == [("data.remarks", "schema.unknown_field")]


def test_rules_run_on_the_validation_path_and_rewrite_phones():
    student = next(e for e in examples() if e["entity"] == "school.student")
    local = copy.deepcopy(student)
    local["data"]["guardian_phone"] = "0912345678"
    assert validate(local).record["guardian_phone"] == "+84912345678"
    wrong = copy.deepcopy(student)
    wrong["data"]["gender"] = "MALE"  # the ID's G digit says female
    assert [p.rule for p in validate(wrong).problems] == ["national_id.gender_mismatch"]


def test_schemas_readme_is_generated_and_fresh():
    assert (SCHEMA_DIR / "README.md").read_text(encoding="utf-8") == readme(CATALOGUE), (
        "schemas/README.md is stale: run `eduhub docs readme --write`")


def test_asyncapi_lists_every_canonical_topic_with_key_and_value_schema():
    document = asyncapi(CATALOGUE)
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {e.topic for e in CATALOGUE.entities.values()}
    for message in document["components"]["messages"].values():
        entity = CATALOGUE[message["title"]]
        assert message["payload"]["schema"] == entity.schema
        assert message["payload"]["schemaFormat"].startswith("application/vnd.apache.avro+json")
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in document["channels"] and operation["action"] == "receive"
    committed = yaml.safe_load((SCHEMA_DIR / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert committed == document, "schemas/asyncapi.yaml is stale: run `eduhub docs asyncapi -o schemas/asyncapi.yaml`"


runner = CliRunner()


def test_validate_cli_prints_one_result_per_line_in_order_and_exits_1_on_invalid(tmp_path):
    good = examples()[:2]
    lines = [json.dumps(good[0], ensure_ascii=False), "this is not json", json.dumps(good[1], ensure_ascii=False)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path), "--json"])
    assert result.exit_code == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["valid"] for o in out] == [True, False, True]
    assert out[0] == {"event_id": good[0]["event_id"], "valid": True, "topic": f"edu.{good[0]['entity']}",
                      "key": good[0]["key"], "record": out[0]["record"]}
    assert out[1] == {"event_id": None, "valid": False, "errors": [
        {"field": "", "rule": "envelope.not_json", "message": out[1]["errors"][0]["message"]}]}


def test_validate_cli_exit_codes(tmp_path):
    assert runner.invoke(app, ["validate", str(EXAMPLES), "--json"]).exit_code == 0
    assert runner.invoke(app, ["validate", str(tmp_path / "missing.jsonl")]).exit_code == 2
    assert runner.invoke(app, ["validate"]).exit_code == 2


def test_validate_cli_record_has_json_types():
    result = runner.invoke(app, ["validate", str(EXAMPLES), "--json"])
    score = next(json.loads(line) for line in result.stdout.splitlines() if '"edu.school.score"' in line)
    assert score["record"]["score"] == 8.5 and score["record"]["recorded_at"].endswith("Z")


def test_report_matches_the_public_shape_for_invalid():
    shape = report(validate({"event_id": "x"}))
    assert shape["valid"] is False and shape["event_id"] == "x" and shape["errors"][0]["rule"]

"""Subscription policies: the filter language, projection, PII masking, projected schemas, demo subscribers."""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import avro.schema
import fastavro
import pytest

from hub.core.config import ConfigError
from hub.contract.schemas import Catalogue, dumps
from hub.routing.errors import SubscriptionError
from hub.routing.filters import compile_filter
from hub.routing.masking import mask_name, mask_string
from hub.routing.policy import SubscriptionPolicy, load_subscriptions
from hub.routing.subscriptions import DEMO_SUBSCRIPTIONS, SubscriptionConfig
from hub.stages.validate import Valid, Validator

ROOT = Path(__file__).resolve().parents[2]
KEY = b"0123456789abcdef-master-key"
CATALOGUE = Catalogue.load()
NOW = datetime(2026, 5, 20, 3, 0, tzinfo=timezone.utc)


def _examples() -> dict[str, list[dict]]:
    validator = Validator(CATALOGUE)
    out: dict[str, list[dict]] = {}
    for line in (ROOT / "examples" / "entities.jsonl").read_bytes().splitlines():
        if not line.strip():
            continue
        result = validator.validate(line, now=NOW)
        assert isinstance(result, Valid), result
        out.setdefault(result.entity.entity, []).append(result.record)
    return out


EXAMPLES = _examples()


def record(entity: str) -> dict:
    return EXAMPLES[entity][0]


def policy(**config) -> SubscriptionPolicy:
    config.setdefault("id", "test-sub")
    config.setdefault("entities", ["*"])
    return SubscriptionPolicy(SubscriptionConfig.model_validate(config), CATALOGUE, KEY)


def roundtrip(p: SubscriptionPolicy, entity: str, projected: dict) -> dict:
    schema = p.projected_schema(entity)
    parsed = fastavro.parse_schema(schema)
    avro.schema.parse(json.dumps(schema))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, projected)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, parsed)


# --------------------------------------------------------------------------- filter language

STUDENT = record("school.student")
SCORE = record("school.score")


@pytest.mark.parametrize("expr, expected", [
    ("grade == 10", True), ("grade != 10", False), ("grade < 11", True), ("grade <= 10", True),
    ("grade > 10", False), ("grade >= 10", True), ("school_code == 'HP031'", True),
    ('school_code == "HP032"', False), ("gender in ['MALE', 'FEMALE']", True), ("grade in [1, 2]", False),
    ("grade not in [1, 2]", True), ("grade not in [10]", False), ("grade in []", False),
    ("address.province_code == '31'", True), ("address.ward_code == '11383'", True),
    ("address.nope == null", True), ("date_of_birth < '2010-01-01'", True),
    ("date_of_birth == '2009-03-15'", True), ("date_of_birth > '2009-03-15'", False),
    ("date_of_birth >= \"2009-03-15\"", True), ("date_of_birth == 'not a date'", False),
    ("date_of_birth != 'not a date'", True), ("grade == '10'", False), ("school_code < 5", False),
])
def test_filter_operators(expr, expected):
    assert compile_filter(expr)(STUDENT) is expected


@pytest.mark.parametrize("expr, expected", [
    ("score == 8.5", True), ("score == 8.50", True), ("score > 8", True), ("score >= 8.51", False),
    ("score < 10", True), ("score in [8.5, 9]", True), ("seq == 2", True), ("term == 1", True),
    ("pass_result == null", True), ("pass_result != null", False), ("pass_result < 'X'", False),
    ("pass_result > 'X'", False), ("pass_result in [null]", True), ("pass_result not in [null]", False),
    ("recorded_at > '2025-10-01T00:00:00+07:00'", True), ("recorded_at == '2025-10-15T02:30:00Z'", True),
    ("kind == 'REGULAR' and seq == 2", True),
])
def test_filter_decimals_nulls_timestamps(expr, expected):
    assert compile_filter(expr)(SCORE) is expected


def test_filter_missing_field_is_null():
    assert compile_filter("guardian_phone == null")({"grade": 1})
    assert not compile_filter("guardian_phone < 'x'")({"grade": 1})
    assert not compile_filter("guardian_phone >= null")({"grade": 1})


def test_filter_booleans():
    result = record("exam.result")
    assert compile_filter("passed")(result)
    assert compile_filter("passed == true and not passed == false")(result)
    assert not compile_filter("not passed")(result)
    assert not compile_filter("passed == 1")(result)  # booleans compare only with booleans
    assert compile_filter("scores.MATH > 8 and graduation_score >= 7.89")(result)
    assert not compile_filter("exam_year")(result)  # a bare non-boolean operand is not true


def test_filter_precedence_and_parentheses():
    # and binds tighter than or
    assert compile_filter("grade == 1 and grade == 2 or grade == 10")(STUDENT)
    assert compile_filter("grade == 10 or grade == 1 and grade == 2")(STUDENT)
    assert not compile_filter("(grade == 10 or grade == 1) and grade == 2")(STUDENT)
    # not binds tighter than and / or, and applies to the comparison after it
    assert not compile_filter("not grade == 10")(STUDENT)
    assert compile_filter("not grade == 1 and grade == 10")(STUDENT)
    assert compile_filter("not grade == 10 or grade == 10")(STUDENT)
    assert not compile_filter("not (grade == 10 or grade == 1)")(STUDENT)
    assert compile_filter("not not grade == 10")(STUDENT)
    assert compile_filter("((grade == 10))")(STUDENT)


def test_filter_string_escapes():
    assert compile_filter(r"full_name != 'O\'Brien'")(STUDENT)
    assert compile_filter('full_name == "Nguyễn Thị Thu Hà"')(STUDENT)


@pytest.mark.parametrize("expr, position, expected", [
    ("grade == ", 10, "expected a value"),
    ("(grade == 10", 13, "')' to close the '(' at position 1"),
    ("grade == 10)", 12, "'and', 'or', a comparison operator or the end"),
    ("grade = 10", 7, "expected a field, a literal"),
    ("grade == 10 and", 16, "expected a value"),
    ("grade in 10", 10, "'[' starting a list"),
    ("grade in [1, grade]", 14, "a literal"),
    ("grade in [1 2]", 13, "',' or ']'"),
    ("name == 'open", 9, "expected a field, a literal"),
    ("__import__('os')", 1, "expected a field"),
    ("school_code.__class__", 13, "a field name (starting with a letter) after '.'"),
    ("'x'.upper()", 4, "expected a field"),
    ("grade == 10 ; drop", 13, "expected a field"),
    ("grade == 10A1", 10, "expected a field"),
])
def test_filter_syntax_errors_name_position(expr, position, expected):
    with pytest.raises(SubscriptionError) as info:
        compile_filter(expr)
    assert f"position {position}:" in str(info.value)
    assert expected in str(info.value)
    assert info.value.key == "filter"


def test_filter_never_evaluates_code():
    for expr in ["__import__('os').system('true')", "grade.__class__", "open('x')", "lambda: 1", "grade == (1)()"]:
        with pytest.raises(SubscriptionError):
            compile_filter(expr)


def test_filter_nesting_limit():
    with pytest.raises(SubscriptionError, match="nested"):
        compile_filter("(" * 100 + "grade == 1" + ")" * 100)
    with pytest.raises(SubscriptionError):
        compile_filter("")


def test_filter_unknown_field_is_a_config_error():
    with pytest.raises(SubscriptionError, match="'grad' at position 1 exists in no subscribed entity"):
        policy(entities=["school.student"], filter="grad == 10")
    with pytest.raises(SubscriptionError, match="address.city"):
        policy(filter="address.city == 'x'")


def test_filter_field_missing_in_some_entities_rejects_their_rows():
    p = policy(filter="address.province_code == '31'", pii_default="keep")
    assert p.apply("school.student", STUDENT) is not None
    assert p.apply("school.score", SCORE) is None
    other = dict(STUDENT, address=dict(STUDENT["address"], province_code="01"))
    assert p.apply("school.student", other) is None


def test_filter_runs_on_the_full_record_before_projection():
    p = policy(entities=["school.student"], filter="class_name == '10A1' and school_code != null",
               fields={"school.student": ["grade"]})
    assert STUDENT["class_name"] == "10A1"
    assert p.apply("school.student", STUDENT) == {"student_id": p.pseudonymise(STUDENT["student_id"]), "grade": 10}


# --------------------------------------------------------------------------- projection and PII


def test_projection_keeps_key_fields():
    p = policy(entities=["school.score"], fields={"school.score": ["score"]}, pii={"student_id": "keep"})
    out = p.apply("school.score", SCORE)
    assert list(out) == ["student_id", "school_year", "term", "subject", "kind", "seq", "score"]
    assert out["score"] == Decimal("8.50")
    assert p.key_of("school.score", out) == "031309001234|2025-2026|1|MATH|REGULAR|2"
    assert roundtrip(p, "school.score", out) == out


def test_apply_does_not_modify_input_and_skips_unsubscribed():
    before = json.loads(dumps(STUDENT))
    p = policy(entities=["school.student"], pii={"address": "mask", "full_name": "mask"})
    out = p.apply("school.student", STUDENT)
    assert json.loads(dumps(STUDENT)) == before
    out["nationality"] = "XX"
    assert STUDENT["nationality"] == "VN"
    assert p.apply("school.score", SCORE) is None


def test_pii_policies_on_student():
    p = policy(entities=["school.student"], pii={
        "student_id": "keep", "full_name": "mask", "date_of_birth": "mask", "address": "mask",
        "guardian_phone": "mask"})
    out = p.apply("school.student", STUDENT)
    assert out["student_id"] == "031309001234"
    assert out["full_name"] == "N. T. T. H."
    assert out["date_of_birth"] == 2009
    assert out["address"] == {"province_code": "31", "ward_code": None, "street": None}
    assert out["guardian_phone"] == "********5678"
    assert roundtrip(p, "school.student", out) == out
    fields = {f["name"]: f for f in p.projected_schema("school.student")["fields"]}
    assert fields["date_of_birth"]["type"] == "int" and fields["date_of_birth"]["doc"].endswith("(masked)")
    assert fields["full_name"]["eduhub.pii_policy"] == "mask" and "eduhub.text" not in fields["full_name"]
    assert fields["student_id"]["pii"] is True and "eduhub.pii_policy" not in fields["student_id"]
    assert "pii" not in fields["grade"]
    ward = next(f for f in fields["address"]["type"]["fields"] if f["name"] == "ward_code")
    assert ward["type"] == ["null", "string"] and ward["default"] is None


def test_pii_default_drop_removes_fields():
    p = policy(entities=["school.student", "school.teacher"], pii={"student_id": "keep"})
    out = p.apply("school.student", STUDENT)
    for name in ("full_name", "date_of_birth", "address", "guardian_phone"):
        assert name not in out
    assert out["student_id"] == "031309001234"
    teacher = p.apply("school.teacher", record("school.teacher"))
    assert set(teacher) == {"teacher_id", "gender", "school_code", "subjects", "status"}
    names = [f["name"] for f in p.projected_schema("school.teacher")["fields"]]
    assert names == ["teacher_id", "gender", "school_code", "subjects", "status"]
    assert roundtrip(p, "school.teacher", teacher) == teacher


def test_mask_helpers():
    assert mask_string("0912345678") == "******5678"
    assert mask_string("+84912345678") == "********5678"
    assert mask_string("031309001234") == "********1234"
    assert mask_string("abcdef") == "a****f"
    assert mask_string("abc") == "***"
    assert mask_name("Nguyễn Thị Thu Hà") == "N. T. T. H."
    assert mask_name("Đỗ Minh Khôi") == "Đ. M. K."


def test_pseudonymise_strings_dates_records_and_nullables():
    p = policy(entities=["school.student"], pii_default="pseudonymise")
    out = p.apply("school.student", STUDENT)
    for name in ("student_id", "full_name", "date_of_birth", "address", "guardian_phone"):
        assert isinstance(out[name], str) and len(out[name]) == 32
        int(out[name], 16)
    assert out["date_of_birth"] == p.pseudonymise(date(2009, 3, 15)) == p.pseudonymise("2009-03-15")
    assert out["address"] == p.pseudonymise(STUDENT["address"])
    no_phone = p.apply("school.student", dict(STUDENT, guardian_phone=None))
    assert no_phone["guardian_phone"] is None
    fields = {f["name"]: f for f in p.projected_schema("school.student")["fields"]}
    assert fields["guardian_phone"]["type"] == ["null", "string"]
    assert fields["address"]["type"] == "string" and fields["address"]["doc"].endswith("(pseudonymised)")
    assert roundtrip(p, "school.student", out) == out
    assert roundtrip(p, "school.student", no_phone) == no_phone


def test_pseudonyms_stable_per_subscriber_and_different_across():
    a1 = policy(id="sub-a", pii_default="pseudonymise")
    a2 = policy(id="sub-a", pii_default="pseudonymise")
    b = policy(id="sub-b", pii_default="pseudonymise")
    sa = a1.apply("school.student", STUDENT)["student_id"]
    assert sa == a2.apply("school.student", STUDENT)["student_id"]
    assert sa == a1.apply("school.score", SCORE)["student_id"]  # joinable across entities
    assert sa != b.apply("school.student", STUDENT)["student_id"]
    other_key = SubscriptionPolicy(SubscriptionConfig(id="sub-a", entities=["*"], pii_default="pseudonymise"),
                                   CATALOGUE, b"another-master-key-0000")
    assert sa != other_key.apply("school.student", STUDENT)["student_id"]


@pytest.mark.parametrize("policy_name", ["drop", "mask"])
def test_key_fields_that_are_pii_are_forced_to_pseudonymise(policy_name):
    p = policy(entities=["school.student", "school.score"], pii={"student_id": policy_name})
    assert p.policy_of("school.student", "student_id") == "pseudonymise"
    student = p.apply("school.student", STUDENT)
    assert student["student_id"] == p.pseudonymise("031309001234")
    assert p.key_of("school.student", student) == p.pseudonymise("031309001234")
    score = p.apply("school.score", SCORE)
    key = p.key_of("school.score", score)
    assert "031309001234" not in key and key.endswith("|2025-2026|1|MATH|REGULAR|2")
    assert p.key_for_delete("school.score", "031309001234|2025-2026|1|MATH|REGULAR|2") == key
    assert p.key_for_delete("school.student", "031309001234") == student["student_id"]
    assert roundtrip(p, "school.score", score) == score


def test_mask_on_registration_strings_names_dates():
    p = policy(entities=["exam.registration"], pii_default="mask")
    out = p.apply("exam.registration", record("exam.registration"))
    assert out["national_id"] == "********1122" and out["full_name"] == "L. M. Q." and out["date_of_birth"] == 2008
    assert roundtrip(p, "exam.registration", out) == out


def test_mask_of_unsupported_type_is_refused(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "thing.avsc").write_text(json.dumps({
        "type": "record", "name": "Thing", "namespace": "vn.edu.demo", "eduhub.key": ["id"],
        "fields": [{"name": "id", "type": "string"},
                   {"name": "income", "type": "int", "pii": True, "doc": "Household income."}]}))
    catalogue = Catalogue.load(tmp_path)
    config = SubscriptionConfig(id="abc", entities=["demo.thing"], pii={"income": "mask"})
    with pytest.raises(SubscriptionError, match="mask is not supported for a field of type int") as info:
        SubscriptionPolicy(config, catalogue, KEY)
    assert info.value.key == "pii.income"
    ok = SubscriptionPolicy(config.model_copy(update={"pii": {"income": "pseudonymise"}}), catalogue, KEY)
    out = ok.apply("demo.thing", {"id": "t1", "income": 5})
    assert out == {"id": "t1", "income": ok.pseudonymise(5)}


def test_projected_schema_names_and_attributes():
    p = policy(id="my-sub", entities=["enrollment.application"], pii_default="pseudonymise")
    schema = p.projected_schema("enrollment.application")
    assert schema["name"] == "Application" and schema["namespace"] == "vn.edu.sub.my_sub"
    assert schema["eduhub.key"] == ["application_id"]
    parsed = avro.schema.parse(json.dumps(schema))
    assert parsed.fullname == "vn.edu.sub.my_sub.Application"
    schema["fields"].clear()
    assert p.projected_schema("enrollment.application")["fields"]  # callers get a copy
    assert p.topic("enrollment.application") == "sub.my-sub.enrollment.application"
    with pytest.raises(SubscriptionError):
        p.projected_schema("school.student")


def test_named_type_defined_in_a_dropped_field_is_inlined():
    # school.score's SchoolSubject is defined inline in `subject`; a projection without it still parses
    # (subject is a key field, so check with exam.registration: Gender is defined in `gender` only).
    p = policy(entities=["exam.registration"], fields={"exam.registration": ["subjects", "status"]},
               pii_default="drop")
    out = p.apply("exam.registration", record("exam.registration"))
    assert set(out) == {"registration_id", "subjects", "status"}
    assert roundtrip(p, "exam.registration", out) == out


def test_every_entity_roundtrips_for_every_policy_kind():
    for default in ("keep", "drop", "pseudonymise"):
        p = policy(pii_default=default, pii={"address": "mask"} if default != "drop" else {})
        for entity, records in EXAMPLES.items():
            for r in records:
                out = p.apply(entity, r)
                assert roundtrip(p, entity, out) == out, (default, entity)
                p.key_of(entity, out)


# --------------------------------------------------------------------------- demo subscribers


def _pii_fields(entity: str) -> dict[str, dict]:
    return {f["name"]: f for f in CATALOGUE[entity].schema["fields"] if f.get("pii")}


def test_demo_subscriptions_validate_and_protect_pii():
    policies = load_subscriptions(DEMO_SUBSCRIPTIONS, CATALOGUE, KEY)
    assert [p.id for p in policies] == ["moet-sync", "exam-mgmt", "admission-results", "analytics", "parent-app"]
    for p in policies:
        for entity, records in EXAMPLES.items():
            for r in records:
                out = p.apply(entity, r)
                if entity not in p.entities:
                    assert out is None
                    continue
                assert out is not None
                assert roundtrip(p, entity, out) == out
                text = dumps(out)
                for name in _pii_fields(entity):
                    effective = p.policy_of(entity, name)
                    if effective == "keep" or r.get(name) is None:
                        continue
                    if name in out:
                        assert out[name] != r[name], (p.id, entity, name)
                    clear = r[name] if isinstance(r[name], str) else None
                    if clear:
                        assert clear not in text, (p.id, entity, name)
                    if isinstance(r[name], date):
                        assert r[name].isoformat() not in text


def test_demo_policies_in_detail():
    by_id = {p.id: p for p in load_subscriptions(DEMO_SUBSCRIPTIONS, CATALOGUE, KEY)}
    assert by_id["moet-sync"].apply("school.student", STUDENT) == STUDENT
    assert by_id["exam-mgmt"].entities == {"exam.registration", "exam.result"}
    assert by_id["exam-mgmt"].apply("exam.result", record("exam.result"))["national_id"] == "031208001122"

    admission = by_id["admission-results"]
    app = admission.apply("enrollment.application", record("enrollment.application"))
    assert app["full_name"] == "T. V. H." and "date_of_birth" not in app
    assert app["applicant_id"] == admission.pseudonymise("030211007890")

    analytics = by_id["analytics"]
    identifiers = {"031309001234", "031185004321", "030211007890", "031215004567", "031208001122",
                   "Nguyễn Thị Thu Hà", "Phạm Thị Hoà", "Trần Văn Hòa", "Đỗ Minh Khôi", "Lê Minh Quân",
                   "+84912345678", "+84987654321", "hoa.pt@haiphong.edu.vn", "Số 12 phố Lạch Tray"}
    for entity, records in EXAMPLES.items():
        for r in records:
            text = dumps(analytics.apply(entity, r))
            for value in identifiers:
                assert value not in text, (entity, value)
    student = analytics.apply("school.student", STUDENT)
    assert student["address"] == {"province_code": "31", "ward_code": None, "street": None}
    assert student["date_of_birth"] == 2009 and "full_name" not in student

    parent = by_id["parent-app"]
    assert parent.entities == {"school.score", "school.term_result"}
    assert parent.apply("school.student", STUDENT) is None
    for entity in ("school.score", "school.term_result"):
        out = parent.apply(entity, record(entity))
        assert "031309001234" not in dumps(out) and "031309001234" not in parent.key_of(entity, out)
        assert out["student_id"] == parent.pseudonymise("031309001234")
    assert "teacher_id" not in parent.apply("school.score", SCORE)
    assert parent.config.delivery.kind == "http"


# --------------------------------------------------------------------------- configuration errors


def _error(raw: list[dict]) -> str:
    with pytest.raises(ConfigError) as info:
        load_subscriptions(raw, CATALOGUE, KEY)
    return str(info.value)


def test_config_errors_name_the_key():
    assert "subscriptions.0.id" in _error([{"id": "Bad_ID", "entities": ["*"]}])
    assert "subscriptions.0.entities" in _error([{"id": "abc", "entities": []}])
    message = _error([{"id": "abc", "entities": ["*"], "colour": "red"}])
    assert "subscriptions.0.colour: unknown key" in message
    message = _error([{"id": "abc", "entities": ["*"], "pii_default": "hide"}])
    assert "subscriptions.0.pii_default" in message and "keep, drop, mask or pseudonymise" in message
    message = _error([{"id": "abc", "entities": ["*"]}, {"id": "def", "entities": ["school.pupil"]}])
    assert message.startswith("subscriptions.1.entities: unknown entity 'school.pupil'")
    message = _error([{"id": "abc", "entities": ["*"], "filter": "grade =="}])
    assert "subscriptions.0.filter" in message and "position 9" in message
    message = _error([{"id": "abc", "entities": ["school.score"], "filter": "grade == 10"}])
    assert message.startswith("subscriptions.0.filter: filter: field 'grade'")
    message = _error([{"id": "abc", "entities": ["school.score"], "fields": {"school.score": ["mark"]}}])
    assert message.startswith("subscriptions.0.fields.school.score: school.score has no field 'mark'")
    message = _error([{"id": "abc", "entities": ["school.score"], "pii": {"full_name": "keep"}}])
    assert message.startswith("subscriptions.0.pii.full_name:")
    message = _error([{"id": "abc", "entities": ["*", "school.score"]}])
    assert "subscriptions.0.entities" in message
    message = _error([{"id": "abc", "entities": ["school.score"], "fields": {"school.student": ["grade"]}}])
    assert message.startswith("subscriptions.0.fields.school.student: 'school.student' is not among the subscribed")
    message = _error([{"id": "abc", "entities": ["*"], "delivery": {"kind": "http", "url": "ftp://x"}}])
    assert "subscriptions.0.delivery.http.url" in message and "subscriptions.0.delivery.http.secret_env" in message
    message = _error([{"id": "abc", "entities": ["*"]}, {"id": "abc", "entities": ["school.score"]}])
    assert "subscriptions.1.id" in message and "twice" in message
    assert "subscriptions.0:" in _error(["not a mapping"])


def test_master_key_too_short():
    with pytest.raises(SubscriptionError, match="16 bytes"):
        SubscriptionPolicy(SubscriptionConfig(id="abc", entities=["*"]), CATALOGUE, b"short")


def test_a_plain_http_subscriber_is_refused_naming_the_subscriber_and_the_fix():
    with pytest.raises(ConfigError) as refused:
        load_subscriptions([{"id": "parent-app", "entities": ["school.score"],
                             "delivery": {"kind": "http", "url": "http://parents.example.org/hook",
                                          "secret_env": "X"}}], CATALOGUE, KEY)
    assert "'parent-app'" in str(refused.value) and "https://parents.example.org/hook" in str(refused.value)

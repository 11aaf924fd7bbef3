"""The PII policy: tags at every depth, person-level identifiers, short masks, filters that reveal nothing."""

from __future__ import annotations

import json
import re

import pytest

from hub.contract.pii import IDENTIFIER, tagged_fields
from hub.contract.schemas import Catalogue, dumps
from hub.core.config import ConfigError
from hub.routing.errors import SubscriptionError
from hub.routing.masking import mask_string
from hub.routing.policy import SubscriptionPolicy, load_subscriptions
from hub.routing.subscriptions import DEMO_SUBSCRIPTIONS, SubscriptionConfig
from tests.unit.test_subscriptions import CATALOGUE, EXAMPLES, KEY, STUDENT, policy, record, roundtrip

# --------------------------------------------------------------------------- tags at every depth

FAMILY = {
    "type": "record", "name": "Family", "namespace": "vn.edu.demo", "eduhub.key": ["id"], "doc": "x",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "guardian", "type": {"type": "record", "name": "Guardian", "fields": [
            {"name": "relation", "type": "string"},
            {"name": "full_name", "type": "string", "pii": True, "eduhub.text": "person_name"},
            {"name": "phone", "type": ["null", "string"], "default": None, "pii": True}]}},
        {"name": "siblings", "type": {"type": "array", "items": {"type": "record", "name": "Sibling", "fields": [
            {"name": "grade", "type": "int"},
            {"name": "national_id", "type": "string", "pii": True}]}}},
        {"name": "contact", "type": ["null", {"type": "record", "name": "Contact", "fields": [
            {"name": "kind", "type": "string"},
            {"name": "email", "type": "string", "pii": True}]}], "default": None},
        {"name": "backup", "type": ["null", "Guardian"], "default": None},
        {"name": "cousins", "type": {"type": "map", "values": "Sibling"}},
    ]}
CLEAR = ("Nguyễn Văn Bố", "+84912345678", "031309001234", "030211007890", "me@example.vn", "Trần Thị Mẹ",
         "+84987654321", "031215004567")
ROW = {"id": "f1",
       "guardian": {"relation": "FATHER", "full_name": "Nguyễn Văn Bố", "phone": "+84912345678"},
       "siblings": [{"grade": 7, "national_id": "031309001234"}, {"grade": 3, "national_id": "030211007890"}],
       "contact": {"kind": "HOME", "email": "me@example.vn"},
       "backup": {"relation": "MOTHER", "full_name": "Trần Thị Mẹ", "phone": "+84987654321"},
       "cousins": {"an": {"grade": 9, "national_id": "031215004567"}}}


@pytest.fixture
def family(tmp_path) -> Catalogue:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "family.avsc").write_text(json.dumps(FAMILY))
    return Catalogue.load(tmp_path)


def family_policy(catalogue: Catalogue, **config) -> SubscriptionPolicy:
    return SubscriptionPolicy(SubscriptionConfig(id="fam-sub", entities=["demo.family"], **config), catalogue, KEY)


def test_tags_are_found_at_every_depth(family):
    assert set(tagged_fields(family["demo.family"].schema)) == {
        "guardian.full_name", "guardian.phone", "siblings.national_id", "contact.email", "backup.full_name",
        "backup.phone", "cousins.national_id"}


@pytest.mark.parametrize("default", ["drop", "pseudonymise", "mask"])
def test_nested_pii_follows_the_policy_in_records_arrays_unions_and_maps(family, default):
    """Before: only top-level tags counted, so every value of ROW went out in clear."""
    p = family_policy(family, pii_default=default)
    out = p.apply("demo.family", ROW)
    assert roundtrip(p, "demo.family", out) == out
    text = dumps(out)
    for value in CLEAR:
        assert value not in text, (default, value)
    assert out["guardian"]["relation"] == "FATHER" and out["siblings"][1]["grade"] == 3  # untagged stay
    assert out["contact"]["kind"] == "HOME" and out["cousins"]["an"]["grade"] == 9
    if default == "drop":
        assert out["guardian"] == {"relation": "FATHER"} and out["siblings"][0] == {"grade": 7}
    elif default == "pseudonymise":
        assert out["siblings"][0]["national_id"] == p.pseudonymise("031309001234")
        assert out["backup"]["phone"] == p.pseudonymise("+84987654321")
    else:
        assert out["guardian"]["full_name"] == "N. V. B." and out["guardian"]["phone"] == "********5678"
    assert family_policy(family, pii_default=default).apply("demo.family", dict(ROW, contact=None))["contact"] is None


def test_nested_policies_are_set_by_path(family):
    p = family_policy(family, pii={"guardian.phone": "keep", "siblings.national_id": "pseudonymise"})
    out = p.apply("demo.family", ROW)
    assert out["guardian"] == {"relation": "FATHER", "phone": "+84912345678"}
    assert out["backup"] == {"relation": "MOTHER"}  # the same type elsewhere follows its own path's policy
    assert out["siblings"][0]["national_id"] == p.pseudonymise("031309001234")
    assert roundtrip(p, "demo.family", out) == out
    fields = {f["name"]: f for f in p.projected_schema("demo.family")["fields"]}
    assert fields["backup"]["type"][1]["name"] != "Guardian"  # a different copy of Guardian, named apart
    with pytest.raises(SubscriptionError, match="'phone' is not a PII or identifier field"):
        family_policy(family, pii={"phone": "keep"})


def test_a_filter_on_a_nested_field_the_policy_hides_is_refused(family):
    family_policy(family, filter="guardian.relation == 'FATHER'")
    with pytest.raises(SubscriptionError, match="demo.family.guardian.phone is dropped"):
        family_policy(family, filter="guardian.phone != null")

# --------------------------------------------------------------------------- person-level identifiers


PERSON_KEYS = {"enrollment.application": "application_id", "enrollment.result": "application_id",
               "exam.registration": "registration_id", "exam.result": "candidate_number",
               "school.teacher": "teacher_id"}


def test_person_level_keys_are_tagged_identifiers():
    for entity, name in PERSON_KEYS.items():
        assert tagged_fields(CATALOGUE[entity].schema)[name].get(IDENTIFIER) is True, entity
    for entity, name in (("school.score", "teacher_id"), ("school.class", "homeroom_teacher_id")):
        assert tagged_fields(CATALOGUE[entity].schema)[name].get(IDENTIFIER) is True
    assert "class_id" not in tagged_fields(CATALOGUE["school.class"].schema)


def test_identifiers_follow_the_policy_like_pii_even_in_the_kafka_key():
    """Before: application_id, registration_id and candidate_number went in clear, in values and keys."""
    by_id = {p.id: p for p in load_subscriptions(DEMO_SUBSCRIPTIONS, CATALOGUE, KEY)}
    analytics, admission, moet = by_id["analytics"], by_id["admission-results"], by_id["moet-sync"]
    for entity, name in PERSON_KEYS.items():
        clear = record(entity)[name]
        out = analytics.apply(entity, record(entity))
        assert out[name] == analytics.pseudonymise(clear) and clear not in analytics.key_of(entity, out)
        canonical_key = CATALOGUE[entity].key_of(record(entity))
        assert analytics.key_for_delete(entity, canonical_key) == analytics.key_of(entity, out)
        assert moet.apply(entity, record(entity))[name] == clear  # pii_default keep: the system of record
    result = analytics.apply("exam.result", record("exam.result"))
    assert analytics.key_of("exam.result", result) == f"{result['exam_year']}|{result['candidate_number']}"
    application = admission.apply("enrollment.application", record("enrollment.application"))
    outcome = admission.apply("enrollment.result", record("enrollment.result"))
    assert application["application_id"] == outcome["application_id"] != record("enrollment.result")["application_id"]
    assert analytics.apply("school.score", record("school.score"))["teacher_id"] == analytics.pseudonymise(
        record("school.score")["teacher_id"])
    field = next(f for f in analytics.projected_schema("exam.result")["fields"] if f["name"] == "candidate_number")
    assert field[IDENTIFIER] is True and field["eduhub.pii_policy"] == "pseudonymise"


def test_no_two_subscribers_that_protect_persons_share_a_join_key():
    """A subscriber whose policy protects persons gets keys no other subscriber has (moet-sync and exam-mgmt
    keep everything: they are systems of record)."""
    policies = load_subscriptions(DEMO_SUBSCRIPTIONS, CATALOGUE, KEY)
    for entity, records in EXAMPLES.items():
        keys = {p.id: {p.key_of(entity, out) for out in (p.apply(entity, r) for r in records) if out}
                for p in policies if entity in p.entities}
        for sub in set(keys) - {"moet-sync", "exam-mgmt"}:
            for other, theirs in keys.items():
                if other != sub and entity != "school.class" and entity != "school.school":
                    assert not keys[sub] & theirs, (entity, sub, other)

# --------------------------------------------------------------------------- masks


def test_masks_leave_at_most_4_characters_of_an_id_or_phone_visible():
    """Before: 031206001234 → 0312*****234 (7 visible)."""
    assert mask_string("031206001234") == "********1234"
    p = policy(pii_default="mask", pii={"student_id": "keep"})
    for entity, records in EXAMPLES.items():
        for r in records:
            out = p.apply(entity, r)
            for path, field in tagged_fields(CATALOGUE[entity].schema).items():
                value, clear = out.get(path), r.get(path)
                if not isinstance(clear, str) or field.get("eduhub.text") == "person_name" or path == "student_id":
                    continue
                if path in CATALOGUE[entity].key_fields:
                    assert value == p.pseudonymise(clear)  # a key is pseudonymised, never masked
                else:
                    assert len(value.replace("*", "")) <= 4 and value.endswith(clear[-4:]), (entity, path, value)

# --------------------------------------------------------------------------- filters


def _error(subscription: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_subscriptions([{"id": "moet-sync", "entities": ["*"], "pii_default": "keep"}, subscription],
                           CATALOGUE, KEY)
    return str(info.value)


@pytest.mark.parametrize("config, field, done", [
    ({"entities": ["school.student"], "filter": "student_id == '031309001234'", "pii_default": "pseudonymise"},
     "school.student.student_id", "pseudonymised"),
    ({"entities": ["school.student"], "filter": "guardian_phone != null"}, "school.student.guardian_phone",
     "dropped"),
    ({"entities": ["school.student"], "filter": "full_name == 'Nguyễn Thị Thu Hà'", "pii": {"full_name": "mask"}},
     "school.student.full_name", "masked"),
    ({"entities": ["school.student"], "filter": "grade == 10 and address.street != null",
      "pii": {"address": "mask"}}, "school.student.address", "masked"),
    ({"entities": ["school.score"], "filter": "teacher_id == 'GV001'", "pii_default": "pseudonymise"},
     "school.score.teacher_id", "pseudonymised"),
])
def test_a_filter_may_not_read_what_the_policy_hides(config, field, done):
    """Before: the filter ran on the full record, so a subscriber could select rows by a value it may not see."""
    message = _error({"id": "leaky-sub", **config})
    assert message.startswith("subscriptions.1.filter: subscriber 'leaky-sub'"), message
    assert config["filter"] in message and f"{field} is {done}" in message


def test_a_filter_may_read_what_the_subscriber_sees():
    p = policy(entities=["school.student"], filter="address.province_code == '31'", pii={"address": "mask"})
    assert p.apply("school.student", STUDENT)["address"]["province_code"] == "31"
    policy(entities=["school.student"], filter="student_id != null", pii={"student_id": "keep"})
    policy(entities=["*"], filter="grade >= 10", pii_default="pseudonymise")
    assert re.fullmatch(r"[0-9a-f]{32}", policy(pii_default="pseudonymise").pseudonymise("x"))

"""The exam registration simulator sends realistic envelopes, valid unless told otherwise."""

from __future__ import annotations

import doctest
import json
import random
import re
import sys
import unicodedata
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from any directory, installed or not
    sys.path.insert(0, str(ROOT))

from hub.demo.simulators import admission, exam, marks, outbox, people, sheets, smas, smas_rows, smas_schema  # noqa: E402
from hub.demo.simulators import (  # noqa: E402
    BAD_KINDS,
    HAIPHONG_SCHOOLS,
    ExamRegistrationSimulator,
    person_id,
    vietnamese_name,
)

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
REQUIRED_TOP = {"event_id", "source", "entity", "op", "key", "occurred_at", "data"}
ALLOWED_TOP = REQUIRED_TOP | {"trace_id"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
SCHEMA = json.loads((ROOT / "schemas" / "exam" / "registration.avsc").read_text(encoding="utf-8"))


def _enum(type_name: str) -> set[str]:
    """Symbols of a named enum in the registration schema, without the reader-only default."""
    found: list[set[str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") == type_name:
                found.append(set(node["symbols"]) - {node.get("default")})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMA)
    assert found, type_name
    return found[0]


FIELDS = {field["name"] for field in SCHEMA["fields"]}
SUBJECTS = _enum("ExamSubject")
ELECTIVES = SUBJECTS - {"MATH", "LITERATURE"}


def violations(env: dict, now: datetime = NOW) -> set[str]:
    """Which rules of the data dictionary an envelope breaks, named as in BAD_KINDS."""
    found: set[str] = set()
    if set(env) - ALLOWED_TOP or not REQUIRED_TOP <= set(env):
        found.add("unknown_field")
    try:
        uuid.UUID(env["event_id"])
    except ValueError:
        found.add("event_id_not_uuid")
    if not RFC3339.match(env["occurred_at"]):
        found.add("occurred_at_no_offset")
    elif datetime.fromisoformat(env["occurred_at"]) > now:
        found.add("occurred_at_in_future")
    if env["source"] != "exam-reg" or env["entity"] != "exam.registration" or env["op"] not in "cu":
        found.add("envelope")

    data = env["data"]
    if set(data) != FIELDS or env["key"] != data["registration_id"]:
        found.add("fields_or_key")
    name = unicodedata.normalize("NFC", data["full_name"])
    if any(ch.isdigit() for ch in name):
        found.add("name_digit")
    elif not all(unicodedata.category(ch)[0] in "LM" or ch in " -'" for ch in name):
        found.add("name_characters")

    nid, birth = data["national_id"], date.fromisoformat(data["date_of_birth"])
    if not re.fullmatch(r"\d{12}", nid):
        found.add("national_id_11_digits")
    else:
        g = int(nid[3])
        if 1900 + 100 * (g // 2) + int(nid[4:6]) != birth.year:
            found.add("national_id_year")
        if (g % 2 == 1) != (data["gender"] == "FEMALE"):
            found.add("national_id_gender_digit")

    subjects = data["subjects"]
    if not set(subjects) <= SUBJECTS or len(set(subjects)) != len(subjects):
        found.add("subjects_unknown_or_repeated")
    if data["candidate_type"] == "GRADUATED_FOR_ADMISSION":
        if not 1 <= len(subjects) <= 4:
            found.add("three_electives")
    elif subjects[:2] != ["MATH", "LITERATURE"] or len(subjects) != 4:
        found.add("three_electives")
    has_language = "FOREIGN_LANGUAGE" in subjects
    if data["foreign_language"] is not None and not has_language:
        found.add("language_without_subject")
    if data["foreign_language"] is None and has_language:
        found.add("subject_without_language")
    if data["language_exemption"]:
        cert = data["exemption_certificate"]
        june_first = date(data["exam_year"], 6, 1)
        if not has_language or not cert or date.fromisoformat(cert["expires_on"]) < june_first:
            found.add("exemption")
    elif data["exemption_certificate"] is not None:
        found.add("exemption")

    if data["exam_year"] - birth.year < 16:
        found.add("age")
    if data["candidate_type"] == "CURRENT_STUDENT" and data["school_code"] not in HAIPHONG_SCHOOLS:
        found.add("school_code")
    if not re.fullmatch(rf"{data['exam_year']}{data['council_code']}\d{{6}}", data["registration_id"]):
        found.add("registration_id")
    if (
        data["gender"] not in _enum("Gender")
        or data["candidate_type"] not in _enum("CandidateType")
        or data["priority_area"] not in _enum("PriorityArea")
        or data["status"] not in _enum("RegistrationStatus")
        or data["foreign_language"] not in _enum("ForeignLanguage") | {None}
        or data["priority_group"] not in {None, *(f"{i:02d}" for i in range(1, 8))}
    ):
        found.add("enum")
    if not RFC3339.match(data["registered_at"]) or datetime.fromisoformat(data["registered_at"]) > now:
        found.add("registered_at")
    return found


@pytest.fixture(scope="module")
def valid() -> list[dict]:
    return list(ExamRegistrationSimulator(seed=42).envelopes(1000, now=NOW))


def test_same_seed_same_envelopes() -> None:
    first = list(ExamRegistrationSimulator(seed=5, bad_ratio=0.2).envelopes(200, now=NOW))
    second = list(ExamRegistrationSimulator(seed=5, bad_ratio=0.2).envelopes(200, now=NOW))
    other = list(ExamRegistrationSimulator(seed=6, bad_ratio=0.2).envelopes(200, now=NOW))
    assert first == second
    assert first != other


def test_valid_envelopes_keep_every_rule(valid: list[dict]) -> None:
    for env in valid:
        assert violations(env) == set(), env
        assert set(env) <= ALLOWED_TOP and REQUIRED_TOP <= set(env)
        assert env["key"] == env["data"]["registration_id"]
        assert json.loads(json.dumps(env, ensure_ascii=False)) == env


def test_national_id_agrees_with_birth_and_gender(valid: list[dict]) -> None:
    for env in valid:
        data = env["data"]
        nid, birth = data["national_id"], date.fromisoformat(data["date_of_birth"])
        assert re.fullmatch(r"\d{12}", nid)
        assert int(nid[3]) == (2 if birth.year >= 2000 else 0) + (data["gender"] == "FEMALE")
        assert nid[4:6] == f"{birth.year % 100:02d}"
    provinces = {env["data"]["national_id"][:3] for env in valid}
    assert {"031", "030"} <= provinces


def test_subject_rules(valid: list[dict]) -> None:
    for env in valid:
        data = env["data"]
        subjects = data["subjects"]
        if data["candidate_type"] == "GRADUATED_FOR_ADMISSION":
            assert 1 <= len(subjects) == len(set(subjects)) <= 4
        else:
            assert subjects[:2] == ["MATH", "LITERATURE"]
            assert len(subjects) == 4 and len(set(subjects[2:])) == 2 and set(subjects[2:]) <= ELECTIVES
        assert (data["foreign_language"] is not None) == ("FOREIGN_LANGUAGE" in subjects)
        if data["candidate_type"] == "CURRENT_STUDENT":
            assert data["school_code"] in HAIPHONG_SCHOOLS
            assert date.fromisoformat(data["date_of_birth"]).year == data["exam_year"] - 18
        else:
            assert data["school_code"] is None


def test_mix_looks_like_a_registration_period(valid: list[dict]) -> None:
    data = [env["data"] for env in valid]
    types = {d["candidate_type"] for d in data}
    assert types == _enum("CandidateType")
    language_share = sum("FOREIGN_LANGUAGE" in d["subjects"] for d in data) / len(data)
    assert 0.45 < language_share < 0.75
    assert any(d["language_exemption"] for d in data)
    assert any(env["op"] == "u" for env in valid) and any("trace_id" in env for env in valid)
    assert len({env["event_id"] for env in valid}) == len(valid)


def test_updates_repeat_an_earlier_registration(valid: list[dict]) -> None:
    created: dict[str, str] = {}
    for env in valid:
        if env["op"] == "c":
            assert env["key"] not in created
            created[env["key"]] = env["occurred_at"]
        else:
            assert env["key"] in created
            assert datetime.fromisoformat(env["occurred_at"]) >= datetime.fromisoformat(created[env["key"]])


def test_nothing_in_the_future_before_the_registration_window() -> None:
    early = datetime(2026, 2, 1, tzinfo=UTC)
    for env in ExamRegistrationSimulator(seed=3).envelopes(300, now=early):
        assert violations(env, now=early) == set()


def test_some_names_arrive_decomposed(valid: list[dict]) -> None:
    names = [env["data"]["full_name"] for env in valid]
    nfd = [n for n in names if unicodedata.is_normalized("NFD", n) and unicodedata.normalize("NFC", n) != n]
    assert 50 <= len(nfd) <= 160  # nfd_ratio 0.1 of 1000
    assert any("  " in n for n in names)
    plain = ExamRegistrationSimulator(seed=42, nfd_ratio=0.0).envelopes(300, now=NOW)
    assert all(unicodedata.is_normalized("NFC", env["data"]["full_name"]) for env in plain)


def test_every_bad_envelope_breaks_exactly_its_rule() -> None:
    sim = ExamRegistrationSimulator(seed=9, bad_ratio=1.0)
    seen = set()
    for env in sim.envelopes(800, now=NOW):
        assert sim.last_bad_kind in BAD_KINDS
        assert violations(env) == {sim.last_bad_kind}, env
        seen.add(sim.last_bad_kind)
    assert seen == set(BAD_KINDS)


def test_bad_ratio_is_a_share() -> None:
    sim = ExamRegistrationSimulator(seed=11, bad_ratio=0.25)
    kinds = []
    for env in sim.envelopes(1000, now=NOW):
        kinds.append(sim.last_bad_kind)
        assert violations(env) == ({sim.last_bad_kind} if sim.last_bad_kind else set())
    assert 180 < sum(k is not None for k in kinds) < 320


def test_person_id_encodes_century_and_gender() -> None:
    rng = random.Random(0)
    assert person_id(rng, date(1999, 12, 31), "FEMALE").startswith("031199")
    assert person_id(rng, date(2008, 1, 2), "MALE", "030").startswith("030208")
    assert person_id(rng, date(2101, 5, 5), "FEMALE").startswith("031501")
    with pytest.raises(ValueError):
        person_id(rng, date(2008, 1, 2), "M")
    with pytest.raises(ValueError):
        person_id(rng, date(2008, 1, 2), "MALE", "31")


def test_vietnamese_name_matches_gender() -> None:
    rng = random.Random(1)
    for _ in range(300):
        female = vietnamese_name(rng, "FEMALE").split()
        male = vietnamese_name(rng, "MALE").split()
        assert "Văn" not in female and "Thị" not in male
        assert 3 <= len(female) <= 4 and 3 <= len(male) <= 4


def test_constructor_rejects_bad_settings() -> None:
    for kwargs in ({"source": "Exam_Reg"}, {"council_code": "3"}, {"bad_ratio": 1.5}, {"nfd_ratio": -0.1}):
        with pytest.raises(ValueError):
            ExamRegistrationSimulator(**kwargs)


def test_docstring_examples_run() -> None:
    # The simulators are a package now: doctest.testmod looks at one module's own objects only.
    results = [doctest.testmod(module) for module in
               (admission, exam, marks, outbox, people, sheets, smas, smas_rows, smas_schema)]
    attempted, failed = sum(r.attempted for r in results), sum(r.failed for r in results)
    assert attempted > 0 and failed == 0

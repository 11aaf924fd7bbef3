"""The source-system simulators: what each system stores or sends maps onto valid entities.

Rows of the school-management database, outbox payloads, the admission portal's envelopes and
the schools' spreadsheet rows are rebuilt into ingest envelopes and run through the hub's own
Validator: the valid ones must pass every rule, the deliberately broken ones must fail with the
rule they were built to break. SQLite in temporary folders, no network.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import hashlib
import hmac
import json
import re
import sys
import time
import unicodedata
import uuid
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from any directory, installed or not
    sys.path.insert(0, str(ROOT))

from hub.demo.simulators import (  # noqa: E402
    HAIPHONG_SCHOOLS,
    SMAS_BAD_KINDS,
    SMAS_TABLES,
    SPREADSHEET_BAD_KINDS,
    SPREADSHEET_SCORE_COLUMNS,
    AdmissionPortal,
    ExamRegistrationOutbox,
    ExamRegistrationSimulator,
    SchoolManagementDatabase,
    SchoolSpreadsheets,
    file_connector_config,
    outbox_connector_config,
    smas_connector_configs,
)
from hub.contract.schemas import Catalogue  # noqa: E402
from hub.stages.validate import Invalid, Valid, Validator  # noqa: E402

VN = timezone(timedelta(hours=7))
CATALOGUE = Catalogue.load()
VALIDATOR = Validator(CATALOGUE)
META_COLUMNS = {"id", "created_at", "updated_at", "deleted_at"}
COMMENT_GRADED = {"PE", "ARTS", "MUSIC", "FINE_ARTS", "EXPERIENTIAL", "LOCAL_EDU"}
MOBILE = re.compile(r"^0(3|5|7|8|9)[0-9]{8}$")
SEED_SIZE = {"schools": 3, "classes_per_school": 4, "students_per_class": 12, "teachers_per_school": 8}


# -- helpers ------------------------------------------------------------------------------------


def entity_key(entity: str, data: dict[str, Any] | None) -> str:
    """The entity key the hub builds from `data`, or a stand-in when `data` does not convert."""
    if data is None:
        return "deleted"
    record, _ = CATALOGUE[entity].to_record(copy.deepcopy(data))
    return CATALOGUE[entity].key_of(record) if record is not None else "unconvertible"


def envelope(source: str, entity: str, data: dict[str, Any] | None, *, op: str = "c",
             occurred_at: str = "2026-06-01T08:00:00+07:00", key: str | None = None) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "source": source, "entity": entity, "op": op,
            "key": key if key is not None else entity_key(entity, data), "occurred_at": occurred_at, "data": data}


def validate(env: dict[str, Any]) -> Valid | Invalid:
    return VALIDATOR.validate(json.dumps(env, ensure_ascii=False).encode("utf-8"))


def rules_of(result: Valid | Invalid) -> set[str]:
    return set() if isinstance(result, Valid) else {p.rule for p in result.problems}


def leaf_paths(fields: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """Dotted paths of an Avro record's fields; nested (non-optional) records are flattened."""
    paths = []
    for field in fields:
        kind = field["type"]
        if isinstance(kind, dict) and kind.get("type") == "record":
            paths += leaf_paths(kind["fields"], f"{prefix}{field['name']}.")
        else:
            paths.append(prefix + field["name"])
    return paths


def rfc3339(naive_local: datetime) -> str:
    return naive_local.replace(tzinfo=VN).isoformat()


def cell(value: Any, json_column: bool) -> Any:
    """A database value in the dictionary's JSON form."""
    if value is None:
        return None
    if json_column:
        return json.loads(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def row_to_data(config: dict[str, Any], row: Any) -> dict[str, Any]:
    """A table row as entity data, through the connector config's column mapping."""
    schema = CATALOGUE[config["entity"]].schema
    data: dict[str, Any] = {}
    for path in leaf_paths(schema["fields"]):
        column = config["columns"].get(path, path)
        node = data
        *parents, last = path.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = cell(row[column], column in config["json_columns"])
    return data


def row_envelope(config: dict[str, Any], row: Any) -> dict[str, Any]:
    """The envelope the sql connector would publish for a row (soft-deleted → op d)."""
    deleted = row["deleted_at"] is not None
    op = "d" if deleted else ("c" if row["created_at"] == row["updated_at"] else "u")
    data = None if deleted else row_to_data(config, row)
    key = entity_key(config["entity"], row_to_data(config, row))
    return envelope(config["source"], config["entity"], data, op=op, occurred_at=rfc3339(row["updated_at"]), key=key)


def rows(db: SchoolManagementDatabase, table: str, where: Any = None) -> list[Any]:
    t = db.tables[table]
    query = sa.select(t).order_by(t.c.id)
    if where is not None:
        query = query.where(where(t))
    with db.engine.connect() as conn:
        return list(conn.execute(query).mappings())


def configs_by_table(url: str) -> dict[str, dict[str, Any]]:
    return {c["table"]: c for c in smas_connector_configs(url)}


def comparable(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k not in {"created_at", "updated_at", "deleted_at"}}


@pytest.fixture(scope="module")
def smas(tmp_path_factory: pytest.TempPathFactory) -> SchoolManagementDatabase:
    url = f"sqlite:///{tmp_path_factory.mktemp('smas') / 'smas.db'}"
    db = SchoolManagementDatabase(url, seed=20)
    db.create_schema()
    db.seed(**SEED_SIZE)
    return db


# -- 1. the school-management database ----------------------------------------------------------


def test_tables_hold_the_entity_fields_plus_bookkeeping(smas: SchoolManagementDatabase) -> None:
    inspector = sa.inspect(smas.engine)
    assert set(inspector.get_table_names()) == set(SMAS_TABLES)
    for table, config in configs_by_table(smas.url).items():
        schema = CATALOGUE[config["entity"]].schema
        expected = {config["columns"].get(path, path) for path in leaf_paths(schema["fields"])} | META_COLUMNS
        columns = {c["name"]: c for c in inspector.get_columns(table)}
        assert set(columns) == expected, table
        assert inspector.get_pk_constraint(table)["constrained_columns"] == ["id"]
        assert columns["deleted_at"]["nullable"] and not columns["updated_at"]["nullable"]
        for name in config["json_columns"]:
            assert isinstance(columns[name]["type"], sa.Text)
        for field in schema["fields"]:
            kind = field["type"][-1] if isinstance(field["type"], list) else field["type"]
            if isinstance(kind, dict) and kind.get("logicalType") == "decimal":
                column_type = columns[field["name"]]["type"]
                assert isinstance(column_type, sa.Numeric) and column_type.scale == kind["scale"]
            if isinstance(kind, dict) and kind.get("logicalType") == "date":
                assert isinstance(columns[field["name"]]["type"], sa.Date)
    score = {c["name"]: c["type"] for c in inspector.get_columns("scores")}
    assert (score["score"].precision, score["score"].scale) == (5, 2)
    assert isinstance(score["term"], sa.Integer) and isinstance(score["recorded_at"], sa.DateTime)


def test_tables_compile_for_postgresql() -> None:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    from hub.demo.simulators import outbox_metadata, smas_metadata

    for metadata in (smas_metadata(), outbox_metadata()):
        for table in metadata.sorted_tables:
            ddl = str(CreateTable(table).compile(dialect=postgresql.dialect()))
            assert "TIMESTAMP WITHOUT TIME ZONE" in ddl, table.name
            if table.name == "scores":
                assert "score NUMERIC(5, 2)" in ddl and "recorded_at TIMESTAMP WITHOUT TIME ZONE NOT NULL" in ddl
            if table.name == "students":
                assert "date_of_birth DATE NOT NULL" in ddl
            if table.name == "registrations":
                assert "language_exemption BOOLEAN NOT NULL" in ddl


def test_every_seeded_row_is_a_valid_entity(smas: SchoolManagementDatabase) -> None:
    expected = {"schools": 3, "teachers": 24, "classes": 12, "students": 144, "term_results": 144}
    configs = configs_by_table(smas.url)
    for table, config in configs.items():
        table_rows = rows(smas, table)
        assert len(table_rows) == expected.get(table, len(table_rows)) > 0, table
        for row in table_rows:
            env = row_envelope(config, row)
            assert env["op"] == "c"
            result = validate(env)
            assert isinstance(result, Valid), (table, dict(row), rules_of(result))
    assert smas.count("scores") == 144 * 5 * 5  # five subjects, four marks in term 1, one in term 2


def test_the_cohort_looks_like_haiphong_upper_secondary(smas: SchoolManagementDatabase) -> None:
    schools = rows(smas, "schools")
    assert {s["school_code"] for s in schools} <= set(HAIPHONG_SCHOOLS)
    assert all(s["province_code"] == "31" and re.fullmatch(r"[0-9]{5}", s["ward_code"]) for s in schools)
    assert all(s["name"] == HAIPHONG_SCHOOLS[s["school_code"]] for s in schools)

    classes = rows(smas, "classes")
    teacher_ids = {t["teacher_id"] for t in rows(smas, "teachers")}
    names = set()
    for klass in classes:
        assert klass["class_id"] == f"{klass['school_code']}-2025-2026-{klass['name']}"
        assert klass["name"].startswith(str(klass["grade"])) and klass["grade"] in (10, 11, 12)
        assert klass["homeroom_teacher_id"] in teacher_ids and klass["size"] == 12
        names.add(klass["name"])
    assert names == {"10A1", "11A1", "12A1", "10A2"}

    students = rows(smas, "students")
    ages = Counter()
    for s in students:
        sid, born = s["student_id"], s["date_of_birth"]
        assert int(sid[3]) == (2 if born.year >= 2000 else 0) + (s["gender"] == "FEMALE")
        assert sid[4:6] == f"{born.year % 100:02d}"
        age = 2025 - born.year
        assert s["grade"] + 4 <= age <= s["grade"] + 9
        ages[age - s["grade"]] += 1
        assert s["guardian_phone"] is None or MOBILE.match(s["guardian_phone"])
        assert s["status"] == "STUDYING" and s["nationality"] == "VN"
        assert any(s["class_name"] == k["name"] and s["school_code"] == k["school_code"] for k in classes)
    assert ages.most_common(1)[0][0] == 5  # most started grade 1 at six
    assert {s["gender"] for s in students} == {"MALE", "FEMALE"}
    assert {"031", "030"} <= {s["student_id"][:3] for s in students}
    assert sum(s["student_id"][:3] == "031" for s in students) > len(students) / 2
    assert sum(s["ethnicity_code"] == "01" for s in students) > 0.9 * len(students)
    assert len({s["student_id"] for s in students}) == len(students)
    names = [s["full_name"] for s in students]
    assert any(unicodedata.normalize("NFC", n) != n for n in names)  # some stored decomposed
    assert sum(unicodedata.is_normalized("NFC", n) for n in names) > len(names) / 2
    assert all(any(ord(ch) > 127 for ch in n) for n in names if "Văn" in n or "Thị" in n)

    for t in rows(smas, "teachers"):
        subjects = json.loads(t["subjects"])
        assert subjects and len(set(subjects)) == len(subjects)
        assert t["phone"] is None or MOBILE.match(t["phone"])

    student_ids = {s["student_id"] for s in students}
    for score in rows(smas, "scores"):
        assert score["student_id"] in student_ids
        if score["subject"] in COMMENT_GRADED:
            assert score["score"] is None and score["pass_result"] in ("PASS", "FAIL")
        else:
            assert score["pass_result"] is None and Decimal(0) <= score["score"] <= Decimal(10)
            assert score["seq"] == 1 or score["kind"] == "REGULAR"
    kinds = Counter(s["kind"] for s in rows(smas, "scores"))
    assert set(kinds) == {"REGULAR", "MIDTERM", "FINAL"}
    assert {r["learning_rating"] for r in rows(smas, "term_results")} >= {"TOT", "KHA"}


def test_same_seed_same_rows(tmp_path: Path) -> None:
    def snapshot(seed: int, name: str) -> dict[str, list[dict[str, Any]]]:
        db = SchoolManagementDatabase(f"sqlite:///{tmp_path / name}", seed=seed)
        db.create_schema()
        db.seed(schools=2, classes_per_school=3, students_per_class=5, teachers_per_school=4)
        return {t: [comparable(r) for r in rows(db, t)] for t in SMAS_TABLES}

    assert snapshot(3, "a.db") == snapshot(3, "b.db")
    assert snapshot(3, "a2.db") != snapshot(4, "c.db")


def test_seed_refuses_a_second_cohort_and_bad_sizes(smas: SchoolManagementDatabase) -> None:
    with pytest.raises(RuntimeError):
        smas.seed()
    fresh = SchoolManagementDatabase("sqlite://")
    fresh.create_schema()
    with pytest.raises(ValueError):
        fresh.seed(students_per_class=61)
    with pytest.raises(ValueError):
        fresh.seed(schools=len(HAIPHONG_SCHOOLS) + 1)
    with pytest.raises(RuntimeError):
        fresh.step(1)


def test_step_changes_rows_and_bumps_updated_at(tmp_path: Path) -> None:
    db = SchoolManagementDatabase(f"sqlite:///{tmp_path / 'step.db'}", seed=8)
    db.create_schema()
    db.seed(schools=2, classes_per_school=3, students_per_class=10, teachers_per_school=6)
    before = {t: {r["id"]: dict(r) for r in rows(db, t)} for t in SMAS_TABLES}
    seeded_at = max(r["updated_at"] for table in before.values() for r in table.values())
    scores_before = db.count("scores")

    changes = db.step(60)
    assert len(changes) == 60
    ops = Counter(changes)
    assert ops[("scores", "c")] > 30  # new marks mostly
    assert ops[("scores", "u")] > 0 and ops[("students", "u")] > 0 and ops[("scores", "d")] > 0
    assert set(ops) <= {("scores", "c"), ("scores", "u"), ("students", "u"), ("scores", "d")}
    assert db.count("scores") == scores_before + ops[("scores", "c")]
    assert db.count("scores", include_deleted=False) == db.count("scores") - ops[("scores", "d")]

    configs = configs_by_table(db.url)
    changed = Counter()
    for table in SMAS_TABLES:
        for row in rows(db, table):
            old = before[table].get(row["id"])
            if old is not None and dict(row) == old:
                continue
            assert row["updated_at"] > seeded_at, (table, dict(row))
            env = row_envelope(configs[table], row)
            changed[(table, env["op"])] += 1
            result = validate(env)
            assert isinstance(result, Valid), (table, dict(row), rules_of(result))
            if old is not None and env["op"] == "u":
                assert comparable(row) != comparable(old)
            if table == "students":
                assert row["status"] == "TRANSFERRED"
    assert changed[("scores", "c")] == ops[("scores", "c")]
    assert changed[("scores", "d")] == ops[("scores", "d")]
    # A row updated twice counts once: distinct rows changed, at most the number of changes.
    assert changed[("students", "u")] == ops[("students", "u")]
    assert changed[("scores", "u")] <= ops[("scores", "u")]
    stamps = [r["updated_at"] for r in rows(db, "scores", lambda t: t.c.updated_at > seeded_at)]
    assert len(set(stamps)) == len(stamps)  # every change its own instant
    wall = datetime.now(VN).replace(tzinfo=None)  # naive local Vietnam time, as the database keeps it
    assert all(abs(stamp - wall) < timedelta(minutes=2) for stamp in stamps)
    # New marks keep the key unique (the table's unique constraint would have refused a repeat).
    keys = [(r["student_id"], r["term"], r["subject"], r["kind"], r["seq"]) for r in rows(db, "scores")]
    assert len(keys) == len(set(keys))


def test_bad_rows_break_exactly_their_rule(tmp_path: Path) -> None:
    db = SchoolManagementDatabase(f"sqlite:///{tmp_path / 'bad.db'}", seed=5)
    db.create_schema()
    db.seed(schools=2, classes_per_school=3, students_per_class=6, teachers_per_school=5)
    counts = {t: db.count(t) for t in SMAS_TABLES}
    bad = db.bad_rows(2 * len(SMAS_BAD_KINDS))
    assert len(bad) == 2 * len(SMAS_BAD_KINDS)
    assert {(table, rule) for table, _, rule in bad} == set(SMAS_BAD_KINDS.values())
    configs = configs_by_table(db.url)
    for table, row_id, rule in bad:
        (row,) = rows(db, table, lambda t, row_id=row_id: t.c.id == row_id)
        result = validate(row_envelope(configs[table], row))
        assert rules_of(result) == {rule}, (table, dict(row), rules_of(result))
    assert sum(db.count(t) - counts[t] for t in SMAS_TABLES) == len(bad)
    score = rows(db, "scores", lambda t: t.c.score > 10)
    assert [r["score"] for r in score] == [Decimal("11.50")] * 2
    with pytest.raises(ValueError):
        db.bad_rows(1, kinds=["no_such_kind"])


def test_smas_connector_configs() -> None:
    url = "postgresql+psycopg://smas@db/smas"
    configs = smas_connector_configs(url)
    assert [c["table"] for c in configs] == list(SMAS_TABLES)
    assert SchoolManagementDatabase.connector_configs(url) == configs
    names = set()
    for c in configs:
        assert set(c) == {"name", "kind", "source", "url", "table", "entity", "timestamp_column",
                          "incrementing_column", "created_column", "soft_delete_column", "columns", "json_columns"}
        assert (c["kind"], c["source"], c["url"], c["entity"]) == ("sql", "smas", url, SMAS_TABLES[c["table"]])
        assert (c["timestamp_column"], c["incrementing_column"]) == ("updated_at", "id")
        assert (c["created_column"], c["soft_delete_column"]) == ("created_at", "deleted_at")
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,59}", c["name"])
        names.add(c["name"])
    assert len(names) == len(configs)
    by_table = {c["table"]: c for c in configs}
    assert by_table["students"]["name"] == "smas-students"
    assert by_table["students"]["columns"] == {"address.province_code": "address_province_code",
                                               "address.ward_code": "address_ward_code",
                                               "address.street": "address_street"}
    assert by_table["schools"]["json_columns"] == ["levels"]
    assert by_table["teachers"]["json_columns"] == ["subjects"]
    assert by_table["term_results"]["name"] == "smas-term-results"
    assert smas_connector_configs(url, source="smas-ngoquyen")[0]["source"] == "smas-ngoquyen"


# -- 2. the exam registration outbox ------------------------------------------------------------


def registration_from_row(row: Any) -> dict[str, Any]:
    data = {k: v for k, v in dict(row).items() if k not in {"id", "created_at", "updated_at"}}
    data["date_of_birth"] = row["date_of_birth"].isoformat()
    data["registered_at"] = row["registered_at"].replace(tzinfo=VN).isoformat(timespec="seconds")
    data["subjects"] = json.loads(row["subjects"])
    data["exemption_certificate"] = json.loads(row["exemption_certificate"]) if row["exemption_certificate"] else None
    return data


def test_outbox_rows_carry_valid_registrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'exam.db'}"
    exam = ExamRegistrationOutbox(url, seed=12)
    exam.create_schema()
    assert set(sa.inspect(exam.engine).get_table_names()) == {"registrations", "outbox"}
    changes = exam.submit(5)
    assert len(changes) == 5
    assert exam.count("outbox") == 5
    assert exam.count("registrations") == sum(op == "c" for _, op in changes)
    changes += exam.submit(45)
    assert any(op == "u" for _, op in changes)

    with exam.engine.connect() as conn:
        outbox = list(conn.execute(sa.select(exam.tables["outbox"]).order_by(exam.tables["outbox"].c.seq)).mappings())
        registrations = {r["registration_id"]: r for r in
                         conn.execute(sa.select(exam.tables["registrations"])).mappings()}
    assert [r["seq"] for r in outbox] == list(range(1, 51))
    assert [(r["aggregateid"], r["type"]) for r in outbox] == changes
    latest: dict[str, dict[str, Any]] = {}
    for row in outbox:
        assert uuid.UUID(row["id"]) and row["published_at"] is None
        assert row["aggregatetype"] == "exam.registration" and row["type"] in ("c", "u")
        payload = json.loads(row["payload"])
        assert payload["registration_id"] == row["aggregateid"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", payload["date_of_birth"])
        assert payload["registered_at"].endswith("+07:00")
        env = envelope("exam-reg", row["aggregatetype"], payload, op=row["type"], key=row["aggregateid"],
                       occurred_at=rfc3339(row["created_at"]))
        result = validate(env)
        assert isinstance(result, Valid), (payload, rules_of(result))
        latest[row["aggregateid"]] = payload
    # The registrations table holds what the latest outbox row of each registration says.
    assert set(latest) == set(registrations)
    for rid, payload in latest.items():
        assert registration_from_row(registrations[rid]) == payload
    created = [r["created_at"] for r in outbox]
    assert created == sorted(created)


def test_a_later_run_on_the_same_database_never_reuses_a_registration_number(tmp_path: Path) -> None:
    """`make run` keeps .eduhub/demo between runs: a new simulator must skip the registration numbers the
    database already holds (a repeat failed the run with UNIQUE constraint failed: registration_id)."""
    url = f"sqlite:///{tmp_path / 'exam.db'}"
    first = ExamRegistrationOutbox(url, seed=7)
    first.create_schema()
    before = {key for key, op in first.submit(30) if op == "c"}
    again = ExamRegistrationOutbox(url)
    created = {key for key, op in again.submit(30) if op == "c"}
    assert created and not created & before
    assert before <= again.simulator._used_ids  # reserved from the database before the first draw
    assert again.count("registrations") == len(before) + len(created)


def test_reserved_registration_numbers_are_never_drawn() -> None:
    drawn = ExamRegistrationSimulator(seed=7, bad_ratio=0.0)
    first_five = [drawn.envelope(datetime.now(timezone.utc))["key"] for _ in range(5)]
    same_seed = ExamRegistrationSimulator(seed=7, bad_ratio=0.0)
    same_seed.reserve(first_five)
    assert not {same_seed.envelope(datetime.now(timezone.utc))["key"] for _ in range(5)} & set(first_five)


def test_registration_and_outbox_row_commit_together(tmp_path: Path) -> None:
    exam = ExamRegistrationOutbox(f"sqlite:///{tmp_path / 'atomic.db'}", seed=1)
    exam.create_schema()
    exam.submit(2)

    def fail_outbox(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            raise RuntimeError("outbox write failed")

    sa.event.listen(exam.engine, "before_cursor_execute", fail_outbox)
    try:
        with pytest.raises(RuntimeError, match="outbox write failed"):
            exam.submit(1)
    finally:
        sa.event.remove(exam.engine, "before_cursor_execute", fail_outbox)
    assert exam.count("outbox") == 2
    with exam.engine.connect() as conn:
        reg = exam.tables["registrations"]
        rows_ = list(conn.execute(sa.select(reg.c.registration_id, reg.c.updated_at)))
    outbox_ids = {r["aggregateid"] for r in _outbox(exam)}
    assert {r.registration_id for r in rows_} == outbox_ids  # the failed registration rolled back too


def _outbox(exam: ExamRegistrationOutbox) -> list[Any]:
    with exam.engine.connect() as conn:
        return list(conn.execute(sa.select(exam.tables["outbox"])).mappings())


def test_outbox_skips_broken_registrations_unless_asked(tmp_path: Path) -> None:
    exam = ExamRegistrationOutbox(f"sqlite:///{tmp_path / 'bad.db'}", seed=4, bad_ratio=0.5)
    exam.create_schema()
    exam.submit(20)
    for row in _outbox(exam):
        result = validate(envelope("exam-reg", "exam.registration", json.loads(row["payload"]),
                                   op=row["type"], key=row["aggregateid"]))
        assert isinstance(result, Valid), rules_of(result)
    loud = ExamRegistrationOutbox(f"sqlite:///{tmp_path / 'loud.db'}", seed=4, bad_ratio=1.0)
    loud.create_schema()
    with pytest.raises(ValueError):
        loud.submit(1)
    loud.submit(40, include_bad=True)
    invalid = 0
    for row in _outbox(loud):
        result = validate(envelope("exam-reg", "exam.registration", json.loads(row["payload"]),
                                   op=row["type"], key=row["aggregateid"]))
        invalid += isinstance(result, Invalid)
    assert invalid > 10  # the data-level faults reach the payload (envelope-level ones cannot)


def test_outbox_connector_config() -> None:
    config = outbox_connector_config("sqlite:///exam.db")
    assert config == {"name": "exam-outbox", "kind": "outbox", "source": "exam-reg", "url": "sqlite:///exam.db",
                      "table": "outbox", "published_column": "published_at", "occurred_column": "created_at"}
    assert outbox_connector_config("sqlite:///x.db", source="exam-hp")["source"] == "exam-hp"
    assert ExamRegistrationOutbox.connector_config("sqlite:///exam.db") == config


# -- 3. the admission portal --------------------------------------------------------------------


@pytest.fixture(scope="module")
def admissions() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    portal = AdmissionPortal("http://hub.local:6066", b"s3cret", seed=31)
    applications = portal.applications(300)
    return applications, portal.results()


def test_admission_envelopes_are_valid(admissions: tuple[list[dict], list[dict]]) -> None:
    applications, results = admissions
    assert len(results) == len(applications) == 300
    for env in applications + results:
        result = validate(env)
        assert isinstance(result, Valid), (env, rules_of(result))
        assert env["source"] == "admission-portal" and env["op"] == "c"
        assert uuid.UUID(env["event_id"]).version == 4
    assert len({e["event_id"] for e in applications + results}) == 600


def test_applications_follow_the_admission_rules(admissions: tuple[list[dict], list[dict]]) -> None:
    applications, results = admissions
    levels = Counter()
    for env in applications:
        data = env["data"]
        level = data["level"]
        levels[level] += 1
        age = 2026 - int(data["date_of_birth"][:4])
        prefs = data["preferences"]
        assert [p["rank"] for p in prefs] == list(range(1, len(prefs) + 1))
        assert len({p["school_code"] for p in prefs}) == len(prefs)
        if level == "GRADE_10":
            assert age in (15, 16) and 1 <= len(prefs) <= 2
            assert all(p["school_code"] in HAIPHONG_SCHOOLS for p in prefs)
        else:
            assert len(prefs) == 1 and data["specialized_choice"] is None
            assert age == {"GRADE_1": 6, "GRADE_6": 11}[level] or (level == "GRADE_6" and age == 12)
        assert data["priority_points"] in ("0", "1.0", "1.5", "2.0")
        assert Decimal(0) <= Decimal(data["encouragement_points"]) <= Decimal("1.5")
        assert data["status"] == "SUBMITTED" and data["submitted_at"].endswith("+07:00")
        assert env["occurred_at"] == data["submitted_at"]
    assert set(levels) == {"GRADE_1", "GRADE_6", "GRADE_10"}
    grade_10 = [e["data"] for e in applications if e["data"]["level"] == "GRADE_10"]
    assert any(len(d["preferences"]) == 2 for d in grade_10) and any(len(d["preferences"]) == 1 for d in grade_10)
    assert 0 < sum(d["specialized_choice"] is not None for d in grade_10) < len(grade_10) / 3
    assert Counter(e["data"]["priority_points"] for e in applications).most_common(1)[0][0] == "0"

    by_id = {e["data"]["application_id"]: e["data"] for e in applications}
    outcomes = Counter()
    for env in results:
        data = env["data"]
        app = by_id[data["application_id"]]
        outcomes[data["outcome"]] += 1
        if data["outcome"] == "ADMITTED":
            assert app["preferences"][data["matched_rank"] - 1]["school_code"] == data["admitted_school_code"]
        else:
            assert data["admitted_school_code"] is None and data["matched_rank"] is None
        assert datetime.fromisoformat(data["published_at"]) >= datetime.fromisoformat(app["submitted_at"])
        assert (data["total_score"] is not None) == (app["level"] == "GRADE_10")
    assert outcomes["ADMITTED"] > outcomes["NOT_ADMITTED"] > 0


def test_portal_is_deterministic_for_a_seed() -> None:
    def ids(seed: int) -> list[str]:
        portal = AdmissionPortal("http://hub", b"k", seed=seed)
        return [e["event_id"] for e in portal.applications(20) + portal.results(5)]

    assert ids(2) == ids(2) and ids(2) != ids(3)
    first = AdmissionPortal("http://hub", b"k", seed=2).applications(10)
    again = AdmissionPortal("http://hub", b"k", seed=2).applications(10)
    assert first == again


def test_post_signs_the_exact_body() -> None:
    secret = b"portal-shared-secret"
    portal = AdmissionPortal("http://hub.local:6066/", secret, source="admission-portal", seed=9)
    envelopes = portal.applications(4)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"accepted": 4})

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await portal.post(envelopes, client)

    before = int(time.time())
    response = asyncio.run(send())
    assert response.status_code == 202
    (request,) = seen
    assert request.method == "POST" and str(request.url) == "http://hub.local:6066/ingest/admission-portal"
    body = request.content
    assert json.loads(body) == envelopes
    timestamp = request.headers["X-EduHub-Timestamp"]
    assert re.fullmatch(r"[0-9]+", timestamp) and before <= int(timestamp) <= int(time.time())
    expected = "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert request.headers["X-EduHub-Signature"] == expected
    assert request.headers["Content-Type"] == "application/json"


# -- 4. the schools' spreadsheets ---------------------------------------------------------------

FIELD_OF_HEADER = {header: field for field, header in SPREADSHEET_SCORE_COLUMNS.items()}


def sheet_data(record: dict[str, Any]) -> dict[str, Any]:
    """A spreadsheet row (header → cell) as school.score data: empty cells are absent."""
    data: dict[str, Any] = {}
    for header, value in record.items():
        field = FIELD_OF_HEADER[header]
        if value is None or value == "":
            continue
        if field in ("term", "seq"):
            value = int(value)
        elif field == "score" and isinstance(value, float):
            value = repr(value)
        data[field] = value
    return data


def test_csv_export_has_bom_vietnamese_headers_and_valid_rows(tmp_path: Path) -> None:
    sheets = SchoolSpreadsheets(tmp_path / "inbox", seed=6)
    path = sheets.write_scores_csv(120, bad_rows=8)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    assert path.suffix == ".csv" and path.parent == tmp_path / "inbox"
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(SPREADSHEET_SCORE_COLUMNS.values())
        assert reader.fieldnames[:2] == ["Mã định danh", "Mã trường"]
        records = list(reader)
    assert len(records) == 120
    assert set(sheets.last_bad.values()) == set(SPREADSHEET_BAD_KINDS)
    assert len(sheets.last_bad) == 8
    for i, record in enumerate(records):
        data = sheet_data(record)
        result = validate(envelope("school-sheets", "school.score", data))
        if i in sheets.last_bad:
            assert SPREADSHEET_BAD_KINDS[sheets.last_bad[i]] in rules_of(result), (record, rules_of(result))
        else:
            assert isinstance(result, Valid), (record, rules_of(result))
            assert record["Thời điểm ghi"].endswith("+07:00") and "T" in record["Thời điểm ghi"]
            assert (record["Điểm"] == "") == (record["Môn"] in COMMENT_GRADED)
            assert (record["Đánh giá"] == "") != (record["Môn"] in COMMENT_GRADED)
    assert {r["Mã trường"] for r in records} == {sheets.school_code} and sheets.school_code in HAIPHONG_SCHOOLS


def test_spreadsheets_keep_keys_unique_across_files(tmp_path: Path) -> None:
    sheets = SchoolSpreadsheets(tmp_path, seed=2)
    keys = []
    paths = [sheets.write_scores_csv(400) for _ in range(3)] + [sheets.write_scores_xlsx(200)]
    assert len(set(paths)) == 4 and all(p.exists() for p in paths)
    assert not list(tmp_path.glob("*.part"))
    for path in paths[:3]:
        with path.open(encoding="utf-8-sig", newline="") as f:
            for record in csv.DictReader(f):
                keys.append(entity_key("school.score", sheet_data(record)))
    assert len(keys) == len(set(keys)) == 1200
    subjects = {k.split("|")[3] for k in keys}
    assert {"MATH", "LITERATURE", "PE"} <= subjects


def test_xlsx_export_maps_back_to_valid_scores(tmp_path: Path) -> None:
    sheets = SchoolSpreadsheets(tmp_path, seed=7)
    path = sheets.write_scores_xlsx(80, bad_rows=4)
    assert path.suffix == ".xlsx"
    book = load_workbook(path, read_only=True)
    sheet = book.worksheets[0]
    table = [list(r) for r in sheet.iter_rows(values_only=True)]
    book.close()
    header, body = table[0], table[1:]
    assert header == list(SPREADSHEET_SCORE_COLUMNS.values()) and len(body) == 80
    for i, values in enumerate(body):
        record = dict(zip(header, values))
        sid = record["Mã định danh"]
        assert sid is None or isinstance(sid, str)  # text cells: the leading zero survives
        data = sheet_data(record)
        result = validate(envelope("school-sheets", "school.score", data))
        if i in sheets.last_bad:
            assert SPREADSHEET_BAD_KINDS[sheets.last_bad[i]] in rules_of(result), (record, rules_of(result))
        else:
            assert isinstance(result, Valid), (record, rules_of(result))


def test_spreadsheets_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    def content(seed: int, folder: str) -> list[list[str]]:
        path = SchoolSpreadsheets(tmp_path / folder, seed=seed).write_scores_csv(50, bad_rows=3)
        with path.open(encoding="utf-8-sig", newline="") as f:
            return [row[:-1] for row in csv.reader(f)]  # recorded_at may be capped at now

    assert content(1, "a") == content(1, "b")
    assert content(1, "a") != content(2, "c")


def test_file_connector_config(tmp_path: Path) -> None:
    config = file_connector_config(tmp_path)
    assert config == {"name": "school-sheets", "kind": "file", "source": "school-sheets", "folder": str(tmp_path),
                      "entity": "school.score", "columns": SPREADSHEET_SCORE_COLUMNS}
    config["columns"]["score"] = "changed"
    assert SPREADSHEET_SCORE_COLUMNS["score"] == "Điểm"  # a copy: callers cannot change the constant
    assert SchoolSpreadsheets.file_connector_config(tmp_path, source="sheets-ngoquyen")["source"] == "sheets-ngoquyen"
    assert set(SPREADSHEET_SCORE_COLUMNS) == {f["name"] for f in CATALOGUE["school.score"].schema["fields"]}


# -- PostgreSQL (a real server from Debian's package, started by tests/pg.py) ---------------------


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    from tests.pg import postgres_server

    with postgres_server(tmp_path_factory.mktemp("postgresql")) as url:
        yield url


@pytest.mark.integration
def test_postgresql_database_and_outbox(postgres_url) -> None:
    POSTGRES_URL = postgres_url
    db = SchoolManagementDatabase(POSTGRES_URL, seed=3)
    exam = ExamRegistrationOutbox(POSTGRES_URL, seed=3)
    db.metadata.drop_all(db.engine)
    exam.metadata.drop_all(exam.engine)
    try:
        db.create_schema()
        db.seed(schools=2, classes_per_school=3, students_per_class=8, teachers_per_school=5)
        db.step(20)
        bad = {(table, row_id): rule for table, row_id, rule in db.bad_rows(len(SMAS_BAD_KINDS))}
        configs = configs_by_table(POSTGRES_URL)
        for table, config in configs.items():
            for row in rows(db, table):
                result = validate(row_envelope(config, row))
                assert rules_of(result) == ({bad[(table, row["id"])]} if (table, row["id"]) in bad else set())
        exam.create_schema()
        exam.submit(10)
        assert exam.count("outbox") == 10
        for row in _outbox(exam):
            payload = json.loads(row["payload"])
            assert isinstance(validate(envelope("exam-reg", "exam.registration", payload, op=row["type"],
                                                key=row["aggregateid"])), Valid)
    finally:
        db.metadata.drop_all(db.engine)
        exam.metadata.drop_all(exam.engine)
        db.engine.dispose()
        exam.engine.dispose()


def test_a_long_running_school_keeps_students_to_mark(tmp_path: Path) -> None:
    """`make run` runs for hours over the same database: transfers must not empty the cohort."""
    db = SchoolManagementDatabase(f"sqlite:///{tmp_path / 'long.db'}", seed=3)
    db.create_schema()
    db.seed(schools=1, classes_per_school=1, students_per_class=4, teachers_per_school=2)
    changes = db.step(300)  # ~20 transfers wanted: more than the class has students
    assert len(changes) == 300
    studying = [r for r in rows(db, "students") if r["status"] == "STUDYING"]
    assert len(studying) == 2  # half the class, never fewer

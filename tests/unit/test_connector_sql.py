"""The sql connector: snapshot then c/u/d from a table, restarts from offsets, mapping, config errors."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from any directory, installed or not
    sys.path.insert(0, str(ROOT))

from connectors.base import KINDS, event_id_for  # noqa: E402
from connectors.sql import SqlConnector, SqlConnectorConfig  # noqa: E402
from hub.contract.rules.common import geography  # noqa: E402
from hub.contract.schemas import Catalogue  # noqa: E402
from hub.stages.validate import Valid, Validator  # noqa: E402
from tests.pg import postgres_server  # noqa: E402

SOURCE = "smas"
VN = ZoneInfo("Asia/Ho_Chi_Minh")
CLASS_FIELDS = {"class_id", "school_code", "school_year", "grade", "name", "homeroom_teacher_id", "size"}
VALIDATOR = Validator(Catalogue.load(), sources={SOURCE})


def run(coro):
    return asyncio.run(coro)


def connector(url: str, table: str, **keys) -> SqlConnector:
    config = {"name": "smas-test", "kind": "sql", "source": SOURCE, "url": url, "table": table,
              "entity": "school.class", **keys}
    return SqlConnector(SqlConnectorConfig(**config))


def drain(c: SqlConnector) -> list:
    """Poll until a poll finds nothing."""
    out = []
    while batch := run(c.poll()):
        out.extend(batch)
    return out


def started(c: SqlConnector, offset) -> SqlConnector:
    run(c.start(offset))
    return c


def assert_valid(records) -> None:
    """Every envelope passes the hub's own validation (schema, rules, key agreeing with data)."""
    for r in records:
        result = VALIDATOR.validate(json.dumps(r.envelope).encode())
        assert isinstance(result, Valid), (r.envelope, getattr(result, "problems", None))


class ClassTable:
    """A school management system's class table; `stamp` writes a minute of 2026-05-01 08:xx local time."""

    def __init__(self, engine: sa.Engine, table: str, ts_type: str = "TIMESTAMP", with_offset: bool = False) -> None:
        self.engine, self.table, self.with_offset = engine, table, with_offset
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text(
                f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, class_id VARCHAR(40) NOT NULL, "
                "school_code VARCHAR(12) NOT NULL, school_year VARCHAR(9) NOT NULL, grade INTEGER NOT NULL, "
                "name VARCHAR(10) NOT NULL, homeroom_teacher_id VARCHAR(20), size INTEGER NOT NULL, "
                f"created_at {ts_type} NOT NULL, updated_at {ts_type} NOT NULL, deleted_at {ts_type})"))

    def stamp(self, minute: int) -> str:
        return f"2026-05-01 {8 + minute // 60:02d}:{minute % 60:02d}:00" + ("+07:00" if self.with_offset else "")

    @staticmethod
    def occurred(minute: int) -> str:
        return f"2026-05-01T{8 + minute // 60:02d}:{minute % 60:02d}:00+07:00"

    def insert(self, row_id: int, name: str, minute: int, *, size: int = 35, teacher: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                f"INSERT INTO {self.table} (id, class_id, school_code, school_year, grade, name, homeroom_teacher_id,"
                " size, created_at, updated_at) VALUES (:id, :class_id, '31THPT001', '2025-2026', :grade, :name,"
                " :teacher, :size, :ts, :ts)"),
                {"id": row_id, "class_id": f"31THPT001-2025-2026-{name}", "grade": int(name[:2]), "name": name,
                 "teacher": teacher, "size": size, "ts": self.stamp(minute)})

    def update(self, row_id: int, minute: int, size: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {self.table} SET size = :size, updated_at = :ts WHERE id = :id"),
                         {"size": size, "ts": self.stamp(minute), "id": row_id})

    def soft_delete(self, row_id: int, minute: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {self.table} SET deleted_at = :ts, updated_at = :ts WHERE id = :id"),
                         {"ts": self.stamp(minute), "id": row_id})


def changes_scenario(url: str, table: str, ts_type: str = "TIMESTAMP", with_offset: bool = False) -> None:
    """Snapshot, restart mid-snapshot, then insert/update/soft-delete, then restart at the end."""
    engine = sa.create_engine(url)
    t = ClassTable(engine, table, ts_type, with_offset)
    names = ["10A1", "10A2", "10A3", "11A1", "12A1"]
    for i, name in enumerate(names, start=1):
        t.insert(i, name, minute=i - 1, teacher="GV001" if i == 1 else None)

    c = started(connector(url, table, soft_delete_column="deleted_at", batch_size=2), None)
    snapshot = drain(c)
    assert [r.envelope["op"] for r in snapshot] == ["r"] * 5
    assert [r.envelope["key"] for r in snapshot] == [f"31THPT001-2025-2026-{n}" for n in names]
    first = snapshot[0].envelope
    assert set(first["data"]) == CLASS_FIELDS
    assert first["data"] == {"class_id": "31THPT001-2025-2026-10A1", "school_code": "31THPT001",
                             "school_year": "2025-2026", "grade": 10, "name": "10A1",
                             "homeroom_teacher_id": "GV001", "size": 35}
    assert [r.envelope["occurred_at"] for r in snapshot] == [t.occurred(m) for m in range(5)]
    assert first["event_id"] == event_id_for(SOURCE, table, 1, t.occurred(0))
    assert all(r.offset["snapshot_until"] is not None for r in snapshot)
    assert [r.offset["id"] for r in snapshot] == [1, 2, 3, 4, 5]
    assert_valid(snapshot)

    # Killed after the second record: the restart goes on with r, and the same event ids.
    resumed = started(connector(url, table, soft_delete_column="deleted_at", batch_size=2), snapshot[1].offset)
    rest = drain(resumed)
    assert [r.envelope["op"] for r in rest] == ["r"] * 3
    assert [r.envelope["event_id"] for r in rest] == [r.envelope["event_id"] for r in snapshot[2:]]
    run(resumed.stop())

    t.insert(6, "12A2", minute=10)
    t.update(2, minute=11, size=40)
    t.soft_delete(3, minute=12)
    changes = drain(c)
    assert [(r.envelope["op"], r.envelope["key"]) for r in changes] == [
        ("c", "31THPT001-2025-2026-12A2"), ("u", "31THPT001-2025-2026-10A2"), ("d", "31THPT001-2025-2026-10A3")]
    assert changes[1].envelope["data"]["size"] == 40
    assert changes[2].envelope["data"] is None
    assert [r.envelope["occurred_at"] for r in changes] == [t.occurred(m) for m in (10, 11, 12)]
    assert all(r.offset["snapshot_until"] is None for r in changes)

    t.update(2, minute=13, size=41)
    again = drain(c)
    assert [(r.envelope["op"], r.envelope["data"]["size"]) for r in again] == [("u", 41)]

    # Per key, the events come in the order of the changes.
    by_key: dict[str, list[str]] = {}
    for r in [*snapshot, *changes, *again]:
        by_key.setdefault(r.envelope["key"], []).append(r.envelope["occurred_at"])
    assert by_key["31THPT001-2025-2026-10A2"] == [t.occurred(1), t.occurred(11), t.occurred(13)]
    assert all(v == sorted(v) for v in by_key.values())
    assert_valid([*changes, *again])
    run(c.stop())

    # Restarted from the last record's offset: nothing is emitted again.
    restarted = started(connector(url, table, soft_delete_column="deleted_at"), again[-1].offset)
    assert run(restarted.poll()) == []
    run(restarted.stop())
    engine.dispose()


def json_scenario(url: str, table: str, json_type: str) -> None:
    """school.school with `levels` in a JSON column; no created column, so changes are op u."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sa.text(
            f"CREATE TABLE {table} (ma_truong VARCHAR(12) PRIMARY KEY, name VARCHAR(200), levels {json_type}, "
            "ownership VARCHAR(10), province_code CHAR(2), ward_code CHAR(5), status VARCHAR(10), "
            "seq INTEGER NOT NULL, modified TIMESTAMP NOT NULL)"))
        conn.execute(sa.text(
            f"INSERT INTO {table} VALUES ('31THPT001', 'Trường THPT chuyên Trần Phú', :levels, 'PUBLIC', '31', :ward,"
            " 'ACTIVE', 1, '2026-05-01 08:00:00')"),
            {"levels": json.dumps(["UPPER_SECONDARY"]), "ward": hai_phong_ward()})
    keys = {"name": "hp-schools", "kind": "sql", "source": SOURCE, "url": url, "table": table,
            "entity": "school.school", "timestamp_column": "modified", "incrementing_column": "seq",
            "created_column": None, "columns": {"school_code": "ma_truong"}, "json_columns": ["levels"]}
    c = SqlConnector(SqlConnectorConfig(**keys))
    run(c.start(None))
    [read] = run(c.poll())
    assert read.envelope["op"] == "r"
    assert read.envelope["key"] == "31THPT001"
    assert read.envelope["data"]["levels"] == ["UPPER_SECONDARY"]
    assert "phone" not in read.envelope["data"]  # no column: the schema's default (null) applies
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET levels = :levels, modified = '2026-05-02 08:00:00'"),
                     {"levels": json.dumps(["LOWER_SECONDARY", "UPPER_SECONDARY"])})
    [update] = run(c.poll())
    assert update.envelope["op"] == "u"
    assert update.envelope["data"]["levels"] == ["LOWER_SECONDARY", "UPPER_SECONDARY"]
    assert_valid([read, update])
    run(c.stop())
    engine.dispose()


def hai_phong_ward() -> str:
    return min(code for code, (province, _) in geography().wards.items() if province == "31")


# --- SQLite -------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'smas.db'}"


def test_registered() -> None:
    assert KINDS["sql"] is SqlConnector
    assert SqlConnector.config_model is SqlConnectorConfig
    assert all(f.description for f in SqlConnectorConfig.model_fields.values())


def test_snapshot_then_changes_on_sqlite(sqlite_url) -> None:
    changes_scenario(sqlite_url, "lop_hoc")


def test_json_columns_on_sqlite(sqlite_url) -> None:
    json_scenario(sqlite_url, "truong", "TEXT")


def test_empty_table_has_no_snapshot(sqlite_url) -> None:
    engine = sa.create_engine(sqlite_url)
    t = ClassTable(engine, "lop_hoc")
    c = started(connector(sqlite_url, "lop_hoc"), None)
    assert run(c.poll()) == []
    t.insert(1, "10A1", minute=0)
    [created] = run(c.poll())
    assert created.envelope["op"] == "c"
    assert created.offset == {"ts": t.stamp(0), "id": 1, "snapshot_until": None}
    run(c.stop())


def test_row_changed_during_the_snapshot_is_an_update(sqlite_url) -> None:
    engine = sa.create_engine(sqlite_url)
    t = ClassTable(engine, "lop_hoc")
    for i in range(1, 5):
        t.insert(i, f"10A{i}", minute=i)
    c = started(connector(sqlite_url, "lop_hoc", batch_size=2), None)
    head = run(c.poll())
    t.update(4, minute=30, size=20)  # not read yet: it moves past the snapshot's end
    rest = drain(c)
    assert [(r.envelope["op"], r.offset["id"]) for r in [*head, *rest]] == [("r", 1), ("r", 2), ("r", 3), ("u", 4)]


def test_bad_row_is_an_error_after_the_rows_before_it(sqlite_url) -> None:
    engine = sa.create_engine(sqlite_url)
    t = ClassTable(engine, "lop_hoc")
    t.insert(1, "10A1", minute=0)
    t.insert(2, "10A2", minute=1)
    t.soft_delete(1, minute=2)  # deleted before the first start: a delete, even in the snapshot
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE lop_hoc SET updated_at = '2026-05-01 09:00:00', homeroom_teacher_id = :b "
                             "WHERE id = 2"), {"b": b"\x00"})
    c = started(connector(sqlite_url, "lop_hoc", soft_delete_column="deleted_at"), None)
    [deleted] = run(c.poll())
    assert (deleted.envelope["op"], deleted.envelope["key"]) == ("d", "31THPT001-2025-2026-10A1")
    with pytest.raises(ValueError, match="lop_hoc row 2: bytes"):
        run(c.poll())


def test_event_ids_are_deterministic(sqlite_url) -> None:
    engine = sa.create_engine(sqlite_url)
    t = ClassTable(engine, "lop_hoc")
    for i in range(1, 4):
        t.insert(i, f"10A{i}", minute=i)
    once = [r.envelope["event_id"] for r in drain(started(connector(sqlite_url, "lop_hoc"), None))]
    twice = [r.envelope["event_id"] for r in drain(started(connector(sqlite_url, "lop_hoc"), None))]
    assert once == twice and len(set(once)) == 3
    t.update(2, minute=20, size=10)
    changed = drain(started(connector(sqlite_url, "lop_hoc"), None))
    assert changed[-1].envelope["event_id"] not in once  # a new version of a row is a new event


def test_lag_leaves_recent_rows_for_later(sqlite_url) -> None:
    engine = sa.create_engine(sqlite_url)
    t = ClassTable(engine, "lop_hoc")
    t.insert(1, "10A1", minute=0)
    recent = datetime.now(VN).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    t.insert(2, "10A2", minute=0)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE lop_hoc SET created_at = :ts, updated_at = :ts WHERE id = 2"), {"ts": recent})
    c = started(connector(sqlite_url, "lop_hoc", lag_s=600), None)
    assert [r.offset["id"] for r in drain(c)] == [1]
    c2 = started(connector(sqlite_url, "lop_hoc"), None)
    assert [r.offset["id"] for r in drain(c2)] == [1, 2]


def test_url_reads_environment_variables(tmp_path, monkeypatch) -> None:
    path = tmp_path / "smas.db"
    ClassTable(sa.create_engine(f"sqlite:///{path}"), "lop_hoc").insert(1, "10A1", minute=0)
    monkeypatch.setenv("EDUHUB_TEST_SMAS_DB", str(path))
    c = started(connector("sqlite:///${EDUHUB_TEST_SMAS_DB}", "lop_hoc"), None)
    assert len(run(c.poll())) == 1
    monkeypatch.delenv("EDUHUB_TEST_SMAS_DB")
    with pytest.raises(ValueError, match="EDUHUB_TEST_SMAS_DB is not set"):
        run(connector("sqlite:///${EDUHUB_TEST_SMAS_DB}", "lop_hoc").start(None))


def _error_locations(**keys) -> list[tuple]:
    config = {"name": "smas-test", "kind": "sql", "source": SOURCE, "url": "sqlite:///x.db", "table": "t",
              "entity": "school.class", **keys}
    with pytest.raises(ValidationError) as caught:
        SqlConnectorConfig(**config)
    return [(e["loc"], e["msg"]) for e in caught.value.errors()]


def test_config_errors_name_the_key() -> None:
    [(loc, msg)] = _error_locations(entity="school.pupil")
    assert loc == ("entity",) and "school.pupil" in msg and "school.student" in msg
    [(loc, _)] = _error_locations(tabel="lop_hoc")
    assert loc == ("tabel",)
    [(loc, msg)] = _error_locations(entity="school.student", columns={"adress.province_code": "tinh"})
    assert loc == ("columns",) and "adress.province_code" in msg
    [(loc, msg)] = _error_locations(json_columns=["levels"])
    assert loc == ("json_columns",) and "levels" in msg
    [(loc, _)] = _error_locations(timezone="Mars/Olympus")
    assert loc == ("timezone",)
    [(loc, _)] = _error_locations(url="not a url")
    assert loc == ("url",)


def test_start_errors_name_the_column(sqlite_url) -> None:
    ClassTable(sa.create_engine(sqlite_url), "lop_hoc")
    with pytest.raises(ValueError, match="timestamp_column.*'modified'"):
        run(connector(sqlite_url, "lop_hoc", timestamp_column="modified").start(None))
    with pytest.raises(ValueError, match="field size .*'si_so'"):
        run(connector(sqlite_url, "lop_hoc", columns={"size": "si_so"}).start(None))
    with pytest.raises(ValueError, match="table 'lop'"):
        run(connector(sqlite_url, "lop").start(None))


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory) -> str:
    with postgres_server(tmp_path_factory.mktemp("postgresql")) as url:
        yield url


@pytest.mark.integration
@pytest.mark.parametrize("ts_type", ["timestamp", "timestamptz"])
def test_snapshot_then_changes_on_postgresql(pg_url, ts_type) -> None:
    changes_scenario(pg_url, f"lop_hoc_{ts_type}", ts_type, with_offset=ts_type == "timestamptz")


@pytest.mark.integration
def test_jsonb_column_on_postgresql(pg_url) -> None:
    json_scenario(pg_url, "truong", "jsonb")


@pytest.mark.integration
def test_restart_in_the_same_microsecond_on_postgresql(pg_url) -> None:
    """Rows sharing one timestamp (one transaction's now()) are ordered by id and none is lost on restart."""
    engine = sa.create_engine(pg_url)
    ClassTable(engine, "lop_cung_luc")
    with engine.begin() as conn:
        for i in range(1, 6):
            conn.execute(sa.text(
                "INSERT INTO lop_cung_luc VALUES (:id, :cid, '31THPT001', '2025-2026', 10, :n, NULL, 30, "
                "'2026-05-01 08:00:00.123456', '2026-05-01 08:00:00.123456', NULL)"),
                {"id": i, "cid": f"31THPT001-2025-2026-10A{i}", "n": f"10A{i}"})
    c = started(connector(pg_url, "lop_cung_luc", batch_size=2), None)
    head = run(c.poll())
    resumed = started(connector(pg_url, "lop_cung_luc", batch_size=2), head[-1].offset)
    rest = drain(resumed)
    assert [r.offset["id"] for r in [*head, *rest]] == [1, 2, 3, 4, 5]
    assert head[-1].offset["ts"] == "2026-05-01T08:00:00.123456"
    for each in (c, resumed):
        run(each.stop())
    engine.dispose()


def test_snapshot_progress_counts_rows_read_and_resumes_mid_snapshot(sqlite_url) -> None:
    t = ClassTable(sa.create_engine(sqlite_url), "lop_hoc")
    for i, name in enumerate(["10A1", "10A2", "10A3", "11A1", "12A1"], start=1):
        t.insert(i, name, minute=i)
    c = started(connector(sqlite_url, "lop_hoc", batch_size=2), None)
    assert c.snapshot_progress() == (0, 5)
    first = run(c.poll())
    assert c.snapshot_progress() == (2, 5)
    resumed = started(connector(sqlite_url, "lop_hoc", batch_size=2), first[-1].offset)
    assert resumed.snapshot_progress() == (2, 5)  # a restart knows how far it had come
    drain(c)
    assert c.snapshot_progress() is None  # done
    run(resumed.stop())
    run(c.stop())

"""The outbox connector: unpublished rows in order, marked published only once committed."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from any directory, installed or not
    sys.path.insert(0, str(ROOT))

from connectors.base import KINDS, event_id_for  # noqa: E402
from connectors.outbox import OutboxConnector, OutboxConnectorConfig  # noqa: E402
from tests.pg import postgres_server  # noqa: E402

SOURCE = "exam-reg"
ENTITY = "exam.registration"


def run(coro):
    return asyncio.run(coro)


def payload(registration_id: str) -> str:
    return json.dumps({"registration_id": registration_id, "exam_year": 2026, "full_name": "Trần Văn Bình"},
                      ensure_ascii=False)


class Outbox:
    """An exam registration system's outbox, as its application writes it."""

    def __init__(self, url: str, table: str = "outbox", *, id_type: str = "INTEGER PRIMARY KEY",
                 ts_type: str = "TIMESTAMP", payload_type: str = "TEXT", trace: bool = False) -> None:
        self.engine = sa.create_engine(url)
        self.table = table
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text(
                f"CREATE TABLE {table} (id {id_type}, aggregatetype VARCHAR(64) NOT NULL, "
                f"aggregateid VARCHAR(64) NOT NULL, type VARCHAR(16) NOT NULL, payload {payload_type}, "
                f"created_at {ts_type} NOT NULL, published_at {ts_type}"
                + (", trace_id VARCHAR(64)" if trace else "") + ")"))

    def add(self, row_id, key: str, op: str = "c", minute: int = 0, *, aggregate: str = ENTITY,
            body: str | None = None, trace_id: str | None = None) -> None:
        columns = "id, aggregatetype, aggregateid, type, payload, created_at" + (", trace_id" if trace_id else "")
        values = ":id, :agg, :key, :type, :payload, :ts" + (", :trace" if trace_id else "")
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {self.table} ({columns}) VALUES ({values})"),
                         {"id": row_id, "agg": aggregate, "key": key, "type": op,
                          "payload": payload(key) if body is None and op not in ("d", "deleted") else body,
                          "ts": f"2026-06-01 08:{minute:02d}:00", "trace": trace_id})

    def published(self) -> dict:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT id, published_at FROM {self.table}")).all()
        return {str(row_id): at is not None for row_id, at in rows}


def connector(url: str, **keys) -> OutboxConnector:
    config = OutboxConnectorConfig(name="exam-reg-outbox", kind="outbox", source=SOURCE, url=url, **keys)
    c = OutboxConnector(config)
    run(c.start(None))
    return c


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'examreg.db'}"


def test_registered() -> None:
    assert KINDS["outbox"] is OutboxConnector
    assert all(f.description for f in OutboxConnectorConfig.model_fields.values())


def test_rows_in_order_marked_only_when_committed(url) -> None:
    box = Outbox(url)
    for i in range(1, 6):
        box.add(i, f"R{i:03d}", minute=i)
    c = connector(url, batch_size=3)
    first = run(c.poll())
    assert [r.envelope["key"] for r in first] == ["R001", "R002", "R003"]
    assert [r.offset for r in first] == [{"id": 1}, {"id": 2}, {"id": 3}]
    envelope = first[0].envelope
    assert envelope["entity"] == ENTITY and envelope["op"] == "c" and envelope["source"] == SOURCE
    assert envelope["data"] == json.loads(payload("R001"))
    assert envelope["occurred_at"] == "2026-06-01T08:01:00+07:00"
    assert envelope["event_id"] == event_id_for(SOURCE, "outbox", 1)
    second = run(c.poll())  # rows in flight are not read twice
    assert [r.offset["id"] for r in second] == [4, 5]
    assert run(c.poll()) == []
    assert not any(box.published().values())  # nothing marked before Kafka holds it

    run(c.committed(first[:2]))
    assert box.published() == {"1": True, "2": True, "3": False, "4": False, "5": False}
    run(c.stop())

    # A crash before the rest were committed: a new instance sends them again, same event ids.
    again = connector(url)
    resent = run(again.poll())
    assert [r.offset["id"] for r in resent] == [3, 4, 5]
    assert [r.envelope["event_id"] for r in resent] == [r.envelope["event_id"] for r in [first[2], *second]]
    run(again.committed(resent))
    assert all(box.published().values())
    assert run(again.poll()) == []
    box.add(6, "R006", "u", minute=9)
    [later] = run(again.poll())
    assert (later.offset, later.envelope["op"]) == ({"id": 6}, "u")
    run(again.stop())


def test_deletes_uuids_entities_and_trace_ids(url) -> None:
    box = Outbox(url, id_type="VARCHAR(36) PRIMARY KEY", trace=True)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    box.add(ids[0], "R001", "created", minute=1, aggregate="Registration", trace_id="trace-1")
    box.add(ids[1], "R001", "updated", minute=2, aggregate="Registration")
    box.add(ids[2], "R001", "deleted", minute=3, aggregate="Registration")
    c = connector(url, entities={"Registration": ENTITY})
    records = run(c.poll())
    assert [r.envelope["event_id"] for r in records] == ids  # UUID ids are the event ids
    assert [r.envelope["op"] for r in records] == ["c", "u", "d"]
    assert all(r.envelope["entity"] == ENTITY for r in records)
    assert records[2].envelope["data"] is None
    assert records[0].envelope["trace_id"] == "trace-1" and "trace_id" not in records[1].envelope
    run(c.committed(records[1:2]))
    assert box.published() == {ids[0]: False, ids[1]: True, ids[2]: False}
    run(c.stop())


def test_late_row_is_read_once_nothing_is_in_flight(url) -> None:
    """A row committed after later ones were read (an earlier created_at) is not skipped."""
    box = Outbox(url, id_type="VARCHAR(36) PRIMARY KEY")
    box.add(str(uuid.uuid4()), "R001", minute=5)
    c = connector(url)
    [read] = run(c.poll())
    late = str(uuid.uuid4())
    box.add(late, "R002", minute=1)  # before the row in flight, in the outbox's order
    assert run(c.poll()) == []
    run(c.committed([read]))
    [found] = run(c.poll())
    assert found.envelope["event_id"] == late
    run(c.stop())


def test_bad_rows_pass_to_the_hub_to_dead_letter(url) -> None:
    box = Outbox(url)
    box.add(1, "R001", "RegistrationSubmitted", body="{not json")
    [record] = run(connector(url).poll())
    assert record.envelope["op"] == "RegistrationSubmitted"
    assert record.envelope["data"] == "{not json"


def test_config_and_start_errors(url) -> None:
    with pytest.raises(ValidationError) as caught:
        OutboxConnectorConfig(name="x-outbox", kind="outbox", source=SOURCE, url=url, entities={"R": "exam.regist"})
    assert caught.value.errors()[0]["loc"] == ("entities",)
    with pytest.raises(ValidationError) as caught:
        OutboxConnectorConfig(name="x-outbox", kind="outbox", source=SOURCE, url=url, publised_column="sent_at")
    assert caught.value.errors()[0]["loc"] == ("publised_column",)
    Outbox(url)
    with pytest.raises(ValueError, match="published_column.*'sent_at'"):
        connector(url, published_column="sent_at")


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory) -> str:
    with postgres_server(tmp_path_factory.mktemp("postgresql")) as url:
        yield url


@pytest.mark.integration
def test_uuid_jsonb_outbox_on_postgresql(pg_url) -> None:
    box = Outbox(pg_url, id_type="uuid PRIMARY KEY", ts_type="timestamptz", payload_type="jsonb")
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for minute, (row_id, op) in enumerate(zip(ids, ["c", "u", "u", "d"]), start=1):
        box.add(row_id, "R001", op, minute=minute)
    c = connector(pg_url, batch_size=3)
    first = run(c.poll())
    assert [r.envelope["event_id"] for r in first] == ids[:3]
    assert first[0].envelope["data"] == json.loads(payload("R001"))
    assert first[0].envelope["occurred_at"] == "2026-06-01T15:01:00+07:00"  # written as UTC (session zone)
    [last] = run(c.poll())
    assert last.envelope["op"] == "d" and last.envelope["data"] is None
    run(c.committed(first))
    assert box.published() == {ids[0]: True, ids[1]: True, ids[2]: True, ids[3]: False}
    run(c.stop())
    again = connector(pg_url)
    assert [r.envelope["event_id"] for r in run(again.poll())] == [ids[3]]
    run(again.stop())
    box.engine.dispose()

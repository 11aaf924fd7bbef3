"""Reads a transactional outbox table (Debezium's columns) and marks rows published once Kafka holds them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import Field, field_validator
from sqlalchemy.engine import Engine

from connectors.base import SourceConnector, SourceRecord, event_id_for, make_envelope, register
from connectors.database import (
    DatabaseConfig,
    as_moment,
    json_text,
    offset_value,
    open_engine,
    resolve_column,
    rfc3339,
    sql_table,
    table_lookup,
)
from connectors.rows import check_entity, key_part

# The outbox columns of Debezium's EventRouter; `trace_id` is read when the table has it.
ID, AGGREGATE_TYPE, AGGREGATE_ID, TYPE, PAYLOAD, TRACE_ID = "id", "aggregatetype", "aggregateid", "type", "payload", \
    "trace_id"
# `type` as ops: Debezium's letters and the words outbox writers tend to use.
OPS = {"c": "c", "u": "u", "d": "d", "r": "r", "create": "c", "created": "c", "insert": "c", "inserted": "c",
       "update": "u", "updated": "u", "delete": "d", "deleted": "d", "read": "r", "snapshot": "r"}
# Most ids in one UPDATE ... IN (...): well below every database's limit on bound parameters.
MARK_CHUNK = 1000


class OutboxConnectorConfig(DatabaseConfig):
    """Keys of an `outbox` connector.

    The table has Debezium's outbox columns: ``id`` (UUID or integer), ``aggregatetype`` (the
    entity, e.g. exam.registration), ``aggregateid`` (the entity key), ``type`` (c/u/d/r or
    created/updated/deleted), ``payload`` (the entity's data as JSON; empty for a delete), the
    creation time, the published marker, and optionally ``trace_id``.

    Example (hub.yaml)::

        - name: exam-reg-outbox
          kind: outbox
          source: exam-reg
          url: postgresql+psycopg://examreg:${EXAMREG_DB_PASSWORD}@db.examreg:5432/examreg
    """

    table: str = Field("outbox", description="outbox table, optionally schema-qualified (schema.table)")
    published_column: str = Field(
        "published_at", description="column null until the row is published; the connector sets it once Kafka "
                                    "holds the event")
    occurred_column: str = Field("created_at", description="column with the time the event occurred (occurred_at)")
    order_column: str | None = Field(
        None, description="column giving insertion order, e.g. a bigserial seq; null: id when it is an integer, "
                          "else the occurred column then id")
    entities: dict[str, str] = Field(
        default_factory=dict, description="aggregatetype → entity where they differ (e.g. Registration: "
                                          "exam.registration); an unlisted aggregatetype is the entity name")

    @field_validator("entities")
    @classmethod
    def _entities(cls, value: dict[str, str]) -> dict[str, str]:
        for entity in value.values():
            check_entity(entity)
        return value


@register
class OutboxConnector(SourceConnector):
    """Publishes unpublished outbox rows in insertion order and marks them published in `committed`.

    The published marker is the state: a row is marked only after Kafka acknowledged it, so after
    a crash the unmarked rows are read again and sent with the same event id (the hub drops the
    repeat). The offset ``{"id": <row id>}`` is informational. Rows read but not yet committed
    are not read again by this instance; once none are in flight the next poll starts over from
    the oldest unpublished row, so a row whose transaction committed late is not skipped.

    Example::

        c = OutboxConnector(OutboxConnectorConfig(name="exam-reg-outbox", kind="outbox",
                                                  source="exam-reg", url="sqlite:///examreg.db"))
        await c.start(None)
        records = await c.poll()
        ...  # the runtime publishes them; once Kafka holds them:
        await c.committed(records)  # UPDATE outbox SET published_at = CURRENT_TIMESTAMP WHERE id IN (...)
    """

    kind = "outbox"
    config_model = OutboxConnectorConfig

    def __init__(self, config: OutboxConnectorConfig) -> None:
        super().__init__(config)
        self.config: OutboxConnectorConfig = config
        self._engine: Engine | None = None
        self._in_flight: dict[Any, Any] = {}  # id as in the offset → id as the driver returned it
        self._position: tuple[Any, ...] | None = None  # order values of the last row read

    async def start(self, offset: dict[str, Any] | None) -> None:
        # The offset is not a position: unmarked rows are re-read whatever it says.
        self._engine = await asyncio.to_thread(self._open)
        self._in_flight.clear()
        self._position = None

    def _open(self) -> Engine:
        config = self.config
        engine = open_engine(config)
        try:
            available, column = table_lookup(engine, config)

            self._id = column(ID, "id (outbox column)")
            self._type_col = column(TYPE, "type (outbox column)")
            self._aggregate_type = column(AGGREGATE_TYPE, "aggregatetype (outbox column)")
            self._aggregate_id = column(AGGREGATE_ID, "aggregateid (outbox column)")
            self._payload = column(PAYLOAD, "payload (outbox column)")
            self._occurred = column(config.occurred_column, "occurred_column")
            self._published = column(config.published_column, "published_column")
            self._trace = resolve_column(TRACE_ID, available)
            if config.order_column is not None:
                order = [column(config.order_column, "order_column"), self._id]
            elif isinstance(available[self._id], sa.Integer):
                order = [self._id]
            else:
                order = [self._occurred, self._id]
            self._order = list(dict.fromkeys(order))
            self._columns = list(dict.fromkeys([
                self._id, self._aggregate_type, self._aggregate_id, self._type_col, self._payload, self._occurred,
                *([self._trace] if self._trace else []), *self._order]))
            table = sql_table(config.table, [*self._columns, self._published])
            select = (sa.select(*(table.c[c] for c in self._columns))
                      .where(table.c[self._published].is_(None))
                      .order_by(*(table.c[c] for c in self._order))
                      .limit(config.batch_size))
            self._first = select
            self._after = select.where(_after([table.c[c] for c in self._order]))
            self._mark = (sa.update(table)
                          .where(table.c[self._id].in_(sa.bindparam("ids", expanding=True)))
                          .where(table.c[self._published].is_(None))
                          .values({self._published: sa.func.current_timestamp()}))
        except Exception:
            engine.dispose()
            raise
        return engine

    def _fetch(self, position: tuple[Any, ...] | None) -> list[dict[str, Any]]:
        assert self._engine is not None
        with self._engine.connect() as conn:
            if position is None:
                rows = conn.execute(self._first).all()
            else:
                rows = conn.execute(self._after, {f"p{i}": v for i, v in enumerate(position)}).all()
        return [dict(zip(self._columns, row)) for row in rows]

    async def poll(self) -> list[SourceRecord]:
        if self._engine is None:
            raise RuntimeError("poll() before start()")
        if not self._in_flight:
            self._position = None  # nothing awaits Kafka: start over from the oldest unpublished row
        rows = await asyncio.to_thread(self._fetch, self._position)
        records = []
        for row in rows:
            row_id = offset_value(row[self._id])
            if row_id in self._in_flight:
                continue
            try:
                record = self._record(row, row_id)
            except ValueError:
                if records:
                    break  # publish the rows before it; the next poll fails at this row
                raise
            records.append(record)
            self._in_flight[row_id] = row[self._id]
            self._position = tuple(row[c] for c in self._order)
        return records

    def _record(self, row: dict[str, Any], row_id: Any) -> SourceRecord:
        config = self.config
        aggregate_type = row[self._aggregate_type]
        raw_type = row[self._type_col]
        # An unknown type, entity or payload is passed on as it is: the hub dead-letters the event
        # with the reason, instead of one bad row blocking the outbox.
        op = OPS.get(str(raw_type).strip().lower(), raw_type)
        data = None
        if op != "d" and row[self._payload] is not None:
            try:
                data = json_text(row[self._payload])
            except (ValueError, UnicodeDecodeError):
                data = row[self._payload] if isinstance(row[self._payload], str) else None
        try:
            occurred_at = rfc3339(as_moment(row[self._occurred], config.zone), config.zone)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"connector {config.name}: {config.table} row {row_id}: {self._occurred}: {exc}") from None
        envelope = make_envelope(
            source=config.source, entity=config.entities.get(aggregate_type, aggregate_type), op=op,
            key=key_part(row[self._aggregate_id]), occurred_at=occurred_at, data=data,
            event_id=_uuid_text(row[self._id]) or event_id_for(config.source, config.table, row_id),
            trace_id=None if self._trace is None or row[self._trace] is None else str(row[self._trace]),
        )
        return SourceRecord(envelope, {"id": row_id})

    async def committed(self, records: Sequence[SourceRecord]) -> None:
        """Mark exactly these rows published (Kafka holds them), in one transaction."""
        if not records:
            return
        if self._engine is None:
            raise RuntimeError("committed() before start()")
        ids = list(dict.fromkeys(r.offset["id"] for r in records))
        raw = [self._in_flight.get(i, i) for i in ids]
        await asyncio.to_thread(self._mark_published, raw)
        for i in ids:
            self._in_flight.pop(i, None)

    def _mark_published(self, ids: list[Any]) -> None:
        assert self._engine is not None
        with self._engine.begin() as conn:
            for start in range(0, len(ids), MARK_CHUNK):
                conn.execute(self._mark, {"ids": ids[start:start + MARK_CHUNK]})

    async def stop(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.dispose)


def _after(order: list[sa.ColumnElement], index: int = 0) -> sa.ColumnElement[bool]:
    """Rows after the position (:p0, :p1, ...) in the order of `order`: (a > p0) or (a = p0 and ...)."""
    head, *rest = order
    value = sa.bindparam(f"p{index}")
    if not rest:
        return head > value
    return sa.or_(head > value, sa.and_(head == value, _after(rest, index + 1)))


def _uuid_text(value: Any) -> str | None:
    """The id as a canonical UUID when it is one (UUID column or UUID text), else None."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return None
    return None

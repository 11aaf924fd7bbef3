"""Query-based change capture from any SQL database (SQLAlchemy URL), as Kafka Connect's JDBC source."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import Field, ValidationInfo, field_validator
from sqlalchemy.engine import Engine

from connectors.base import SourceConnector, SourceRecord, event_id_for, make_envelope, register
from connectors.database import (
    DatabaseConfig,
    as_moment,
    now_utc,
    offset_value,
    open_engine,
    rfc3339,
    sql_table,
    table_lookup,
)
from connectors.rows import catalogue, check_entity, check_fields, key_of
from connectors.table_rows import RowMapper


class SqlConnectorConfig(DatabaseConfig):
    """Keys of a `sql` connector: which table holds which entity, and how its changes show.

    Example (hub.yaml)::

        - name: smas-classes
          kind: sql
          source: smas
          url: postgresql+psycopg://smas:${SMAS_DB_PASSWORD}@db.smas:5432/smas
          table: lop_hoc
          entity: school.class
          columns: {class_id: ma_lop, name: ten_lop, size: si_so}
          soft_delete_column: deleted_at
    """

    table: str = Field(description="table to read, optionally schema-qualified (schema.table)")
    entity: str = Field(description="entity the table's rows are, e.g. school.student (data dictionary §3)")
    timestamp_column: str = Field(
        "updated_at", description="column set to the time of every insert, update and soft delete")
    incrementing_column: str = Field(
        "id", description="strictly increasing unique column (the primary key) that orders rows with equal timestamps")
    created_column: str | None = Field(
        "created_at", description="column set once at insert: a row whose created equals its updated timestamp is "
                                  "op c, else u; null when the table has none (every change is then op u)")
    soft_delete_column: str | None = Field(
        None, description="column that is non-null once the row is deleted (op d); null when rows are never "
                          "soft-deleted (hard deletes cannot be seen by queries)")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="entity field → column where the names differ; dotted fields fill nested records "
                    "(address.province_code: dia_chi_tinh); an unlisted field reads the column of its name "
                    "(nested: address_province_code)")
    json_columns: list[str] = Field(
        default_factory=list, description="fields whose column holds JSON text (arrays such as levels, subjects, "
                                          "preferences), parsed before publishing")
    lag_s: float = Field(
        0.0, ge=0, le=3600,
        description="read only rows whose timestamp is at least this many seconds old, so a transaction that "
                    "commits late with an earlier timestamp is not skipped (Kafka Connect's timestamp.delay)")

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        return check_entity(value)

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        check_fields(info.data.get("entity"), value)
        return value

    @field_validator("json_columns")
    @classmethod
    def _json_columns(cls, value: list[str], info: ValidationInfo) -> list[str]:
        check_fields(info.data.get("entity"), value)
        return value


@register
class SqlConnector(SourceConnector):
    """Polls a table for rows changed after the offset: ordered by (timestamp, id), as Kafka Connect's
    JDBC source in mode timestamp+incrementing, with a first pass that reads the table as a snapshot.

    The offset is ``{"ts": <timestamp of the last row>, "id": <its id>, "snapshot_until": <ts>}``:
    rows up to ``snapshot_until`` (the table's newest timestamp when the connector first started)
    are snapshot reads (op r); the marker lives in the offset, so a restart mid-snapshot goes on
    with r. Query-based capture sees only the latest version of a row at each poll, and no hard
    deletes: soft-delete the rows (``soft_delete_column``) or use an outbox. SQLite has no
    timestamp type: its timestamps are compared as the text stored, so write them in one format.

    Example::

        c = SqlConnector(SqlConnectorConfig(name="smas-classes", kind="sql", source="smas",
                                            url="sqlite:///smas.db", table="classes", entity="school.class"))
        await c.start(None)
        records = await c.poll()  # the table's rows, op r, oldest first
    """

    kind = "sql"
    config_model = SqlConnectorConfig

    def __init__(self, config: SqlConnectorConfig) -> None:
        super().__init__(config)
        self.config: SqlConnectorConfig = config
        self._engine: Engine | None = None
        self._position: tuple[Any, Any] | None = None  # (timestamp, id) as the driver returns them
        self._snapshot_until: Any = None
        self._snapshot_read = 0
        self._snapshot_total = 0

    async def start(self, offset: dict[str, Any] | None) -> None:
        self._engine = await asyncio.to_thread(self._open)
        if offset is None:
            self._position = None
            self._snapshot_until = await asyncio.to_thread(self._newest)
        else:
            ts, row_id = offset.get("ts"), offset.get("id")
            self._position = None if ts is None else (self._bindable(ts), row_id)
            until = offset.get("snapshot_until")
            self._snapshot_until = None if until is None else self._bindable(until)
        if self._snapshot_until is not None:
            self._snapshot_read, self._snapshot_total = await asyncio.to_thread(self._snapshot_counts)

    def _snapshot_counts(self) -> tuple[int, int]:
        """Rows of the snapshot already read (before the position) and in all: two COUNT queries, once."""
        assert self._engine is not None
        table = sql_table(self.config.table, self._columns)
        ts, row_id = table.c[self._ts], table.c[self._id]
        in_snapshot = sa.select(sa.func.count()).select_from(table).where(ts <= self._snapshot_until)
        with self._engine.connect() as conn:
            total = conn.execute(in_snapshot).scalar() or 0
            read = 0
            if self._position is not None:
                p_ts, p_id = self._position
                read = conn.execute(in_snapshot.where(sa.or_(ts < p_ts, sa.and_(ts == p_ts, row_id <= p_id)))).scalar()
        return int(read or 0), int(total)

    def snapshot_progress(self) -> tuple[int, int] | None:
        if self._snapshot_until is None or self._snapshot_read >= self._snapshot_total:
            return None
        return self._snapshot_read, self._snapshot_total

    def _open(self) -> Engine:
        config = self.config
        engine = open_engine(config)
        try:
            available, column = table_lookup(engine, config)

            self._ts = column(config.timestamp_column, "timestamp_column")
            self._id = column(config.incrementing_column, "incrementing_column")
            self._created = None if config.created_column is None else column(config.created_column, "created_column")
            self._deleted = (None if config.soft_delete_column is None
                             else column(config.soft_delete_column, "soft_delete_column"))
            self._schema = catalogue()[config.entity]
            self._mapper = RowMapper(self._schema, config.columns, config.json_columns, config.zone)
            self._mapper.bind(available, config.table, config.name)
            # SQLite keeps timestamps as text and compares them as text: bind the text as stored.
            self._ts_is_text = engine.dialect.name == "sqlite" or not isinstance(available[self._ts], sa.DateTime)
            wanted = [self._ts, self._id, *filter(None, (self._created, self._deleted)), *self._mapper.columns]
            self._columns = list(dict.fromkeys(wanted))
            table = sql_table(config.table, self._columns)
            ts, row_id = table.c[self._ts], table.c[self._id]
            select = sa.select(*(table.c[c] for c in self._columns)).order_by(ts, row_id).limit(config.batch_size)
            self._first = select.where(ts.is_not(None))
            self._after = select.where(sa.or_(ts > sa.bindparam("ts"),
                                              sa.and_(ts == sa.bindparam("ts"), row_id > sa.bindparam("id"))))
            self._max = sa.select(sa.func.max(ts))
        except Exception:
            engine.dispose()
            raise
        return engine

    def _bindable(self, text: Any) -> Any:
        """An offset's timestamp text as the value the query compares with the column."""
        if self._ts_is_text or not isinstance(text, str):
            return text
        return datetime.fromisoformat(text)  # a datetime column: bind a datetime, naive or aware as read

    def _newest(self) -> Any:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return conn.execute(self._max).scalar()

    def _fetch(self) -> list[dict[str, Any]]:
        assert self._engine is not None
        with self._engine.connect() as conn:
            if self._position is None:
                rows = conn.execute(self._first).all()
            else:
                rows = conn.execute(self._after, {"ts": self._position[0], "id": self._position[1]}).all()
        columns = self._columns
        return [dict(zip(columns, row)) for row in rows]

    async def poll(self) -> list[SourceRecord]:
        if self._engine is None:
            raise RuntimeError("poll() before start()")
        rows = await asyncio.to_thread(self._fetch)
        config, zone = self.config, self.config.zone
        cutoff = now_utc() - timedelta(seconds=config.lag_s) if config.lag_s > 0 else None
        records: list[SourceRecord] = []
        for row in rows:
            ts, row_id = row[self._ts], row[self._id]
            try:
                moment = as_moment(ts, zone)
                if cutoff is not None and moment > cutoff:
                    break  # too recent: a transaction with an earlier timestamp may still commit
                snapshot = self._snapshot_until is not None and ts <= self._snapshot_until
                record = self._record(row, ts, row_id, moment, snapshot)
            except (TypeError, ValueError) as exc:
                if records:
                    break  # publish the rows before it; the next poll starts at this row and fails there
                raise ValueError(f"connector {config.name}: {config.table} row {row_id}: {exc}") from None
            records.append(record)
            if snapshot:
                self._snapshot_read += 1
            # The position moves only past rows turned into records, so a failed row is read again.
            self._position = (ts, row_id)
            if not snapshot:
                self._snapshot_until = None  # past the snapshot's end
        return records

    def _record(self, row: dict[str, Any], ts: Any, row_id: Any, moment: datetime, snapshot: bool) -> SourceRecord:
        config = self.config
        occurred_at = rfc3339(moment, config.zone)
        if self._deleted is not None and row[self._deleted] is not None:
            op, data = "d", None  # also in the snapshot: a consumer that kept the row drops it
            key = self._mapper.key(row)
        else:
            if snapshot:
                op = "r"
            elif self._created is not None and row[self._created] is not None and \
                    as_moment(row[self._created], config.zone) == moment:
                op = "c"
            else:
                op = "u"
            data = self._mapper.data(row)
            key = key_of(config.entity, data)
        id_value = offset_value(row_id)
        envelope = make_envelope(
            source=config.source, entity=config.entity, op=op, key=key, occurred_at=occurred_at, data=data,
            # The same row version read again (a restart, a replayed snapshot) gets the same id.
            event_id=event_id_for(config.source, config.table, id_value, occurred_at),
        )
        until = offset_value(self._snapshot_until) if snapshot else None
        return SourceRecord(envelope, {"ts": offset_value(ts), "id": id_value, "snapshot_until": until})

    async def stop(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.dispose)

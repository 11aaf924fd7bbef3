"""SQL databases as sources: connection keys, the engine, table and column lookup, driver values as JSON."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timezone, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import Field, field_validator
from sqlalchemy.engine import Engine

from connectors.base import ConnectorConfig

ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class DatabaseConfig(ConnectorConfig):
    """Keys of every connector that reads a SQL database."""

    url: str = Field(
        description="SQLAlchemy URL of the source database, e.g. postgresql+psycopg://smas@db:5432/smas or "
                    "sqlite:///smas.db; ${VAR} inside is replaced from the environment at start (verbatim, so "
                    "URL-encode special characters), which keeps passwords out of hub.yaml")
    timezone: str = Field(
        "Asia/Ho_Chi_Minh",
        description="IANA time zone of timestamps the database stores without an offset (UTC if it stores UTC)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if ENV_VAR.fullmatch(value.strip()):
            return value  # the whole URL comes from the environment: checked at start
        try:
            sa.engine.make_url(ENV_VAR.sub("x", value))
        except sa.exc.ArgumentError:
            raise ValueError(f"{redact(value)!r} is not a SQLAlchemy URL (dialect+driver://user@host:port/database)"
                             ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as Asia/Ho_Chi_Minh or UTC") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def expand_env(value: str, environ: Mapping[str, str] | None = None, *, key: str = "url") -> str:
    """`value` with every ${VAR} replaced from the environment; an unset variable is an error naming it."""
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ValueError(f"{key}: environment variable {name} is not set (the {key} refers to ${{{name}}})")
        return env[name]

    return ENV_VAR.sub(replace, value)


def open_engine(config: DatabaseConfig) -> Engine:
    """An engine on the configured database; connections are opened lazily, checked before reuse."""
    url = expand_env(config.url)
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError, sa.exc.NoSuchModuleError) as exc:
        raise ValueError(f"connector {config.name}: url {redact(url)!r}: {exc}") from None


def split_table(table: str) -> tuple[str | None, str]:
    """'schema.table' → ('schema', 'table'); 'table' → (None, 'table')."""
    schema, _, name = table.rpartition(".")
    return schema or None, name


def table_columns(engine: Engine, table: str, connector: str) -> dict[str, Any]:
    """The table's column names and SQLAlchemy types; an error naming the table when it is missing."""
    schema, name = split_table(table)
    try:
        columns = sa.inspect(engine).get_columns(name, schema=schema)
    except sa.exc.NoSuchTableError:
        columns = []
    if not columns:
        raise ValueError(f"connector {connector}: table {table!r} not found in {redact(str(engine.url))}")
    return {c["name"]: c["type"] for c in columns}


def resolve_column(wanted: str, available: Mapping[str, Any]) -> str | None:
    """The table's spelling of a column name: exact, else the one column equal ignoring case."""
    if wanted in available:
        return wanted
    folded = [name for name in available if name.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None


def require_column(wanted: str, available: Mapping[str, Any], key: str, table: str, connector: str) -> str:
    found = resolve_column(wanted, available)
    if found is None:
        raise ValueError(f"connector {connector}: {key}: table {table!r} has no column {wanted!r} "
                         f"(columns: {', '.join(available)})")
    return found


def table_lookup(engine: Engine, config: DatabaseConfig) -> tuple[dict[str, Any], Callable[[str, str], str]]:
    """The configured table's columns, and `column(wanted, key)`: the actual name of a configured
    column, or an error naming the hub.yaml key and the columns there are."""
    available = table_columns(engine, config.table, config.name)

    def column(wanted: str, key: str) -> str:
        return require_column(wanted, available, key, config.table, config.name)

    return available, column


def sql_table(table: str, columns: Iterable[str]) -> sa.TableClause:
    """A lightweight table construct: identifiers quoted per dialect, values passed through untyped."""
    schema, name = split_table(table)
    return sa.table(name, *(sa.column(c) for c in dict.fromkeys(columns)), schema=schema)


# --- values -------------------------------------------------------------------------------------


def rfc3339(moment: datetime, zone: tzinfo) -> str:
    """RFC 3339 in `zone` (a naive value is taken to be in `zone`), e.g. 2026-05-01T08:00:00+07:00."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(zone).isoformat()


def as_moment(value: Any, zone: tzinfo) -> datetime:
    """A database timestamp (datetime, date, or ISO text as SQLite keeps it) as an aware datetime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO timestamp") from None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime.combine(value, time(), zone)
    raise TypeError(f"a {type(value).__name__} is not a timestamp")


def to_json(value: Any, zone: tzinfo) -> Any:
    """A value as the driver returns it, as JSON: dates ISO, timestamps RFC 3339, decimals as text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, datetime):
        return rfc3339(value, zone)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact; the hub reads numeric text for decimal fields
    if isinstance(value, (list, tuple)):
        return [to_json(v, zone) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v, zone) for k, v in value.items()}
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} values are not supported")


def json_text(value: Any) -> Any:
    """A JSON column's value parsed (text or bytes); drivers that parse JSON types already pass through."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        return json.loads(value)
    return value


def offset_value(value: Any) -> Any:
    """A column value as it is kept in an offset: text for timestamps, numbers as numbers."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, UUID):
        return str(value)
    return value


def now_utc() -> datetime:
    return datetime.now(timezone.utc)

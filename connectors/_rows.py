"""Rows of SQL tables as ingest data: database config keys, column→field mapping and values as JSON."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import Field, field_validator
from sqlalchemy.engine import Engine

from connectors.base import ConnectorConfig
from hub.contract.schemas import Catalogue, EntitySchema, normalize_text

ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
Convert = Callable[[Any], Any]
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The entity schemas, loaded once per process (config validation asks for them often)."""
    return Catalogue.load()


def check_entity(name: str) -> str:
    names = catalogue().names
    if name not in names:
        raise ValueError(f"{name!r} is not an entity of the data contract; expected one of: {', '.join(sorted(names))}")
    return name


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


def _leaf(kind: Any, zone: tzinfo) -> Convert:
    """The converter of one schema type: the schema says what SQLite's loose types mean."""
    logical = kind.get("logicalType") if isinstance(kind, dict) else None
    if logical in ("timestamp-millis", "timestamp-micros"):
        return lambda v: None if v is None else rfc3339(as_moment(v, zone), zone)
    if logical == "date":
        def to_date(v: Any) -> Any:
            if isinstance(v, datetime):
                return v.date().isoformat()
            if isinstance(v, str) and len(v) > 10 and v[10] in " T":
                return v[:10]  # a date kept as a timestamp at midnight
            return to_json(v, zone)
        return to_date
    if logical == "decimal":
        return lambda v: to_json(v, zone)
    base = kind.get("type") if isinstance(kind, dict) else kind
    if base == "boolean":
        return lambda v: bool(v) if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1) else to_json(v, zone)

    def plain(v: Any) -> Any:
        return v if v.__class__ in _JSON_SCALARS else to_json(v, zone)  # most values: no call

    return plain


@dataclass(frozen=True)
class FieldSource:
    """Where one field of the entity comes from: one column, or (a record) one column per field."""

    path: str  # dotted from the top: address.province_code
    name: str
    column: str | None  # the table's column holding the whole field
    convert: Convert
    children: tuple[FieldSource, ...] = ()
    nullable: bool = False


class RowMapper:
    """Builds an entity's `data` from a table row, by the entity's Avro schema and the `columns` mapping.

    A field reads the column `columns[field]`, else the column of the same name (parsed when the
    field is in `json_columns`). A record field not mapped whole is built from one column per
    field: `columns["address.province_code"]`, else the column address_province_code; an
    optional record whose columns are all null is null. A field whose column the table lacks is
    left out when the schema gives it a default (the hub fills it in), else a start-up error.

    >>> m = RowMapper(catalogue()["school.class"], {"name": "class_name"}, [], ZoneInfo("UTC"))
    >>> cols = ["class_id", "school_code", "school_year", "grade", "class_name", "size", "id"]
    >>> m.bind(cols, "classes", "demo")
    >>> m.data(dict(zip(cols, ["31001-2025-2026-10A1", "31001", "2025-2026", 10, "10A1", 40, 7])))["name"]
    '10A1'
    """

    def __init__(self, entity: EntitySchema, columns: Mapping[str, str], json_columns: Sequence[str],
                 zone: tzinfo) -> None:
        self.entity = entity
        self.mapping = dict(columns)
        self.json_fields = frozenset(json_columns)
        self.zone = zone
        self.fields: tuple[FieldSource, ...] = ()
        self.key_sources: tuple[FieldSource, ...] = ()

    def bind(self, available: Iterable[str], table: str, connector: str) -> None:
        """Resolve every field against the table's columns; an error names a required field without one."""
        self._available = {name: None for name in available}
        self._table, self._connector = table, connector
        named: dict[str, Any] = {}
        self.fields = tuple(f for f in (self._source(f, "", named, self.entity.schema.get("namespace", ""))
                                        for f in self.entity.schema["fields"]) if f is not None)
        by_name = {f.name: f for f in self.fields}
        missing = [k for k in self.entity.key_fields if k not in by_name or by_name[k].column is None]
        if missing:
            raise ValueError(f"connector {connector}: key field(s) {', '.join(missing)} of {self.entity.entity} "
                             f"have no column in {table!r}; map them under `columns`")
        self.key_sources = tuple(by_name[k] for k in self.entity.key_fields)

    @property
    def columns(self) -> list[str]:
        """The columns the mapping reads, in a stable order."""
        out: list[str] = []

        def walk(sources: Iterable[FieldSource]) -> None:
            for s in sources:
                if s.column is not None:
                    out.append(s.column)
                walk(s.children)

        walk(self.fields)
        return list(dict.fromkeys(out))

    def _source(self, field: dict, prefix: str, named: dict[str, Any], namespace: str) -> FieldSource | None:
        name = field["name"]
        path = prefix + name
        kind, nullable = _unwrap(field["type"], named, namespace)
        optional = "default" in field or nullable
        record = isinstance(kind, dict) and kind.get("type") == "record"
        mapped = self.mapping.get(path)
        if mapped is None and (not record or path in self.json_fields):
            mapped = path.replace(".", "_")
        if mapped is not None:
            column = resolve_column(mapped, self._available)
            if column is None:
                if optional and path not in self.mapping:
                    return None  # the schema's default applies
                raise ValueError(f"connector {self._connector}: field {path} of {self.entity.entity}: table "
                                 f"{self._table!r} has no column {mapped!r}; map the field under `columns`")
            if path in self.json_fields:
                convert: Convert = (lambda v, z=self.zone: None if v is None else to_json(json_text(v), z))
            else:
                convert = _leaf(kind, self.zone)
            return FieldSource(path, name, column, convert, nullable=nullable)
        # A record built from one column per field (address.province_code ← address_province_code).
        space = kind.get("namespace", namespace)
        if optional and not self._any_column(kind, path, named, space):
            return None  # none of its columns exist: the schema's default applies
        children = tuple(c for c in (self._source(f, path + ".", named, space) for f in kind["fields"])
                         if c is not None)
        return FieldSource(path, name, None, _identity, children, nullable)

    def _any_column(self, kind: dict, path: str, named: dict[str, Any], namespace: str) -> bool:
        """Whether any field of a record (at any depth) has a column in the table."""
        for f in kind["fields"]:
            child = f"{path}.{f['name']}"
            sub, _ = _unwrap(f["type"], named, namespace)
            wanted = self.mapping.get(child, child.replace(".", "_"))
            if resolve_column(wanted, self._available) is not None:
                return True
            if isinstance(sub, dict) and sub.get("type") == "record" and self._any_column(
                    sub, child, named, sub.get("namespace", namespace)):
                return True
        return False

    def data(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The entity's fields of one row (keyed by column name), as JSON values."""
        return _build(self.fields, row)

    def key(self, row: Mapping[str, Any]) -> str:
        """The entity key of a row, from its key fields' columns (works for a deleted row too)."""
        return "|".join(key_part(s.convert(row[s.column])) for s in self.key_sources)

    def key_of(self, data: Mapping[str, Any]) -> str:
        """The entity key built from the row's `data`, as the hub builds it from the record."""
        return "|".join(key_part(data.get(name)) for name in self.entity.key_fields)


def key_part(value: Any) -> str:
    """One field of a key as the hub builds it from the canonical record (text normalised)."""
    if value is None:
        return ""
    return normalize_text(value) if isinstance(value, str) else str(value)


def _identity(value: Any) -> Any:
    return value


def _build(sources: Iterable[FieldSource], row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sources:
        if s.column is not None:
            out[s.name] = s.convert(row[s.column])
        else:
            nested = _build(s.children, row)
            # An optional record whose columns are all null is absent (null), not a record of nulls.
            out[s.name] = None if s.nullable and all(v is None for v in nested.values()) else nested
    return out


def _unwrap(kind: Any, named: dict[str, Any], namespace: str) -> tuple[Any, bool]:
    """The type of a field without its null branch, named references resolved; and whether null is allowed."""
    nullable = False
    if isinstance(kind, list):
        branches = [b for b in kind if b != "null"]
        nullable = len(branches) < len(kind)
        if len(branches) != 1:
            return {"type": "union"}, nullable
        kind = branches[0]
    if isinstance(kind, str) and kind not in _PRIMITIVES:
        kind = named.get(kind) or named.get(f"{namespace}.{kind}") or kind
    if isinstance(kind, dict) and kind.get("type") in ("record", "enum", "fixed"):
        space = kind.get("namespace", namespace)
        named[kind["name"]] = kind
        named[f"{space}.{kind['name']}"] = kind
    return kind, nullable


def field_paths(entity: EntitySchema) -> set[str]:
    """Every field of the entity, top-level and (dotted) inside records, e.g. address.province_code."""
    paths: set[str] = set()
    named: dict[str, Any] = {}

    def walk(fields: list[dict], prefix: str, namespace: str) -> None:
        for f in fields:
            path = prefix + f["name"]
            paths.add(path)
            kind, _ = _unwrap(f["type"], named, namespace)
            if isinstance(kind, dict) and kind.get("type") == "record":
                walk(kind["fields"], path + ".", kind.get("namespace", namespace))

    walk(entity.schema["fields"], "", entity.schema.get("namespace", ""))
    return paths


def check_fields(entity: str | None, names: Iterable[str]) -> None:
    """Every name must be a field of the entity (dotted for record fields); the error lists the fields."""
    if entity is None or entity not in catalogue().names:
        return  # the entity's own error is reported
    paths = field_paths(catalogue()[entity])
    unknown = [n for n in names if n not in paths]
    if unknown:
        verb = "is not a field" if len(unknown) == 1 else "are not fields"
        raise ValueError(f"{', '.join(map(repr, unknown))} {verb} of {entity} (fields: {', '.join(sorted(paths))})")


def now_utc() -> datetime:
    return datetime.now(timezone.utc)

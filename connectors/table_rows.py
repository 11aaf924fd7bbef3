"""A table row as an entity's data: the entity's field specs bound to a table's columns, values converted by kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from connectors.database import as_moment, json_text, resolve_column, rfc3339, to_json
from connectors.rows import FieldSpec, key_part, schema_specs
from hub.contract.schemas import EntitySchema

Convert = Callable[[Any], Any]
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def convert_for(kind: str, zone: tzinfo) -> Convert:
    """The converter of a field of `kind` (connectors.rows): the schema says what SQLite's loose types mean."""
    if kind == "timestamp":
        return lambda v: None if v is None else rfc3339(as_moment(v, zone), zone)
    if kind == "date":
        def to_date(v: Any) -> Any:
            if isinstance(v, datetime):
                return v.date().isoformat()
            if isinstance(v, str) and len(v) > 10 and v[10] in " T":
                return v[:10]  # a date kept as a timestamp at midnight
            return to_json(v, zone)
        return to_date
    if kind == "decimal":
        return lambda v: to_json(v, zone)
    if kind == "bool":
        return lambda v: bool(v) if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1) else to_json(v, zone)

    def plain(v: Any) -> Any:
        return v if v.__class__ in _JSON_SCALARS else to_json(v, zone)  # most values: no call

    return plain


@dataclass(frozen=True)
class FieldSource:
    """Where one field of the entity comes from: one column, or (a record) one column per field."""

    spec: FieldSpec
    name: str
    column: str | None  # the table's column holding the whole field
    convert: Convert
    children: tuple[FieldSource, ...] = ()


class RowMapper:
    """Builds an entity's `data` from a table row, by the entity's Avro schema and the `columns` mapping.

    A field reads the column `columns[field]`, else the column of the same name (parsed when the
    field is in `json_columns`). A record field not mapped whole is built from one column per
    field: `columns["address.province_code"]`, else the column address_province_code; an
    optional record whose columns are all null is null. A field whose column the table lacks is
    left out when the schema gives it a default (the hub fills it in), else a start-up error.

    The columns are fixed once bound, so the mapping is resolved then and each row is built from
    that plan; its null rules are its own (see `_build`), not those of `connectors.rows.assemble`.

    >>> from zoneinfo import ZoneInfo
    >>> from connectors.rows import catalogue
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
        self._specs = schema_specs(self.entity.schema)
        top = (spec for spec in self._specs.values() if "." not in spec.path)
        self.fields = tuple(f for f in map(self._source, top) if f is not None)
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

    def _source(self, spec: FieldSpec) -> FieldSource | None:
        path = spec.path
        record = spec.kind == "record"
        mapped = self.mapping.get(path)
        if mapped is None and (not record or path in self.json_fields):
            mapped = path.replace(".", "_")
        if mapped is not None:
            column = resolve_column(mapped, self._available)
            if column is None:
                if spec.optional and path not in self.mapping:
                    return None  # the schema's default applies
                raise ValueError(f"connector {self._connector}: field {path} of {self.entity.entity}: table "
                                 f"{self._table!r} has no column {mapped!r}; map the field under `columns`")
            if path in self.json_fields:
                convert: Convert = (lambda v, z=self.zone: None if v is None else to_json(json_text(v), z))
            else:
                convert = convert_for(spec.kind, self.zone)
            return FieldSource(spec, spec.name, column, convert)
        # A record built from one column per field (address.province_code ← address_province_code).
        if spec.optional and not self._any_column(spec):
            return None  # none of its columns exist: the schema's default applies
        children = tuple(c for c in (self._source(self._specs[p]) for p in spec.children) if c is not None)
        return FieldSource(spec, spec.name, None, _identity, children)

    def _any_column(self, record: FieldSpec) -> bool:
        """Whether any field of a record (at any depth) has a column in the table."""
        for child in record.children:
            wanted = self.mapping.get(child, child.replace(".", "_"))
            if resolve_column(wanted, self._available) is not None:
                return True
            sub = self._specs[child]
            if sub.kind == "record" and self._any_column(sub):
                return True
        return False

    def data(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The entity's fields of one row (keyed by column name), as JSON values."""
        return _build(self.fields, row)

    def key(self, row: Mapping[str, Any]) -> str:
        """The entity key of a row, from its key fields' columns (works for a deleted row too)."""
        return "|".join(key_part(s.convert(row[s.column])) for s in self.key_sources)


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
            out[s.name] = None if s.spec.nullable and all(v is None for v in nested.values()) else nested
    return out

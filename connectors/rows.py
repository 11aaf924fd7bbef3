"""The one row-mapping model of the connectors: an entity's fields by dotted path, nesting, null rules, key.

A source row is flat (a table's columns, Debezium's `after`, a spreadsheet's cells); an entity's
record is nested. `field_specs` lists the entity's fields by dotted path (address.ward_code), each
with its kind, which says how a source value converts (every source has its converters by kind:
connectors.table_rows, connectors.debezium, connectors.cells), and its null rules. `assemble`
nests values given by path and applies those rules; `key_of` builds the entity key as the hub does.
The sql connector binds the same specs to a table's columns once, at start (connectors.table_rows).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hub.contract.coerce import normalize_text
from hub.contract.schemas import Catalogue, EntitySchema


@functools.lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The entity schemas, loaded once per process (config validation asks for them often)."""
    return Catalogue.load()


def check_entity(name: str) -> str:
    """The name, when it is an entity of the data contract (the sql and outbox connectors' wording)."""
    names = catalogue().names
    if name not in names:
        raise ValueError(f"{name!r} is not an entity of the data contract; expected one of: {', '.join(sorted(names))}")
    return name


def entity_schema(entity: str) -> EntitySchema:
    """The entity's schema; an unknown entity is an error (the file and debezium connectors' wording)."""
    entities = catalogue().entities
    if entity not in entities:
        raise ValueError(f"unknown entity {entity!r}; one of {', '.join(sorted(entities))}")
    return entities[entity]


# --- the fields of an entity ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an entity, by dotted path: how to convert its source value, and its null rules."""

    path: str
    kind: str  # int, float, decimal, date, timestamp, bool, list, json, string, record
    nullable: bool
    has_default: bool
    children: tuple[str, ...] = ()  # a record's fields, by dotted path

    @property
    def name(self) -> str:
        """The field's own name: the last part of its path."""
        return self.path.rpartition(".")[2]

    @property
    def optional(self) -> bool:
        """Whether a row may lack the field: null is allowed, or the schema's default applies."""
        return self.nullable or self.has_default


_PRIMITIVE_KINDS = {"int": "int", "long": "int", "float": "float", "double": "float", "boolean": "bool",
                    "string": "string", "bytes": "string", "null": "string"}


def _kind_of(schema: Any, named: dict[str, Any]) -> tuple[str, Any]:
    """(kind, record schema or None) of a non-union Avro type; named types resolve through `named`."""
    if isinstance(schema, str):
        if schema in _PRIMITIVE_KINDS:
            return _PRIMITIVE_KINDS[schema], None
        definition = named.get(schema) or named.get(schema.rsplit(".", 1)[-1])
        if definition is None:
            return "string", None
        return _kind_of(definition, named)
    if isinstance(schema, list):
        return "json", None
    logical = schema.get("logicalType")
    kind = schema["type"]
    if "name" in schema and kind in ("record", "enum", "fixed"):
        named.setdefault(schema["name"], schema)
        if schema.get("namespace"):
            named.setdefault(f"{schema['namespace']}.{schema['name']}", schema)
    if logical == "date":
        return "date", None
    if logical in ("timestamp-millis", "timestamp-micros"):
        return "timestamp", None
    if logical == "decimal":
        return "decimal", None
    if kind == "record":
        return "record", schema
    if kind == "enum":
        return "string", None
    if kind == "array":
        items = schema["items"]
        if isinstance(items, list):
            return "json", None
        item_kind, _ = _kind_of(items, named)
        return ("list" if item_kind == "string" else "json"), None
    if kind == "map":
        return "json", None
    if isinstance(kind, (str, dict)):
        return _kind_of(kind, named)
    return "json", None


def _walk(fields: list[dict], prefix: str, named: dict[str, Any], out: dict[str, FieldSpec]) -> None:
    for f in fields:
        path = prefix + f["name"]
        ftype = f["type"]
        nullable = False
        if isinstance(ftype, list):
            nullable = "null" in ftype
            others = [t for t in ftype if t != "null"]
            if len(others) == 1:
                ftype = others[0]
        kind, record = _kind_of(ftype, named)
        fields_of = record.get("fields", []) if record is not None else []
        out[path] = FieldSpec(path, kind, nullable, "default" in f, tuple(f"{path}.{c['name']}" for c in fields_of))
        if record is not None:
            _walk(fields_of, path + ".", named, out)


def schema_specs(schema: dict[str, Any]) -> dict[str, FieldSpec]:
    """Every field of a record schema by dotted path, parents (kind "record") before their children."""
    out: dict[str, FieldSpec] = {}
    _walk(schema["fields"], "", {}, out)
    return out


@functools.lru_cache(maxsize=None)
def field_specs(entity: str) -> dict[str, FieldSpec]:
    """Every field of the entity by dotted path, parents (kind "record") before their children.

    >>> specs = field_specs("school.student")
    >>> specs["address"].kind, specs["address.ward_code"].kind, specs["date_of_birth"].kind
    ('record', 'string', 'date')
    """
    return schema_specs(entity_schema(entity).schema)


def check_fields(entity: str | None, names: Iterable[str], what: str | None = None) -> None:
    """Every name must be a field of the entity (dotted for record fields); the error lists the fields.

    A field validator leaves `what` out (pydantic names the key); a model validator names the key in
    `what`. Each wording is the one its connectors have always given.
    """
    if entity is None or entity not in catalogue().names:
        return  # the entity's own error is reported
    specs = field_specs(entity)
    unknown = [n for n in names if n not in specs]
    if not unknown:
        return
    if what is not None:
        raise ValueError(f"{what}: {', '.join(map(repr, unknown))} not fields of {entity} "
                         f"(fields: {', '.join(specs)})")
    verb = "is not a field" if len(unknown) == 1 else "are not fields"
    raise ValueError(f"{', '.join(map(repr, unknown))} {verb} of {entity} (fields: {', '.join(sorted(specs))})")


# --- values by path → the entity's data ----------------------------------------------------------

def assemble(entity: str, values: dict[str, Any], *, omit_nulls: bool = False) -> dict[str, Any]:
    """The entity's data from values by dotted field path (absent paths stay absent).

    A nested record whose present leaves are all null becomes null when the record is nullable and
    is left out when it has a default. A null in a non-nullable field is left out when the field has
    a default (the default applies) or with `omit_nulls` (an empty cell: the hub says the field is
    required); otherwise it stays, and the hub says the field must not be null.
    """
    specs = field_specs(entity)
    data: dict[str, Any] = {}
    for path, value in values.items():
        spec = specs.get(path)
        if spec is None:
            data[path] = value  # not a field (e.g. the row-error marker): the hub names it
            continue
        parts = path.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            continue  # leaves of the record were given too: they win over its own column
        node[parts[-1]] = value
    _settle(data, "", specs, omit_nulls)
    return data


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and all(_empty(v) for v in value.values()))


def _settle(node: dict[str, Any], prefix: str, specs: dict[str, FieldSpec], omit_nulls: bool) -> None:
    for name in list(node):
        spec = specs.get(prefix + name)
        if spec is None:
            continue
        value = node[name]
        if spec.kind == "record" and isinstance(value, dict):
            if value and _empty(value) and (spec.nullable or spec.has_default):
                if spec.nullable:
                    node[name] = None
                else:
                    del node[name]
                continue
            _settle(value, prefix + name + ".", specs, omit_nulls)
            continue
        if value is None and not spec.nullable and (spec.has_default or omit_nulls):
            del node[name]


# --- the entity key ------------------------------------------------------------------------------

def key_part(value: Any) -> str:
    """One field of a key as the hub builds it from the canonical record (text normalised)."""
    if value is None:
        return ""
    return normalize_text(value) if isinstance(value, str) else str(value)


def key_of(entity: str, data: dict[str, Any] | None) -> str:
    """The entity key from (unconverted) data, as the hub builds it: key fields joined with '|'."""
    return "|".join(key_part((data or {}).get(name)) for name in entity_schema(entity).key_fields)

"""Avro projection helpers: named types, inlining references, filter-path checks, projected schemas, copying.

Projected schemas keep the record name, move to namespace `vn.edu.sub.<id with - as _>`
(nested named types without their own namespace follow), keep `eduhub.key` and add
`eduhub.subscriber`. A named type defined in a dropped field and used by a kept one is
inlined where it is first used. A named type defined twice (a policy copies a type holding PII to
each place it is used) stays one definition when the copies are equal; a different copy is renamed
`<name>_<n>`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hub.contract.schemas import EntitySchema

_PRIMITIVE_TYPES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def subscriber_namespace(subscriber_id: str) -> str:
    """The Avro namespace of a subscriber's projected schemas (Avro names cannot hold '-')."""
    return "vn.edu.sub." + subscriber_id.replace("-", "_")


def split_nullable(avro_type: Any) -> tuple[bool, Any]:
    """(nullable, the non-null branch) of a field type; other unions are returned whole."""
    if isinstance(avro_type, list):
        others = [t for t in avro_type if t != "null"]
        if len(others) == 1:
            return "null" in avro_type, others[0]
    return False, avro_type


def _full_name(schema: dict, namespace: str) -> str:
    name = schema["name"]
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def _collect_named(avro_type: Any, namespace: str, found: dict[str, Any]) -> None:
    if isinstance(avro_type, list):
        for t in avro_type:
            _collect_named(t, namespace, found)
    elif isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind in ("record", "enum", "fixed", "error"):
            full = _full_name(avro_type, namespace)
            found.setdefault(full, avro_type)
            found.setdefault(avro_type["name"], avro_type)
            namespace = full.rpartition(".")[0]
        if kind in ("record", "error"):
            for f in avro_type.get("fields", []):
                _collect_named(f["type"], namespace, found)
        elif kind == "array":
            _collect_named(avro_type["items"], namespace, found)
        elif kind == "map":
            _collect_named(avro_type["values"], namespace, found)
        elif isinstance(kind, (dict, list)):
            _collect_named(kind, namespace, found)


def _inline_refs(avro_type: Any, namespace: str, named: dict[str, Any], defined: dict[str, str]) -> Any:
    """`avro_type` with named-type references to types not yet defined replaced by their definition.

    `defined` maps the names defined so far to their definition's text (before its references were inlined).
    """
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVE_TYPES:
            return avro_type
        full = avro_type if "." in avro_type else f"{namespace}.{avro_type}"
        if full in defined or avro_type in defined:
            return avro_type
        definition = named.get(avro_type) or named.get(full)
        if definition is None:
            return avro_type
        return _inline_refs(copy.deepcopy(definition), namespace, named, defined)
    if isinstance(avro_type, list):
        return [_inline_refs(t, namespace, named, defined) for t in avro_type]
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind in ("record", "enum", "fixed", "error"):
            full = _full_name(avro_type, namespace)
            text = json.dumps(avro_type, sort_keys=True)  # as defined, under its own name
            base, n = avro_type["name"], 2
            while full in defined:
                if defined[full] == text:
                    return full  # the same definition again: a reference to the first
                avro_type["name"] = f"{base}_{n}"  # a different type under a name already defined
                full, n = _full_name(avro_type, namespace), n + 1
            defined.update({full: text, avro_type["name"]: text})
            namespace = full.rpartition(".")[0]
        if kind in ("record", "error"):
            for f in avro_type.get("fields", []):
                f["type"] = _inline_refs(f["type"], namespace, named, defined)
        elif kind == "array":
            avro_type["items"] = _inline_refs(avro_type["items"], namespace, named, defined)
        elif kind == "map":
            avro_type["values"] = _inline_refs(avro_type["values"], namespace, named, defined)
        elif isinstance(kind, (dict, list)):
            avro_type["type"] = _inline_refs(kind, namespace, named, defined)
    return avro_type


def named_types(schema: EntitySchema) -> dict[str, Any]:
    """Every named type of an entity's schema, under its full name and its short name."""
    found: dict[str, Any] = {}
    _collect_named(schema.schema, "", found)
    return found


def project_schema(schema: EntitySchema, fields: list[dict[str, Any]], namespace: str, subscriber: str,
                   named: dict[str, Any]) -> dict[str, Any]:
    """The projected record schema of `schema` with the (already transformed) `fields`."""
    defined: dict[str, str] = {}
    for f in fields:
        f["type"] = _inline_refs(f["type"], namespace, named, defined)
    projected = {k: copy.deepcopy(v) for k, v in schema.schema.items() if k != "fields"}
    projected["namespace"] = namespace
    projected["doc"] = (projected.get("doc", "") + f" Projected for subscriber {subscriber}.").strip()
    projected["eduhub.key"] = list(schema.key_fields)
    projected["eduhub.subscriber"] = subscriber
    projected["fields"] = fields
    return projected


def path_exists(schema: dict, parts: tuple[str, ...], named: dict[str, Any]) -> bool:
    """Whether a filter path (`address.province_code`, `scores.MATH`) names a field of `schema`."""
    return path_fields(schema, parts, named) is not None


def path_fields(schema: dict, parts: tuple[str, ...], named: dict[str, Any]) -> list[dict] | None:
    """The record fields a filter path goes through (`address.province_code`: address, then province_code;
    `scores.MATH`: scores only, MATH is a map key), or None when the path names no field of `schema`."""
    current: Any = schema
    found: list[dict] = []
    for i, part in enumerate(parts):
        _, current = split_nullable(current)
        if isinstance(current, str) and current in named:
            current = named[current]
        if isinstance(current, dict) and isinstance(current.get("type"), (dict, list)):
            _, current = split_nullable(current["type"])
            if isinstance(current, str) and current in named:
                current = named[current]
        if not isinstance(current, dict):
            return False
        if current.get("type") == "map":
            return found if i == len(parts) - 1 else None  # a map's key is the last part (scores.MATH)
        if current.get("type") != "record":
            return None
        field = next((f for f in current["fields"] if f["name"] == part), None)
        if field is None:
            return None
        found.append(field)
        current = field["type"]
    return found


def type_kind(avro_type: Any) -> str:
    """The logical type, else the type name, of a (non-union) Avro type; "union" for the rest."""
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical:
            return logical
        kind = avro_type.get("type")
        return kind if isinstance(kind, str) else "union"
    return "union"


def copy_value(value: Any) -> Any:
    """A copy of a record value deep enough that the subscriber's record shares no dict or list."""
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    return value

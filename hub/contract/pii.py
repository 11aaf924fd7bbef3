"""Which fields carry personal data: the `pii` and `eduhub.identifier` tags, at every depth of a schema.

A field is tagged when it carries `"pii": true` (the data dictionary's PII) or
`"eduhub.identifier": true` (a person-level key that identifies a person across systems, such as
`application_id`; not PII by the dictionary, but it lets two subscribers join their data).
Subscription policies treat both alike. Tags count on record fields at every depth: records
nested in records, array items, map values and union branches. A field's path is its name and the
names of the record fields it sits in, joined by dots (`guardian.phone`); arrays, maps and unions
add nothing to the path.
"""

from __future__ import annotations

from typing import Any, Iterator

PII = "pii"
IDENTIFIER = "eduhub.identifier"
TAGS = (PII, IDENTIFIER)


def tags_of(field: dict[str, Any]) -> frozenset[str]:
    """The tags a field carries (`pii`, `eduhub.identifier`)."""
    return frozenset(t for t in TAGS if field.get(t) is True)


def is_tagged(field: dict[str, Any]) -> bool:
    """Whether a field is PII or a person-level identifier."""
    return any(field.get(t) is True for t in TAGS)


def named_definitions(schema: Any, found: dict[str, Any] | None = None, namespace: str = "") -> dict[str, Any]:
    """Every named type (record, enum, fixed) of a schema by its short and its full name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            named_definitions(branch, found, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = schema["name"]
            space = schema.get("namespace", namespace)
            full = name if "." in name else (f"{space}.{name}" if space else name)
            found.setdefault(full, schema)
            found.setdefault(name.rpartition(".")[2], schema)
            namespace = full.rpartition(".")[0]
        for f in schema.get("fields", []) if kind in ("record", "error") else []:
            named_definitions(f["type"], found, namespace)
        for part in ("items", "values"):
            if isinstance(schema.get(part), (dict, list)):
                named_definitions(schema[part], found, namespace)
        if isinstance(kind, (dict, list)):
            named_definitions(kind, found, namespace)
    return found


def _fields(avro_type: Any, prefix: str, named: dict[str, Any], stack: tuple[str, ...]
            ) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(avro_type, str):
        definition = named.get(avro_type)
        if definition is not None and avro_type not in stack:  # a recursive type is walked once
            yield from _fields(definition, prefix, named, stack + (avro_type,))
    elif isinstance(avro_type, list):
        for branch in avro_type:
            yield from _fields(branch, prefix, named, stack)
    elif isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind in ("record", "error"):
            stack = stack + (avro_type.get("name", ""),)
            for field in avro_type.get("fields", []):
                path = f"{prefix}.{field['name']}" if prefix else field["name"]
                yield path, field
                yield from _fields(field["type"], path, named, stack)
        elif kind == "array":
            yield from _fields(avro_type.get("items"), prefix, named, stack)
        elif kind == "map":
            yield from _fields(avro_type.get("values"), prefix, named, stack)
        elif isinstance(kind, (dict, list)):
            yield from _fields(kind, prefix, named, stack)


def all_fields(schema: dict[str, Any], named: dict[str, Any] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, field) of every record field of a schema, at every depth, in schema order."""
    yield from _fields(schema, "", named if named is not None else named_definitions(schema), ())


def tagged_fields(schema: dict[str, Any], named: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every tagged field of a schema by path (the first one where two union branches share a path)."""
    found: dict[str, dict[str, Any]] = {}
    for path, field in all_fields(schema, named):
        if is_tagged(field):
            found.setdefault(path, field)
    return found


def field_tags(schema: dict[str, Any]) -> dict[str, frozenset[str]]:
    """The tags of every field path of a schema (tagged or not), unions of branches sharing a path merged."""
    found: dict[str, frozenset[str]] = {}
    for path, field in all_fields(schema):
        found[path] = found.get(path, frozenset()) | tags_of(field)
    return found


def contains_tagged(avro_type: Any, named: dict[str, Any]) -> bool:
    """Whether a type holds a tagged field somewhere inside (records, arrays, maps, unions, references)."""
    return any(is_tagged(field) for _, field in _fields(avro_type, "", named, ()))

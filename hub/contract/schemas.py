"""The schema catalogue: entity schemas from `schemas/`, the Avro serde (Confluent wire format), JSON helpers."""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro

from hub.contract.coerce import Converter, compile_schema
from hub.contract.envelope import Problem
from hub.contract.topics import canonical_topic

# The repository's schemas/ folder; an installed hub (the container image) sets EDUHUB_SCHEMA_DIR.
SCHEMA_DIR = Path(os.environ.get("EDUHUB_SCHEMA_DIR", Path(__file__).resolve().parents[2] / "schemas"))
MAGIC = 0
_HEADER = struct.Struct(">bI")


def _json_default(value: Any) -> Any:
    """The JSON form of an Avro logical value: dates ISO, timestamps RFC 3339 UTC, decimals numbers."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and value.as_tuple().exponent >= 0 else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """Canonical Avro data as one line of JSON (the C encoder walks it; `_json_default` does the leaves)."""
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def to_json(value: Any) -> Any:
    """A canonical Avro datum as plain JSON values (for callers that need objects, not text)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, (datetime, date, Decimal)):
        return _json_default(value)
    return value


@dataclass
class EntitySchema:
    """One entity of the data contract: its Avro value schema, key, topic and subject."""

    entity: str
    schema: dict[str, Any]
    path: Path
    key_fields: tuple[str, ...]
    parsed: Any = field(repr=False)
    convert: Converter = field(repr=False)

    @property
    def topic(self) -> str:
        return canonical_topic(self.entity)

    @property
    def subject(self) -> str:
        return f"{self.topic}-value"

    @property
    def canonical_text(self) -> str:
        """The schema as registered: compact JSON of the file, custom attributes (pii, doc) kept."""
        return json.dumps(self.schema, ensure_ascii=False, separators=(",", ":"))

    def to_record(self, data: Any) -> tuple[dict[str, Any] | None, list[Problem]]:
        """Coerce an envelope's `data` to the canonical Avro datum, or say precisely why not."""
        problems: list[Problem] = []
        record = self.convert(data, "data", problems)
        return (None, problems) if problems else (record, [])

    def key_of(self, record: dict[str, Any]) -> str:
        """The entity key built from a canonical record (fields joined by '|')."""
        return "|".join(str(record[name]) for name in self.key_fields)

    def encode(self, schema_id: int, record: dict[str, Any]) -> bytes:
        return encode_wire(schema_id, self.parsed, record)


def load_entity(path: Path, root: Path) -> EntitySchema:
    schema = json.loads(path.read_text(encoding="utf-8"))
    relative = path.relative_to(root).with_suffix("")
    entity = ".".join(relative.parts)
    key_fields = tuple(schema.get("eduhub.key") or ())
    field_names = {f["name"] for f in schema.get("fields", [])}
    if not key_fields or not set(key_fields) <= field_names:
        raise ValueError(f"{path}: 'eduhub.key' must list the key's fields, all of them fields of the record")
    parsed = fastavro.parse_schema(schema)
    return EntitySchema(entity, schema, path, key_fields, parsed, compile_schema(schema))


@dataclass
class Catalogue:
    """Every entity schema under `schemas/<domain>/<entity>.avsc`, by entity name."""

    entities: dict[str, EntitySchema]

    @classmethod
    def load(cls, root: Path = SCHEMA_DIR) -> "Catalogue":
        entities = {}
        for path in sorted(root.glob("*/*.avsc")):
            loaded = load_entity(path, root)
            entities[loaded.entity] = loaded
        if not entities:
            raise ValueError(f"no schemas found under {root}")
        return cls(entities)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.entities)

    def __getitem__(self, entity: str) -> EntitySchema:
        return self.entities[entity]


def encode_wire(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    """Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body."""
    buffer = io.BytesIO()
    buffer.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(buffer, parsed_schema, record)
    return buffer.getvalue()


def wire_header(schema_id: int) -> bytes:
    """The 5 bytes that precede an Avro body in the Confluent wire format."""
    return _HEADER.pack(MAGIC, schema_id)


def split_wire(value: bytes) -> tuple[int, bytes]:
    """Schema id and Avro body of a Confluent wire-format value."""
    if len(value) < 5 or value[0] != MAGIC:
        raise ValueError("not Confluent wire format (magic byte 0 + 4-byte schema id)")
    return _HEADER.unpack_from(value)[1], value[5:]


def decode_body(parsed_schema: Any, body: bytes, reader_schema: Any = None) -> Any:
    """The datum of an Avro body (resolved to `reader_schema` when given); ValueError when bytes are left
    over: the body is not one record of that schema (the route stage passes bodies on as they are)."""
    buffer = io.BytesIO(body)
    datum = fastavro.schemaless_reader(buffer, parsed_schema, reader_schema)
    if buffer.tell() != len(body):
        raise ValueError(f"{len(body) - buffer.tell()} bytes left after the record")
    return datum

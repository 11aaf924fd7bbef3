"""The poison-record matrices as data: how to build each hostile Kafka record, and the rule the hub must name.

`INGEST_POISON` are written straight to `ingest.<source>` and must each land once in `hub.dlq.<source>` with
header `eduhub.errors.rule` = the case's rule; `INGEST_VALID_ODDITIES` look hostile but are valid and must
reach their canonical topic. `ROUTE_POISON` are written straight to `edu.exam.registration` and must each
land once in `hub.dlq.route`. tests/faults/test_poison.py runs them against a real broker, registry and worker.
"""

from __future__ import annotations

import copy
import json
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.kafka_helpers import registration_envelope

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "entities.jsonl"
LITERAL = "@@fault-literal@@"  # a JSON string replaced by raw JSON text (NaN, 1e309, "\ud800", ...)
VIETNAM = timezone(timedelta(hours=7))


@dataclass(frozen=True)
class Raw:
    """One Kafka record as it is written: key and value bytes (None = null) and headers."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """A hostile (or odd but valid) record: `rules` are the rule ids accepted in `eduhub.errors.rule`
    (one, except where the contract allows either of two); empty for a valid record."""

    name: str
    build: Callable[[str], Raw]
    rules: tuple[str, ...] = ()
    note: str = ""


def dumps_with_literal(document: dict[str, Any], literal: str) -> bytes:
    """The document as JSON text with the string LITERAL replaced by `literal`, raw JSON text."""
    text = json.dumps(document, ensure_ascii=False)
    assert text.count(json.dumps(LITERAL)) == 1, "exactly one LITERAL placeholder"
    return text.replace(json.dumps(LITERAL), literal).encode("utf-8")


def _plain(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


def _keyed(envelope: dict[str, Any], value: bytes | None = None) -> Raw:
    return Raw(envelope["key"].encode(), _plain(envelope) if value is None else value)


# -- builders ---------------------------------------------------------------------------------------

def data_literal(name: str, literal: str, **data: Any) -> Callable[[str], Raw]:
    """An exam.registration whose data field `name` is the raw JSON text `literal`."""

    def build(source: str) -> Raw:
        envelope = registration_envelope(source, data={**data, name: LITERAL})
        return _keyed(envelope, dumps_with_literal(envelope, literal))

    return build


def data_value(name: str, value: Any, **data: Any) -> Callable[[str], Raw]:
    def build(source: str) -> Raw:
        return _keyed(registration_envelope(source, data={**data, name: value}))

    return build


def score_literal(literal: str) -> Callable[[str], Raw]:
    """A school.score (example of the contract) whose decimal `score` is the raw JSON text `literal`."""

    def build(source: str) -> Raw:
        base = next(json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["entity"] == "school.score")
        envelope = copy.deepcopy(base)
        envelope.update(source=source, event_id=str(uuid.uuid4()),
                        occurred_at=datetime.now(VIETNAM).replace(microsecond=0).isoformat())
        envelope["data"]["score"] = LITERAL
        return _keyed(envelope, dumps_with_literal(envelope, literal))

    return build


def key_literal(literal_tail: str, kafka_tail: bytes, *, delete: bool = False) -> Callable[[str], Raw]:
    """The envelope key is the registration id followed by the raw JSON string text `literal_tail` (an
    escape); the Kafka key is the registration id followed by `kafka_tail`, the nearest bytes a careless
    producer would send. With `delete`, op d and no data (a tombstone request)."""

    def build(source: str) -> Raw:
        envelope = registration_envelope(source)
        registration_id = envelope["key"]
        envelope["key"] = LITERAL
        if delete:
            envelope.update(op="d")
            envelope.pop("data")
        value = dumps_with_literal(envelope, f'"{registration_id}{literal_tail}"')
        return Raw(registration_id.encode() + kafka_tail, value)

    return build


def trace_id_literal(literal: str) -> Callable[[str], Raw]:
    def build(source: str) -> Raw:
        envelope = registration_envelope(source, trace_id=LITERAL)
        return _keyed(envelope, dumps_with_literal(envelope, literal))

    return build


def invalid_utf8_value(source: str) -> Raw:
    envelope = registration_envelope(source, data={"full_name": "@@bytes@@"})
    value = _plain(envelope).replace(b"@@bytes@@", b"Nguy\xff\xfe\xc3n")  # 0xff never occurs in UTF-8
    return _keyed(envelope, value)


def deep_nesting(depth: int) -> Callable[[str], Raw]:
    def build(source: str) -> Raw:
        envelope = registration_envelope(source, data={"full_name": LITERAL})
        return _keyed(envelope, dumps_with_literal(envelope, "[" * depth + "]" * depth))

    return build


def long_key(length: int) -> Callable[[str], Raw]:
    def build(source: str) -> Raw:
        envelope = registration_envelope(source)
        envelope["key"] = envelope["key"] + "9" * (length - len(envelope["key"]))
        return _keyed(envelope)

    return build


def envelope_field(**fields: Any) -> Callable[[str], Raw]:
    def build(source: str) -> Raw:
        return _keyed(registration_envelope(source, **fields))

    return build


def null_kafka_key(source: str) -> Raw:
    return Raw(None, _plain(registration_envelope(source)))


def other_kafka_key(source: str) -> Raw:
    envelope = registration_envelope(source)
    return Raw(b"2026" + b"%08d" % (uuid.uuid4().int % 10**8), _plain(envelope))


def null_value(source: str) -> Raw:
    return Raw(registration_envelope(source)["key"].encode(), None)


def not_json(source: str) -> Raw:
    return Raw(registration_envelope(source)["key"].encode(), b"registration_id=202600000001;exam_year=2026")


def invalid_utf8_header(source: str) -> Raw:
    envelope = registration_envelope(source)
    return Raw(envelope["key"].encode(), _plain(envelope), [("x-upstream-note", b"\xff\xfe\xc3(\x00")])


CERTIFICATE = {"language_exemption": True}
BIG = 600_000  # characters: a 600 kB string (under the broker's 1 MB record limit)

INGEST_POISON: list[Case] = [
    # Avro int and long ranges (the contract has no plain long: its longs are timestamps, strings in JSON)
    Case("int 2**31 in exam_year", data_value("exam_year", 2**31), ("schema.int_range",)),
    Case("int 10**20 in exam_year", data_value("exam_year", 10**20), ("schema.int_range",)),
    Case("long 2**63 in exam_year (no plain long field)", data_value("exam_year", 2**63), ("schema.int_range",)),
    # numbers that are not finite, written literally in the JSON text
    Case("1e309 in school.score score", score_literal("1e309"), ("schema.not_finite",)),
    Case("NaN in school.score score", score_literal("NaN"), ("schema.not_finite",)),
    Case("Infinity in school.score score", score_literal("Infinity"), ("schema.not_finite",)),
    Case("-Infinity in school.score score", score_literal("-Infinity"), ("schema.not_finite",)),
    Case("NaN in int exam_year", data_literal("exam_year", "NaN"), ("schema.not_finite",)),
    # lone surrogates as JSON escapes
    Case("lone surrogate in data.full_name", data_literal("full_name", '"Nguy\\ud800n"'),
         ("schema.invalid_unicode",)),
    Case("lone surrogate in envelope key", key_literal("\\ud800", b"\xed\xa0\x80"), ("envelope.invalid_unicode",)),
    Case("lone surrogate in trace_id", trace_id_literal('"trace-\\udfff"'), ("envelope.invalid_unicode",)),
    Case("lone surrogate in a delete's key", key_literal("\\ud800", b"\xed\xa0\x80", delete=True),
         ("envelope.invalid_unicode",)),
    # bytes that are not UTF-8
    Case("invalid UTF-8 bytes in the value", invalid_utf8_value, ("envelope.encoding",)),
    # size and depth
    Case("JSON nested 50,000 deep", deep_nesting(50_000), ("envelope.too_deep",)),
    Case("600 kB full_name", data_value("full_name", "A" * BIG), ("schema.string_too_long", "person_name.length")),
    Case("600 kB exemption_certificate.kind",
         data_value("exemption_certificate", {"kind": "I" * BIG, "expires_on": "2027-01-01"}, **CERTIFICATE),
         ("schema.string_too_long",)),
    Case("2,000-character key", long_key(2_000), ("envelope.too_long",)),
    # envelope vocabulary
    Case("unknown entity", envelope_field(entity="exam.nonexistent"), ("envelope.entity_unknown",)),
    Case("unknown op", envelope_field(op="x"), ("envelope.op_invalid",)),
    # control characters
    *[Case(f"control char U+{c:04X} in data.full_name", data_literal("full_name", f'"Nguy\\u{c:04x}n"'),
           ("schema.control_char",)) for c in (0x00, 0x07, 0x1B)],
    *[Case(f"control char U+{c:04X} in the key", key_literal(f"\\u{c:04x}", bytes([c])),
           ("envelope.control_char",)) for c in (0x00, 0x07, 0x1B)],
    # the Kafka record itself
    Case("null Kafka key", null_kafka_key, ("envelope.kafka_key_missing",)),
    Case("Kafka key differs from the envelope key", other_kafka_key, ("envelope.kafka_key_mismatch",)),
    Case("null value", null_value, ("envelope.empty",)),
    Case("not JSON", not_json, ("envelope.not_json",)),
]

INGEST_VALID_ODDITIES: list[Case] = [
    Case("header value that is invalid UTF-8", invalid_utf8_header,
         note="headers of ingest records are only carried to dead letters: the record is valid"),
]


# -- the canonical-topic matrix (route stage) ------------------------------------------------------

@dataclass(frozen=True)
class RouteContext:
    """What a route case needs: the source named in headers and a valid wire-format value."""

    source: str
    schema_id: int
    wire: Callable[[], tuple[str, bytes, dict[str, Any]]]  # a fresh valid (key, wire value, record)
    unknown_schema_id: int = 2_000_000_000


def canonical_headers(source: str, op: str = "c") -> list[tuple[str, bytes]]:
    now = datetime.now(VIETNAM).replace(microsecond=0).isoformat()
    return [("eduhub.event_id", str(uuid.uuid4()).encode()), ("eduhub.source", source.encode()),
            ("eduhub.op", op.encode()), ("eduhub.occurred_at", now.encode())]


@dataclass(frozen=True)
class RouteCase:
    name: str
    build: Callable[[RouteContext], Raw]
    rules: tuple[str, ...]


def _not_wire(ctx: RouteContext) -> Raw:
    key, _, _ = ctx.wire()
    return Raw(key.encode(), b'{"registration_id": "' + key.encode() + b'"}', canonical_headers(ctx.source))


def _unknown_schema(ctx: RouteContext) -> Raw:
    key, value, _ = ctx.wire()
    return Raw(key.encode(), struct.pack(">bI", 0, ctx.unknown_schema_id) + value[5:], canonical_headers(ctx.source))


def _truncated(ctx: RouteContext) -> Raw:
    key, value, _ = ctx.wire()
    return Raw(key.encode(), value[:5 + 12], canonical_headers(ctx.source))  # the id and 12 bytes of the body


def _null_key(ctx: RouteContext) -> Raw:
    _, value, _ = ctx.wire()
    return Raw(None, value, canonical_headers(ctx.source))


def _invalid_key(ctx: RouteContext) -> Raw:
    key, value, _ = ctx.wire()
    return Raw(key.encode() + b"\xff\xfe", value, canonical_headers(ctx.source))


ROUTE_POISON: list[RouteCase] = [
    RouteCase("value not in wire format", _not_wire, ("record.not_wire_format",)),
    RouteCase("unknown schema id", _unknown_schema, ("record.unknown_schema",)),
    RouteCase("truncated Avro body", _truncated, ("record.avro_decode",)),
    RouteCase("null key", _null_key, ("record.null_key",)),
    RouteCase("key that is invalid UTF-8", _invalid_key, ("record.invalid_key",)),
]

# The optional field the older schema version lacks (it has a default in the current schema).
OLD_SCHEMA_DROPS = "priority_group"


# -- Kafka and process helpers the fault tests of this folder share --------------------------------

def produce(bootstrap: str, topic: str, records: list[Raw]) -> list[tuple[int, int]]:
    """Write the records in order (the idempotent producer keeps each partition's order) and wait for every
    acknowledgement; returns each one's (partition, offset), which dead letters' `eduhub.errors.*` headers name."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def go() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                    max_request_size=2_000_000)
        await producer.start()
        try:
            sent = [await producer.send(topic, raw.value, key=raw.key, headers=raw.headers or None)
                    for raw in records]
            return [(meta.partition, meta.offset) for meta in await asyncio.gather(*sent)]
        finally:
            await producer.stop()

    return asyncio.run(go())


def read_all(bootstrap: str, topic: str) -> list:
    """Every committed record of the topic now; [] while it does not exist."""
    from tests.kafka_helpers import read_to_end

    try:
        return read_to_end(bootstrap, topic)
    except LookupError:
        return []


def text_header(record: Any, name: str) -> str | None:
    """A header as text; never fails on bytes that are not UTF-8 (hostile records carry some)."""
    for key, value in record.headers or ():
        if key == name:
            return None if value is None else value.decode("utf-8", "backslashreplace")
    return None


def log_excerpt(path: Path, tail: int = 30) -> str:
    """The worker's tracebacks and errors, then the end of its log (for failure messages)."""
    if not path.exists():
        return "(no log)"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    marked = [i for i, line in enumerate(lines)
              if "Traceback" in line or " ERROR" in line or "CRITICAL" in line or "Error:" in line]
    shown: list[str] = []
    for i in marked[:6]:
        shown.extend(lines[i:i + 14])
        shown.append("…")
    return "\n".join([*shown[-120:], "--- last lines ---", *lines[-tail:]])[-8000:]

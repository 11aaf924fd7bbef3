"""The ingest envelope (data dictionary §1): parsing, envelope-level checks, and the Problem type."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

FIELDS = ("event_id", "source", "entity", "op", "key", "occurred_at", "data", "trace_id")
_FIELD_SET = frozenset(FIELDS)
REQUIRED = ("event_id", "source", "entity", "op", "key", "occurred_at")
OPS = {"c": "create", "u": "update", "d": "delete", "r": "snapshot read"}
SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
MAX_FUTURE = timedelta(minutes=5)
# A key or trace id longer than this is junk, not an identifier (keys in the contract are < 100 chars).
MAX_ENVELOPE_TEXT = 1024
# JSON escapes that can hide text no UTF-8 writer accepts (lone surrogates \ud800-\udfff) or control
# characters (\u0000-\u001f, \u007f; raw ones are not valid JSON). Looked for in the raw bytes first,
# so the walk over the whole document runs only for the rare record that has one.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|00[01][0-9a-fA-F]|007[fF])|\x7f")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, newline, CR are whitespace, allowed
# The canonical 8-4-4-4-12 text form of a UUID (a regex is cheaper than uuid.UUID per event).
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# Headers the hub puts on every canonical and subscriber record, so consumers can dedupe
# (event_id) and trace (trace_id) without decoding the value.
HEADER_EVENT_ID = "eduhub.event_id"
HEADER_SOURCE = "eduhub.source"
HEADER_OP = "eduhub.op"
HEADER_OCCURRED_AT = "eduhub.occurred_at"
HEADER_TRACE_ID = "eduhub.trace_id"


@dataclass(frozen=True, slots=True)
class Problem:
    """One machine-readable reason an event is invalid: which field, which rule, and why."""

    field: str
    rule: str
    message: str

    @classmethod
    def at(cls, path: str, rule: str, text: str) -> Problem:
        """A problem whose message names its field first: `{path}: {text}` (path written once)."""
        return cls(path, rule, f"{path}: {text}")

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A change event as a connector published it, envelope checks passed."""

    event_id: str
    source: str
    entity: str
    op: str
    key: str
    occurred_at: datetime
    data: dict[str, Any] | None
    trace_id: str | None
    occurred_at_text: str  # as sent (RFC 3339): carried in a header without re-formatting

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (HEADER_EVENT_ID, self.event_id.encode()),
            (HEADER_SOURCE, self.source.encode()),
            (HEADER_OP, self.op.encode()),
            (HEADER_OCCURRED_AT, self.occurred_at_text.encode()),
        ]
        if self.trace_id is not None:
            headers.append((HEADER_TRACE_ID, self.trace_id.encode()))
        return headers


def header_value(headers: Any, name: str) -> str | None:
    """The text of a Kafka record header (None when absent), as the hub's stages and tools read them."""
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp with offset as an aware datetime, or None if it is not one."""
    if not isinstance(value, str) or not RFC3339.match(value):
        return None
    try:
        return datetime.fromisoformat(value.upper() if value.endswith("z") else value)
    except ValueError:
        return None


# read_json's check for a run of 19 digits: every digit becomes "0", every other byte a space, then one
# substring search (a tenth of the time a regular expression takes on an envelope).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 19


def read_json(raw: bytes) -> tuple[Any, Problem | None]:
    """Decode one UTF-8 JSON document exactly as `json.loads` does; a failure is a Problem, never an exception.

    orjson reads a document about four times faster (the largest single cost of validation). It gives
    the same values for every document it accepts, except integers beyond 64 bits, which it turns into
    floats: a run of 19 digits or more sends the document to the standard library, as does everything
    orjson refuses (NaN, 1e400, lone surrogates, deep nesting, bad UTF-8), whose problem the standard
    library words exactly."""
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw), None
        except orjson.JSONDecodeError:
            pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Problem("", "envelope.encoding", f"not UTF-8: byte {exc.start} cannot be decoded")
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, Problem("", "envelope.not_json", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return None, Problem("", "envelope.too_deep", "JSON nested too deeply to read (arrays or objects "
                                                      "inside each other about 1,000 levels or more)")
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return None, Problem("", "envelope.not_json", f"not JSON the hub can read: {exc}")


def text_problems(raw: bytes, doc: Any) -> list[Problem]:
    """Lone surrogates and control characters in any string or object key of the document.

    Such text cannot be written as UTF-8 (Kafka headers, Avro strings, Java readers) or is junk no
    system means to send. Inside `data` they are schema problems, elsewhere envelope problems.
    """
    if not _SUSPECT_ESCAPE.search(raw):
        return []
    problems: list[Problem] = []
    stack: list[tuple[str, Any]] = [("", doc)]  # iterative: the document may be nested 1,000 deep
    while stack and len(problems) < 20:
        path, value = stack.pop()
        if isinstance(value, dict):
            for name, item in value.items():
                child = f"{path}.{name}" if path else name
                _check_text(name, child, problems)
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path, problems)
    return problems


def _check_text(value: str, path: str, problems: list[Problem]) -> None:
    kind = "schema" if path == "data" or path.startswith(("data.", "data[")) else "envelope"
    shown = path.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        problems.append(Problem(shown, f"{kind}.invalid_unicode",
                                f"{shown or 'the document'}: lone surrogate U+{ord(value[exc.start]):04X} at "
                                f"character {exc.start} is not Unicode text (cannot be written as UTF-8)"))
        return
    found = _CONTROL.search(value)
    if found:
        problems.append(Problem(shown, f"{kind}.control_char",
                                f"{shown or 'the document'}: control character U+{ord(found.group()):04X} at "
                                f"character {found.start()}"))


def check_envelope(
    doc: Any,
    *,
    entities: set[str] | frozenset[str],
    sources: set[str] | frozenset[str] | None = None,
    topic_source: str | None = None,
    now: datetime | None = None,
) -> tuple[Envelope | None, list[Problem]]:
    """Check the envelope fields of a decoded JSON document (not the entity's data).

    `sources` is the set of registered source ids (None: any well-formed id); `topic_source` is
    the source the ingest topic belongs to, which the envelope must name.
    """
    if not isinstance(doc, dict):
        return None, [Problem("", "envelope.not_object", f"expected a JSON object, got {type(doc).__name__}")]
    problems: list[Problem] = []
    if not _FIELD_SET.issuperset(doc):
        for name in doc:
            if name not in _FIELD_SET:
                problems.append(Problem(name, "envelope.unknown_field",
                                        f"unknown top-level field {name!r}; allowed: {', '.join(FIELDS)}"))
    for name in REQUIRED:
        if name not in doc or doc[name] is None:
            problems.append(Problem(name, "envelope.missing_field", f"{name} is required"))
        elif not isinstance(doc[name], str):
            problems.append(Problem(name, "envelope.type", f"{name} must be a string, got {type(doc[name]).__name__}"))
    if problems:
        return None, problems

    event_id = doc["event_id"]
    if not UUID.match(event_id):
        problems.append(Problem("event_id", "envelope.event_id_format", f"event_id {event_id!r} is not a UUID"))

    source = doc["source"]
    if not SOURCE_ID.match(source):
        problems.append(Problem("source", "envelope.source_format", f"source {source!r} must match {SOURCE_ID.pattern}"))
    elif sources is not None and source not in sources:
        problems.append(Problem("source", "envelope.source_unregistered", f"source {source!r} is not registered in hub.yaml"))
    elif topic_source is not None and source != topic_source:
        problems.append(
            Problem("source", "envelope.source_mismatch", f"source {source!r} published on the topic of {topic_source!r}")
        )

    entity = doc["entity"]
    if entity not in entities:
        problems.append(
            Problem("entity", "envelope.entity_unknown", f"entity {entity!r} is not one of: {', '.join(sorted(entities))}")
        )

    op = doc["op"]
    if op not in OPS:
        problems.append(Problem("op", "envelope.op_invalid", f"op {op!r} must be one of c, u, d, r"))

    if doc["key"] == "":
        problems.append(Problem("key", "envelope.missing_field", "key must not be empty"))
    for name in ("key", "trace_id"):
        if isinstance(doc.get(name), str) and len(doc[name]) > MAX_ENVELOPE_TEXT:
            problems.append(Problem(name, "envelope.too_long",
                                    f"{name} has {len(doc[name])} characters; at most {MAX_ENVELOPE_TEXT}"))

    occurred_at = parse_timestamp(doc["occurred_at"])
    if occurred_at is None:
        problems.append(
            Problem(
                "occurred_at",
                "envelope.occurred_at_format",
                f"occurred_at {doc['occurred_at']!r} is not RFC 3339 with an offset, e.g. 2026-06-01T08:00:00+07:00",
            )
        )
    else:
        now = now or datetime.now(timezone.utc)
        if occurred_at - now > MAX_FUTURE:
            problems.append(
                Problem("occurred_at", "envelope.occurred_at_future", "occurred_at is more than 5 minutes in the future")
            )

    data = doc.get("data")
    trace_id = doc.get("trace_id")
    if trace_id is not None and not isinstance(trace_id, str):
        problems.append(Problem("trace_id", "envelope.type", "trace_id must be a string"))
    if op in ("c", "u", "r"):
        if data is None:
            problems.append(Problem("data", "envelope.data_required", f"data is required when op is {op!r}"))
        elif not isinstance(data, dict):
            problems.append(Problem("data", "envelope.type", f"data must be a JSON object, got {type(data).__name__}"))
    elif op == "d" and data is not None:
        problems.append(Problem("data", "envelope.data_forbidden", "data must be null or absent when op is 'd'"))

    if problems:
        return None, problems
    return Envelope(event_id, source, entity, op, doc["key"], occurred_at, data, trace_id, doc["occurred_at"]), []


def event_id_of(doc: Any) -> str | None:
    """The event_id of a document, if it has a string one (for error reports of invalid events)."""
    if isinstance(doc, dict) and isinstance(doc.get("event_id"), str):
        return doc["event_id"]
    return None

"""Subscription policy: which entities, rows and fields a subscriber may see, and how PII is masked.

A subscriber (data dictionary §4) is declared by a `SubscriptionConfig`; `SubscriptionPolicy`
turns a canonical record (an Avro datum of `edu.<domain>.<entity>`) into the record that
subscriber may receive on `sub.<id>.<entity>`, with its own Avro schema (`projected_schema`).

Order of work in `SubscriptionPolicy.apply`:

1. entity not subscribed → None;
2. the row filter runs on the FULL canonical record, before projection and masking → None
   when it rejects the row. A filter naming a field that the entity lacks rejects every row
   of that entity (with `entities: ["*"]`, `address.province_code == "31"` delivers students
   only). A field that exists in NO subscribed entity is a configuration error;
3. projection (`fields`): the listed top-level fields, plus the entity's key fields always;
4. PII policy on every field with `"pii": true`: `pii[field]`, else `pii_default` (drop).

Filter language (compiled once by a small recursive-descent parser; nothing is ever eval'd):

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [("==" | "!=" | "<" | "<=" | ">" | ">=") operand
                          | "in" list | "not" "in" list]
    operand    := "(" expr ")" | path | string | number | "true" | "false" | "null"
    list       := "[" [literal ("," literal)*] "]"

  Paths are identifiers joined by dots (`address.province_code`, `scores.MATH` into a map);
  identifiers start with a letter, so `__import__(...)`, `x.__class__` or `"a".upper()` are
  syntax errors. `not` binds tighter than `and`/`or` and applies to the whole comparison
  after it: `not grade == 10` is `not (grade == 10)` (negating a bare operand and then
  comparing it is never what is meant). A bare operand is true only when its value is the
  boolean true (`passed and not language_exemption`).
  Semantics: a missing field or None is null: `x == null` is true, `x != null` false, and any
  ordering comparison with null is false. Numbers (int, Decimal literals such as `8.5`)
  compare numerically with Avro decimals; booleans compare only with booleans. A string
  compared with a date field is read as an ISO date (`date_of_birth < "2010-01-01"`), with
  a timestamp field as RFC 3339. Values of types that cannot be compared (a string with a
  number, a non-date string with a date) are unequal and never ordered.

PII policies (`keep`, `drop`, `mask`, `pseudonymise`) — choices made here:

- keep: unchanged (the field keeps `"pii": true`).
- drop: the field leaves the projected schema and record.
- mask, by the field's type:
  * person names (`"eduhub.text": "person_name"`): the first letter of each word and a dot,
    "Nguyễn Thị Thu Hà" → "N. T. T. H.";
  * other strings: the first 4 and last 3 characters with stars between, at least 3 stars
    ("0912345678" → "0912***678", "+84912345678" → "+849*****678"). A string shorter than 10
    characters keeps only its first and last character (fewer than 5: stars only), so that
    a short value never shows more than it hides;
  * dates (`date_of_birth`): the year only; the projected field becomes an Avro `int`
    holding the year (doc says "Year only (masked)");
  * records (`address`): `province_code` kept, every other field of the record becomes null;
    in the projected schema those fields become nullable (`["null", T]`, default null);
  * any other type (numbers, enums, arrays, timestamps): mask is refused at configuration
    time (`SubscriptionError`): choose drop or pseudonymise.
- pseudonymise: `key = HMAC-SHA256(master_key, subscriber id)`, value = first 32 hex digits of
  `HMAC-SHA256(key, canonical text)`; canonical text: strings as they are, dates ISO,
  timestamps RFC 3339 UTC, decimals `str()`, records / arrays / maps compact JSON with sorted
  keys. Stable for one subscriber (the same learner gets the same pseudonym in
  `school.student`, `school.score` and `exam.result`, so the analytics warehouse can join),
  different across subscribers. The projected type is `string` (`["null", "string"]` if the
  field was nullable; null stays null).

  Masked and pseudonymised fields keep `"pii": true` (a pseudonym is still personal data),
  get `"eduhub.pii_policy"` naming the policy, lose `"eduhub.text"`, and their doc ends with
  " (masked)" / " (pseudonymised)".

Key fields: a key field is always projected. When a key field is PII and its policy is drop
or mask, the policy pseudonymises it instead (masking is not unique, dropping leaves no key),
so `key_of(entity, projected_record)` — the subscriber's Kafka key, built from projected
values only — never carries the clear value and stays stable and unique. For a delete
(tombstone), `key_for_delete` maps the canonical key text to the subscriber's key the same way.

Projected schemas keep the record name, move to namespace `vn.edu.sub.<id with - as _>`
(nested named types without their own namespace follow), keep `eduhub.key` and add
`eduhub.subscriber`. A named type defined in a dropped field and used by a kept one is
inlined where it is first used. `master_key` must hold at least 16 bytes.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.core.config import ConfigError, check_id, format_errors
from hub.contract.envelope import parse_timestamp
from hub.contract.schemas import Catalogue, EntitySchema, to_json
from hub.contract.topics import subscriber_topic

PiiPolicy = Literal["keep", "drop", "mask", "pseudonymise"]
ENTITY_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MAX_FILTER_LENGTH = 4000
MAX_DEPTH = 40
_PRIMITIVE_TYPES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class SubscriptionError(ValueError):
    """A subscription cannot be built as configured; `key` names the offending config key."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


# --------------------------------------------------------------------------- configuration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaDelivery(_Model):
    kind: Literal["kafka"] = Field("kafka", description="deliver to the Kafka topics sub.<id>.<entity>")


class HttpDelivery(_Model):
    kind: Literal["http"] = Field(description="deliver by HTTP POST to the subscriber's endpoint")
    url: str = Field(description="the subscriber's endpoint, http:// or https:// URL")
    secret_env: str = Field(
        description="name of the environment variable holding the signing secret, e.g. EDUHUB_SUB_PARENT_APP_SECRET"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="how long one POST may take, seconds")
    max_attempts: int = Field(
        8, ge=1, le=1000, description="answered failures (non-2xx other than 408/425/429/502/503/504) before the "
        "event goes to the subscriber's DLQ hub.dlq.sub.<id>")
    backoff_initial_s: float = Field(0.5, gt=0, le=3600, description="first retry delay, seconds (doubles each "
                                     "retry, with full jitter)")
    backoff_max_s: float = Field(60.0, gt=0, le=3600, description="longest retry delay, seconds")
    breaker_failures: int = Field(5, ge=1, le=1000, description="consecutive failures that open the circuit breaker")
    breaker_open_s: float = Field(30.0, gt=0, le=3600, description="how long the open breaker stops all sending "
                                  "before one probe request, seconds")
    max_in_flight: int = Field(16, ge=1, le=1000, description="keys delivered in parallel (each key in order)")
    batch_max_records: int = Field(500, ge=1, le=100_000, description="records fetched from Kafka per poll")
    max_buffered: int = Field(10_000, ge=1, le=1_000_000, description="records fetched but not yet delivered; "
                              "fetching pauses above it (memory bound while the subscriber is slow or down)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https:// and name a host")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError("must be an environment variable name, upper-case letters, digits and _")
        return value


Delivery = Annotated[Union[KafkaDelivery, HttpDelivery], Field(discriminator="kind")]


class SubscriptionConfig(_Model):
    id: str = Field(description="subscriber id, ^[a-z0-9][a-z0-9-]{1,39}$; its topics are sub.<id>.<entity>")
    entities: list[str] = Field(
        min_length=1, description='entity names such as school.score, or ["*"] for every entity of the catalogue'
    )
    filter: str | None = Field(
        None, description='optional row filter, e.g. school_code == "HP031" and grade in [10, 11, 12]'
    )
    fields: dict[str, list[str]] | None = Field(
        None, description="optional projection: entity → top-level fields to keep (key fields are always kept)"
    )
    pii: dict[str, PiiPolicy] = Field(
        default_factory=dict, description="PII field name → keep, drop, mask or pseudonymise"
    )
    pii_default: PiiPolicy = Field("drop", description="policy of PII fields not listed under pii: keep, drop, "
                                                       "mask or pseudonymise")
    delivery: Delivery = Field(
        default_factory=KafkaDelivery,
        description='{"kind": "kafka"} or {"kind": "http", "url": ..., "secret_env": ...}',
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value)

    @field_validator("entities")
    @classmethod
    def _entities(cls, value: list[str]) -> list[str]:
        if "*" in value and value != ["*"]:
            raise ValueError('"*" stands for every entity and must be the only item')
        for name in value:
            if name != "*" and not ENTITY_NAME.match(name):
                raise ValueError(f"{name!r} is not an entity name like school.student")
        if len(set(value)) != len(value):
            raise ValueError("an entity is listed twice")
        return value

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is not None:
            compile_filter(value)  # a SubscriptionError is a ValueError: pydantic reports it under `filter`
        return value


# --------------------------------------------------------------------------- filter language

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?![A-Za-z_\d.]))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<path>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[()\[\],])
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


class _Tok:
    __slots__ = ("kind", "text", "pos", "value")

    def __init__(self, kind: str, text: str, pos: int, value: Any = None) -> None:
        self.kind, self.text, self.pos, self.value = kind, text, pos, value

    def describe(self) -> str:
        return "the end of the filter" if self.kind == "end" else repr(self.text)


def _unquote(text: str, pos: int, source: str) -> str:
    out, body, i = [], text[1:-1], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise _syntax(source, pos + i + 1, "a known escape (\\\\, \\', \\\", \\n, \\t)", "\\" + nxt)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _syntax(source: str, pos: int, expected: str, found: str) -> SubscriptionError:
    return SubscriptionError(
        f"filter syntax error at position {pos + 1}: expected {expected}, found {found} (in {source!r})", "filter"
    )


def _tokenize(source: str) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise _syntax(source, pos, "a field, a literal, an operator or a parenthesis",
                          repr(source[pos:pos + 10]))
        kind, text = m.lastgroup or "", m.group()
        if kind == "path" and text in _KEYWORDS:
            kind = "kw"
        if kind == "number":
            tokens.append(_Tok(kind, text, pos, Decimal(text) if "." in text else int(text)))
        elif kind == "string":
            tokens.append(_Tok(kind, text, pos, _unquote(text, pos, source)))
        elif kind == "path" and source[m.end():m.end() + 1] == ".":
            raise _syntax(source, m.end() + 1, "a field name (starting with a letter) after '.'",
                          repr(source[m.end() + 1:m.end() + 11]))
        elif kind != "ws":
            tokens.append(_Tok(kind, text, pos))
        pos = m.end()
    tokens.append(_Tok("end", "", len(source)))
    return tokens


# AST nodes: ("or", [nodes]) ("and", [nodes]) ("not", node) ("cmp", op, left, right)
# ("in", negated, operand, [literal values]) ("bool", operand); operands ("path", parts, pos) ("lit", value)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.i = 0
        self.depth = 0
        self.paths: list[tuple[str, int]] = []

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def _is(self, kind: str, text: str | None = None) -> bool:
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    def _expect(self, kind: str, text: str, expected: str) -> None:
        if not self._is(kind, text):
            raise _syntax(self.source, self.tok.pos, expected, self.tok.describe())
        self.i += 1

    def parse(self) -> Any:
        node = self.expr()
        if self.tok.kind != "end":
            raise _syntax(self.source, self.tok.pos, "'and', 'or', a comparison operator or the end",
                          self.tok.describe())
        return node

    def expr(self) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _syntax(self.source, self.tok.pos, f"at most {MAX_DEPTH} nested levels", "deeper nesting")
        items = [self.and_expr()]
        while self._is("kw", "or"):
            self.i += 1
            items.append(self.and_expr())
        self.depth -= 1
        return items[0] if len(items) == 1 else ("or", items)

    def and_expr(self) -> Any:
        items = [self.not_expr()]
        while self._is("kw", "and"):
            self.i += 1
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else ("and", items)

    def not_expr(self) -> Any:
        if self._is("kw", "not"):
            self.i += 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _syntax(self.source, self.tok.pos, f"at most {MAX_DEPTH} nested levels", "deeper nesting")
            node = ("not", self.not_expr())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Any:
        left = self.operand()
        if self.tok.kind == "op":
            op = self.tok.text
            self.i += 1
            return ("cmp", op, left, self.operand())
        if self._is("kw", "in"):
            self.i += 1
            return ("in", False, left, self.literal_list())
        if self._is("kw", "not") and self.tokens[self.i + 1].kind == "kw" and self.tokens[self.i + 1].text == "in":
            self.i += 2
            return ("in", True, left, self.literal_list())
        if left[0] == "expr":
            return left[1]
        return ("bool", left)

    def operand(self) -> Any:
        tok = self.tok
        if self._is("punct", "("):
            self.i += 1
            inner = self.expr()
            self._expect("punct", ")", "')' to close the '(' at position %d" % (tok.pos + 1))
            return ("expr", inner)
        if tok.kind == "path":
            self.i += 1
            self.paths.append((tok.text, tok.pos))
            return ("path", tuple(tok.text.split(".")), tok.pos)
        return ("lit", self.literal())

    def literal(self, expected: str = "a value (a field, a quoted string, a number, true, false, null or '(')") -> Any:
        tok = self.tok
        if tok.kind in ("number", "string"):
            self.i += 1
            return tok.value
        if tok.kind == "kw" and tok.text in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[tok.text]
        raise _syntax(self.source, tok.pos, expected, tok.describe())

    def literal_list(self) -> list[Any]:
        self._expect("punct", "[", "'[' starting a list of literals")
        values = []
        expected = "a literal (a quoted string, a number, true, false or null)"
        if not self._is("punct", "]"):
            values.append(self.literal(expected))
            while self._is("punct", ","):
                self.i += 1
                values.append(self.literal(expected))
        self._expect("punct", "]", "',' or ']' closing the list")
        return values


@lru_cache(maxsize=4096)
def _as_date(text: str) -> date | None:
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            return None
    return None


@lru_cache(maxsize=4096)
def _as_timestamp(text: str) -> datetime | None:
    return parse_timestamp(text)


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Bring a string to the temporal type of the other side (ISO date or RFC 3339 timestamp)."""
    if isinstance(b, str) and isinstance(a, date):
        return a, (_as_timestamp(b) if isinstance(a, datetime) else _as_date(b))
    if isinstance(a, str) and isinstance(b, date):
        return (_as_timestamp(a) if isinstance(b, datetime) else _as_date(a)), b
    return a, b


def _comparable(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, Decimal, float)) and isinstance(b, (int, Decimal, float)):
        return True
    if isinstance(a, datetime) or isinstance(b, datetime):
        return isinstance(a, datetime) and isinstance(b, datetime)
    return type(a) is type(b)


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = _coerce(a, b)
    return a is not None and b is not None and _comparable(a, b) and a == b


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _getter(parts: tuple[str, ...]) -> Callable[[dict], Any]:
    if len(parts) == 1:
        name = parts[0]
        return lambda record: record.get(name)

    def get(record: dict) -> Any:
        value: Any = record
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


def _compile(node: Any) -> Callable[[dict], Any]:
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return lambda record: value
    if kind == "path":
        return _getter(node[1])
    if kind == "or":
        parts = [_compile(n) for n in node[1]]
        return lambda record: any(p(record) for p in parts)
    if kind == "and":
        parts = [_compile(n) for n in node[1]]
        return lambda record: all(p(record) for p in parts)
    if kind == "not":
        inner = _compile(node[1])
        return lambda record: not inner(record)
    if kind == "bool":
        inner = _compile(node[1])
        return lambda record: inner(record) is True
    if kind == "in":
        negated, operand, values = node[1], _compile(node[2]), node[3]

        def member(record: dict) -> bool:
            value = operand(record)
            return any(_equal(value, v) for v in values) != negated

        return member
    if kind == "cmp":
        op, left, right = node[1], _compile(node[2]), _compile(node[3])
        if op == "==":
            return lambda record: _equal(left(record), right(record))
        if op == "!=":
            return lambda record: not _equal(left(record), right(record))
        order = _ORDER[op]

        def ordered(record: dict) -> bool:
            a, b = left(record), right(record)
            if a is None or b is None:
                return False
            a, b = _coerce(a, b)
            if a is None or b is None or not _comparable(a, b):
                return False
            try:
                return bool(order(a, b))
            except TypeError:
                return False

        return ordered
    raise AssertionError(kind)  # pragma: no cover


class Filter:
    """A compiled row filter: call it with a canonical record; `paths` lists (field path, position)."""

    def __init__(self, source: str, paths: list[tuple[str, int]], function: Callable[[dict], Any]) -> None:
        self.source = source
        self.paths = paths
        self._function = function

    def __call__(self, record: dict[str, Any]) -> bool:
        return bool(self._function(record))

    def __repr__(self) -> str:
        return f"Filter({self.source!r})"


def compile_filter(source: str) -> Filter:
    """Parse and compile a filter expression (module docstring), or raise SubscriptionError."""
    if not isinstance(source, str) or not source.strip():
        raise SubscriptionError("filter is empty: write an expression such as school_code == \"HP031\"", "filter")
    if len(source) > MAX_FILTER_LENGTH:
        raise SubscriptionError(f"filter is longer than {MAX_FILTER_LENGTH} characters", "filter")
    parser = _Parser(source)
    node = parser.parse()
    return Filter(source, parser.paths, _compile(node))


# --------------------------------------------------------------------------- schema helpers


def _nullable(avro_type: Any) -> tuple[bool, Any]:
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


def _inline_refs(avro_type: Any, namespace: str, named: dict[str, Any], defined: set[str]) -> Any:
    """`avro_type` with named-type references to types not yet defined replaced by their definition."""
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
            defined.update({full, avro_type["name"]})
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


def _path_exists(schema: dict, parts: tuple[str, ...], named: dict[str, Any]) -> bool:
    current: Any = schema
    for i, part in enumerate(parts):
        _, current = _nullable(current)
        if isinstance(current, str) and current in named:
            current = named[current]
        if isinstance(current, dict) and isinstance(current.get("type"), (dict, list)):
            _, current = _nullable(current["type"])
            if isinstance(current, str) and current in named:
                current = named[current]
        if not isinstance(current, dict):
            return False
        if current.get("type") == "map":
            return i == len(parts) - 1  # a map's key is the last part (scores.MATH)
        if current.get("type") != "record":
            return False
        field = next((f for f in current["fields"] if f["name"] == part), None)
        if field is None:
            return False
        current = field["type"]
    return True


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical:
            return logical
        kind = avro_type.get("type")
        return kind if isinstance(kind, str) else "union"
    return "union"


def mask_string(value: str) -> str:
    """First 4 and last 3 characters, stars between (at least 3); short strings show less."""
    n = len(value)
    if n >= 10:
        return value[:4] + "*" * (n - 7) + value[-3:]
    if n >= 5:
        return value[0] + "*" * (n - 2) + value[-1]
    return "*" * max(n, 3)


def mask_name(value: str) -> str:
    """The first letter of each word and a dot: "Nguyễn Thị Thu Hà" → "N. T. T. H."."""
    return " ".join(word[0] + "." for word in value.split())


def _canonical_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (datetime, date, Decimal)):
        return str(to_json(value)) if not isinstance(value, Decimal) else str(value)
    return json.dumps(to_json(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------- the policy


class SubscriptionPolicy:
    """One subscriber's view of the canonical topics: entities, row filter, projection and PII masking."""

    def __init__(self, config: SubscriptionConfig, catalogue: Catalogue, master_key: bytes) -> None:
        if not isinstance(master_key, (bytes, bytearray)) or len(master_key) < 16:
            raise SubscriptionError("the master key must hold at least 16 bytes", "master_key")
        self.config = config
        self.id = config.id
        self.catalogue = catalogue
        self._key = hmac.new(bytes(master_key), config.id.encode("utf-8"), hashlib.sha256).digest()
        self.namespace = "vn.edu.sub." + config.id.replace("-", "_")
        if config.entities == ["*"]:
            names = sorted(catalogue.names)
        else:
            unknown = [e for e in config.entities if e not in catalogue.names]
            if unknown:
                raise SubscriptionError(
                    f"unknown entity {unknown[0]!r}: expected one of {', '.join(sorted(catalogue.names))} or \"*\"",
                    "entities")
            names = list(config.entities)
        self.entities: frozenset[str] = frozenset(names)
        self._named = {e: self._named_types(catalogue[e]) for e in names}
        self._check_projection(names)
        self._check_pii(names)
        self.filter = compile_filter(config.filter) if config.filter is not None else None
        self._filter_applies = self._check_filter(names)
        self._plans: dict[str, list[tuple[str, Callable[[Any], Any] | None]]] = {}
        self._schemas: dict[str, dict[str, Any]] = {}
        self._key_pseudonymised: dict[str, frozenset[str]] = {}
        for entity in names:
            self._build(catalogue[entity])

    # ---- validation

    @staticmethod
    def _named_types(schema: EntitySchema) -> dict[str, Any]:
        found: dict[str, Any] = {}
        _collect_named(schema.schema, "", found)
        return found

    def _check_projection(self, names: list[str]) -> None:
        for entity, fields in (self.config.fields or {}).items():
            if entity not in self.catalogue.names:
                raise SubscriptionError(f"unknown entity {entity!r}: expected a subscribed entity",
                                        f"fields.{entity}")
            if entity not in self.entities:
                raise SubscriptionError(f"{entity!r} is not among the subscribed entities: expected one of "
                                        f"{', '.join(sorted(self.entities))}", f"fields.{entity}")
            available = [f["name"] for f in self.catalogue[entity].schema["fields"]]
            for name in fields:
                if name not in available:
                    raise SubscriptionError(
                        f"{entity} has no field {name!r}: expected one of {', '.join(available)}", f"fields.{entity}")

    def _check_pii(self, names: list[str]) -> None:
        pii_fields = {f["name"] for e in names for f in self.catalogue[e].schema["fields"] if f.get("pii")}
        for name in self.config.pii:
            if name not in pii_fields:
                raise SubscriptionError(
                    f"{name!r} is not a PII field of the subscribed entities: expected one of "
                    f"{', '.join(sorted(pii_fields)) or '(none: these entities carry no PII)'}", f"pii.{name}")

    def _check_filter(self, names: list[str]) -> dict[str, bool]:
        applies = {e: True for e in names}
        if self.filter is None:
            return applies
        for path, pos in self.filter.paths:
            parts = tuple(path.split("."))
            found = False
            for entity in names:
                if _path_exists(self.catalogue[entity].schema, parts, self._named[entity]):
                    found = True
                else:
                    applies[entity] = False
            if not found:
                raise SubscriptionError(
                    f"filter: field {path!r} at position {pos + 1} exists in no subscribed entity "
                    f"({', '.join(names)}): expected a field path such as school_code or address.province_code",
                    "filter")
        return applies

    # ---- plan and projected schema

    def policy_of(self, entity: str, field_name: str) -> str:
        """The effective policy of a field: keep for non-PII, pseudonymise for forced key fields."""
        schema = self.catalogue[entity]
        field = next(f for f in schema.schema["fields"] if f["name"] == field_name)
        if not field.get("pii"):
            return "keep"
        policy = self.config.pii.get(field_name, self.config.pii_default)
        if field_name in schema.key_fields and policy in ("drop", "mask"):
            return "pseudonymise"
        return policy

    def _build(self, schema: EntitySchema) -> None:
        entity = schema.entity
        projection = (self.config.fields or {}).get(entity)
        plan: list[tuple[str, Callable[[Any], Any] | None]] = []
        out_fields: list[dict[str, Any]] = []
        forced = set()
        for field in schema.schema["fields"]:
            name = field["name"]
            is_key = name in schema.key_fields
            if projection is not None and name not in projection and not is_key:
                continue
            policy = self.policy_of(entity, name)
            if policy == "drop":
                continue
            new = copy.deepcopy(field)
            transform: Callable[[Any], Any] | None = None
            if policy == "mask":
                transform = self._mask_field(entity, new)
            elif policy == "pseudonymise":
                if is_key and field.get("pii"):
                    forced.add(name)
                nullable, _ = _nullable(field["type"])
                new["type"] = ["null", "string"] if nullable else "string"
                new.pop("default", None)
                if nullable:
                    new["default"] = None
                transform = self.pseudonymise
            if policy in ("mask", "pseudonymise"):
                new.pop("eduhub.text", None)
                new["eduhub.pii_policy"] = policy
                suffix = " (masked)" if policy == "mask" else " (pseudonymised)"
                new["doc"] = (new.get("doc", "") + suffix).strip()
            plan.append((name, transform))
            out_fields.append(new)
        named = self._named[entity]
        defined: set[str] = set()
        for f in out_fields:
            f["type"] = _inline_refs(f["type"], self.namespace, named, defined)
        projected = {k: copy.deepcopy(v) for k, v in schema.schema.items() if k != "fields"}
        projected["namespace"] = self.namespace
        projected["doc"] = (projected.get("doc", "") + f" Projected for subscriber {self.id}.").strip()
        projected["eduhub.key"] = list(schema.key_fields)
        projected["eduhub.subscriber"] = self.id
        projected["fields"] = out_fields
        self._plans[entity] = plan
        self._schemas[entity] = projected
        self._key_pseudonymised[entity] = frozenset(forced)

    def _mask_field(self, entity: str, field: dict[str, Any]) -> Callable[[Any], Any]:
        nullable, base = _nullable(field["type"])
        named = self._named[entity]
        if isinstance(base, str) and base in named:
            base = named[base]
        kind = _kind(base)
        if kind == "string":
            return mask_name if field.get("eduhub.text") == "person_name" else mask_string
        if kind == "date":
            field["type"] = ["null", "int"] if nullable else "int"
            field.pop("default", None)
            if nullable:
                field["default"] = None
            field["doc"] = (field.get("doc", "") + " Year only").strip()
            return lambda value: value.year
        if kind == "record":
            record = copy.deepcopy(base)
            cleared = []
            for sub in record["fields"]:
                if sub["name"] == "province_code":
                    continue
                cleared.append(sub["name"])
                sub_nullable, _ = _nullable(sub["type"])
                if not sub_nullable:
                    sub["type"] = ["null", sub["type"]]
                sub["default"] = None
            record["doc"] = (record.get("doc", "") + " Only province_code is kept (masked).").strip()
            field["type"] = ["null", record] if nullable else record
            field.pop("default", None)
            if nullable:
                field["default"] = None
            names = frozenset(cleared)
            return lambda value: {k: (None if k in names else v) for k, v in value.items()}
        raise SubscriptionError(
            f"{entity}.{field['name']}: mask is not supported for a field of type {kind}: "
            f"expected drop, keep or pseudonymise", f"pii.{field['name']}")

    # ---- public API

    def pseudonymise(self, value: Any) -> str | None:
        """This subscriber's pseudonym of a value (None stays None)."""
        if value is None:
            return None
        text = _canonical_text(value).encode("utf-8")
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()[:32]

    def projected_schema(self, entity: str) -> dict[str, Any]:
        """The Avro schema of this subscriber's `sub.<id>.<entity>` records (a copy)."""
        if entity not in self._schemas:
            raise SubscriptionError(f"{self.id} does not subscribe to {entity!r}", "entities")
        return copy.deepcopy(self._schemas[entity])

    def apply(self, entity: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """The projected record for this subscriber, or None (not subscribed, or the filter rejects it)."""
        plan = self._plans.get(entity)
        if plan is None:
            return None
        if self.filter is not None and not (self._filter_applies[entity] and self.filter(record)):
            return None
        out: dict[str, Any] = {}
        for name, transform in plan:
            value = record.get(name)
            if value is None:
                out[name] = None
            elif transform is None:
                out[name] = _copy(value)
            else:
                out[name] = transform(value)
        return out

    def key_of(self, entity: str, projected_record: dict[str, Any]) -> str:
        """The subscriber's Kafka key: the entity's key fields of the PROJECTED record joined by '|'."""
        return "|".join(str(projected_record[name]) for name in self.catalogue[entity].key_fields)

    def key_for_delete(self, entity: str, canonical_key: str) -> str:
        """The subscriber's key for a tombstone, from the canonical key text (forced key fields pseudonymised)."""
        key_fields = self.catalogue[entity].key_fields
        parts = canonical_key.split("|", len(key_fields) - 1)
        forced = self._key_pseudonymised.get(entity, frozenset())
        return "|".join(self.pseudonymise(p) if n in forced else p  # type: ignore[misc]
                        for n, p in zip(key_fields, parts))

    def topic(self, entity: str) -> str:
        return subscriber_topic(self.id, entity)

    def __repr__(self) -> str:
        return f"SubscriptionPolicy({self.id!r}, entities={sorted(self.entities)})"


def load_subscriptions(raw: list[dict], catalogue: Catalogue, master_key: bytes) -> list[SubscriptionPolicy]:
    """Validate the `subscriptions` list of hub.yaml; every error is a ConfigError naming its key."""
    if not isinstance(raw, list):
        raise ConfigError("subscriptions: must be a list of subscriber mappings (id, entities, ...)")
    policies: list[SubscriptionPolicy] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"subscriptions.{i}: must be a mapping with id, entities, filter, fields, pii, "
                              "pii_default and delivery")
        try:
            config = SubscriptionConfig.model_validate(item)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, f"subscriptions.{i}", SubscriptionConfig,
                                            prefix=f"subscriptions.{i}.")) from None
        if config.id in seen:
            raise ConfigError(f"subscriptions.{i}.id: subscriber id {config.id!r} is declared twice "
                              f"(also subscriptions.{seen[config.id]}.id) — expected a unique id")
        seen[config.id] = i
        try:
            policies.append(SubscriptionPolicy(config, catalogue, master_key))
        except SubscriptionError as exc:
            where = f"subscriptions.{i}.{exc.key}" if exc.key else f"subscriptions.{i}"
            raise ConfigError(f"{where}: {exc}") from None
    return policies


DEMO_SUBSCRIPTIONS: list[dict[str, Any]] = [
    {   # the Ministry's sector database sync: everything, in clear (it is the system of record)
        "id": "moet-sync",
        "entities": ["*"],
        "pii_default": "keep",
    },
    {   # the exam management system
        "id": "exam-mgmt",
        "entities": ["exam.registration", "exam.result"],
        "pii_default": "keep",
    },
    {   # the admission results portal: names shown as initials, no birth date, applicant pseudonymous
        "id": "admission-results",
        "entities": ["enrollment.application", "enrollment.result"],
        "pii": {"full_name": "mask", "applicant_id": "pseudonymise", "date_of_birth": "drop"},
        "pii_default": "drop",
        "delivery": {"kind": "http", "url": "https://tuyensinh.haiphong.edu.vn/api/hub/events",
                     "secret_env": "EDUHUB_SUB_ADMISSION_RESULTS_SECRET"},
    },
    {   # the Department's analytics warehouse: no direct identifiers
        "id": "analytics",
        "entities": ["*"],
        "pii": {"full_name": "drop", "phone": "drop", "guardian_phone": "drop", "email": "drop",
                "address": "mask", "date_of_birth": "mask"},
        "pii_default": "pseudonymise",
    },
    {   # the parent-notification app: scores and term results, no personal ID
        "id": "parent-app",
        "entities": ["school.score", "school.term_result"],
        "fields": {"school.score": ["school_code", "school_year", "term", "subject", "kind", "seq", "score",
                                    "pass_result", "recorded_at"]},
        "pii": {"student_id": "pseudonymise"},
        "pii_default": "drop",
        "delivery": {"kind": "http", "url": "https://phuhuynh.haiphong.edu.vn/api/hub/events",
                     "secret_env": "EDUHUB_SUB_PARENT_APP_SECRET"},
    },
]

"""Properties of the validate path (hypothesis): whatever bytes arrive, the validator answers `Valid` or
`Invalid` and never raises; every `Valid` can be written (Avro body, key, headers) and reads back as the
same record; every `Invalid` becomes dead-letter headers of bounded size.

Profiles: `eduhub-ci` (chosen when CI=true) is derandomized, so a CI run is reproducible; `eduhub-dev`
explores new examples on every run. Neither saves failing examples (a failure prints the
@reproduce_failure line); the caches hypothesis keeps in .hypothesis/ are git-ignored by hypothesis itself.
"""

from __future__ import annotations

import copy
import io
import json
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from hub.contract import dlq
from hub.contract.schemas import Catalogue, EntitySchema, split_wire
from hub.stages.validate import Invalid, Valid, Validator

# Hypothesis warns when it prints a long input; the inputs here are long on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "entities.jsonl"
SOURCE = "prop-src"
SCHEMA_ID = 1
MAX_DLQ_HEADERS = 64 * 1024  # bytes of all dead-letter headers together (names and values)
INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
BIG = 600_000  # a string of this many characters must never reach a canonical topic nor a DLQ header

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_COMMON = dict(
    deadline=None,  # the first call compiles regexes and loads province data; timing is not the property
    database=None,  # no saved examples: a failure prints its @reproduce_failure blob instead
    print_blob=True,  # a failure prints the @reproduce_failure line
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
settings.register_profile("eduhub-ci", derandomize=True, **_COMMON)
settings.register_profile("eduhub-dev", **_COMMON)
PROFILE = settings.get_profile("eduhub-ci" if IN_CI else "eduhub-dev")


def examples(n: int) -> settings:
    return settings(PROFILE, max_examples=n)


CATALOGUE = Catalogue.load()
VALIDATOR = Validator(CATALOGUE, sources={SOURCE})


def _example_envelopes() -> list[dict[str, Any]]:
    found = []
    for line in EXAMPLES.read_text(encoding="utf-8").splitlines():
        if line.strip():
            envelope = json.loads(line)
            envelope["source"] = SOURCE
            found.append(envelope)
    assert {e["entity"] for e in found} == set(CATALOGUE.names), "examples/entities.jsonl must cover every entity"
    return found


ENVELOPES = _example_envelopes()


# ---------------------------------------------------------------------------------------------
# The oracle: what must hold of any result
# ---------------------------------------------------------------------------------------------

def validate(raw: bytes) -> Valid | Invalid:
    result = VALIDATOR.validate(raw, topic_source=SOURCE)
    assert isinstance(result, (Valid, Invalid)), type(result)
    return result


def _named_types(schema: Any, namespace: str = "", found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type (record, enum, fixed) of an Avro schema by short and full name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, namespace, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            space = schema.get("namespace", namespace)
            found[schema["name"]] = schema
            found[f"{space}.{schema['name']}"] = schema
            namespace = space
        for f in schema.get("fields", ()):
            _named_types(f["type"], namespace, found)
        for key in ("items", "values"):
            if key in schema:
                _named_types(schema[key], namespace, found)
        if isinstance(kind, (dict, list)):
            _named_types(kind, namespace, found)
    return found


def _fits(schema: Any, value: Any, named: dict[str, Any]) -> bool:
    """Whether a Python datum is of the (non-union) Avro type, as fastavro picks a union branch."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical == "decimal":
            return isinstance(value, Decimal)
        if logical == "date":
            return not isinstance(value, datetime) and hasattr(value, "isoformat")
        if logical == "timestamp-millis":
            return isinstance(value, datetime)
        kind = schema["type"]
        if kind == "record":
            return isinstance(value, dict)
        if kind == "map":
            return isinstance(value, dict)
        if kind == "array":
            return isinstance(value, list)
        if kind == "enum":
            return isinstance(value, str) and value in schema["symbols"]
        schema = kind
    return {
        "null": value is None,
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "long": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, float),
        "double": isinstance(value, float),
        "bytes": isinstance(value, bytes),
    }.get(schema, False)


def out_of_range(schema: Any, value: Any, path: str, named: dict[str, Any]) -> list[str]:
    """Paths of `int`s outside 32 bits and `long`s outside 64 bits in a canonical datum.

    fastavro writes any Python int as a zig-zag varint, so an `int` of 2**31 round-trips in Python yet
    breaks every other Avro reader; this is checked against the schema, not by round-tripping.
    """
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        for branch in schema:
            if _fits(branch, value, named):
                return out_of_range(branch, value, path, named)
        return [f"{path}: {type(value).__name__} fits no branch of {schema}"]
    if isinstance(schema, dict):
        if schema.get("logicalType") in ("date", "timestamp-millis", "decimal"):
            return []  # fastavro converts these itself and raises on what does not fit
        kind = schema["type"]
        if kind == "record":
            bad = []
            for f in schema["fields"]:
                bad += out_of_range(f["type"], value.get(f["name"]), f"{path}.{f['name']}", named)
            return bad
        if kind == "array":
            return [b for i, v in enumerate(value or ()) for b in out_of_range(schema["items"], v, f"{path}[{i}]", named)]
        if kind == "map":
            return [b for k, v in (value or {}).items() for b in out_of_range(schema["values"], v, f"{path}.{k}", named)]
        if kind in ("enum", "fixed"):
            return []
        schema = kind
    if schema in ("int", "long") and isinstance(value, int) and not isinstance(value, bool):
        low, high = INT_RANGE if schema == "int" else LONG_RANGE
        if not low <= value <= high:
            return [f"{path}: {schema} {value} outside {low}..{high}"]
    return []


def _as_written(value: Any) -> Any:
    """A canonical datum as Avro keeps it: timestamp-millis drops the microseconds below a millisecond."""
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    return value


def check_valid(result: Valid) -> None:
    envelope = result.envelope
    assert isinstance(result.entity, EntitySchema)
    assert envelope.key.encode("utf-8")  # the Kafka record key
    headers = envelope.headers()
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers), headers
    if result.record is None:
        assert envelope.op == "d", "only a delete has no record (a tombstone)"
        return
    bad = out_of_range(result.entity.schema, result.record, "data", _named_types(result.entity.schema))
    assert bad == [], bad
    value = result.entity.encode(SCHEMA_ID, result.record)
    schema_id, body = split_wire(value)
    assert schema_id == SCHEMA_ID
    decoded = fastavro.schemaless_reader(io.BytesIO(body), result.entity.parsed)
    assert decoded == _as_written(result.record)


def check_invalid(result: Invalid) -> None:
    assert result.problems, "an Invalid without problems"
    for problem in result.problems:
        assert isinstance(problem.rule, str) and problem.rule, problem
        assert isinstance(problem.field, str) and isinstance(problem.message, str), problem
    headers = dlq.dead_letter_headers(result.problems, stage="validate", topic="t", partition=0, offset=0,
                                      event_id=result.event_id)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    size = sum(len(k.encode()) + len(v) for k, v in headers)
    assert size < MAX_DLQ_HEADERS, f"dead-letter headers of {size} bytes (first rule {result.problems[0].rule})"


def check(raw: bytes) -> Valid | Invalid:
    result = validate(raw)
    if isinstance(result, Valid):
        check_valid(result)
    else:
        check_invalid(result)
    return result


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

# Strings a JSON text can carry that are no text: lone and reversed surrogates (only reachable through
# \uXXXX escapes), C0/C1 control characters and NUL, separators JavaScript treats as line ends.
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "a\ud800b", "\udc00\ud800", "\ud83d", "x\udfff"]
CONTROLS = ["\x00", "a\x00b", "\x01", "\x07", "\x08", "\x1b[31m", "\x7f", "\x85", "\x9f", "\u2028", "\u2029",
            "\ufeff", "\ufffe", "\uffff", "\U0010ffff", "\t\n\r"]
surrogate_text = st.sampled_from(SURROGATES) | st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4)
control_text = st.sampled_from(CONTROLS) | st.text(
    alphabet=st.characters(max_codepoint=0x9F, exclude_categories=("L", "N", "P", "S", "Z")), min_size=1,
    max_size=8)
# Long strings are built, not drawn character by character (which would blow hypothesis's buffer).
long_text = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "9", " ", "\x00", "😀", "\ud800"]),
                      st.sampled_from([256, 1_000, 70_000, BIG]))
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)  # includes Cs (surrogates)
hostile_text = st.one_of(surrogate_text, control_text, long_text, any_text, st.text(max_size=20))

# Integers around and far outside Avro's int and long; floats that are integers but too big, and non-finite.
EDGE_INTS = [2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64,
             10**20, -(10**20), 10**400, -(10**400)]
hostile_int = st.sampled_from(EDGE_INTS) | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
EDGE_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 1e300, 2.0**31, 2.0**63, 2.0**64, 1e20,
               -0.0, 0.5, 5e-324]
hostile_float = st.sampled_from(EDGE_FLOATS) | st.floats()


def _short(text: str | bytes, keep: int = 120) -> str:
    """A long value as its head, length and tail: hypothesis prints the inputs of a failing case."""
    if len(text) <= 2 * keep:
        return repr(text)
    return f"{text[:keep]!r} …[{len(text)} in all]… {text[-keep // 2:]!r}"


class Raw:
    """A JSON fragment written as text where a value goes (what json.dumps cannot produce)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({_short(self.text)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints failing inputs with this
        printer.text(repr(self))


class Case:
    """One input of the validator; its repr stays short however large the bytes are."""

    def __init__(self, raw: bytes, about: str = "") -> None:
        self.raw, self.about = raw, about

    def __repr__(self) -> str:
        return f"Case({self.about + ': ' if self.about else ''}{_short(self.raw)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


# Named, so that hypothesis's repr of the strategy is not megabytes long.
RAW_FRAGMENTS = {
    "1e309": "1e309", "-1e309": "-1e309", "1E400": "1E400", "NaN": "NaN", "Infinity": "Infinity",
    "-Infinity": "-Infinity", "-0": "-0", "5000 digits": "1" * 5_000, "-4400 digits": "-" + "9" * 4_400,
    "5000 decimals": "0." + "1" * 5_000, "1e-400": "1e-400", "lone high surrogate": '"\\ud800"',
    "reversed pair": '"\\udc00\\ud800"', "NUL": '"a\\u0000b"', "ESC": '"\\u001b"', "pair": '"\\ud83d\\ude00"',
    "2000 nested arrays": "[" * 2_000 + "]" * 2_000, "50000 nested arrays": "[" * 50_000 + "]" * 50_000,
    "5000 nested objects": '{"a":' * 5_000 + "1" + "}" * 5_000, "50000 [ unclosed": "[" * 50_000, "true": "true",
    "null": "null", "[]": "[]", "{}": "{}",
}
raw_fragment = st.sampled_from(sorted(RAW_FRAGMENTS)).map(lambda name: Raw(RAW_FRAGMENTS[name])) | st.integers(
    min_value=1, max_value=100_000).map(lambda n: Raw("[" * n + "]" * n))
raw_number = st.sampled_from(["1e309", "-1e309", "1E400", "NaN", "Infinity", "-Infinity", "-0", "5000 digits",
                              "-4400 digits", "5000 decimals", "1e-400"]).map(lambda name: Raw(RAW_FRAGMENTS[name]))

json_scalars = st.one_of(st.none(), st.booleans(), hostile_int, hostile_float, hostile_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text | st.text(max_size=8), children,
                                                                       max_size=4),
    max_leaves=12,
)
# A value put where a field of an envelope or of its data goes.
hostile_value = st.one_of(hostile_int, hostile_float, hostile_text, raw_fragment, json_values,
                          st.sampled_from([None, True, False, [], {}, "", " ", [None], {"": None}]))

_SENTINEL = "\x00\x01eduhub-raw-%d\x01\x00"


def dumps(doc: Any, ascii_only: bool) -> bytes:
    """A document as JSON bytes; Raw fragments are spliced in as text. Lone surrogates are escaped when
    `ascii_only`, else written as they are (surrogatepass: bytes that are not UTF-8)."""
    raws: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return _SENTINEL % (len(raws) - 1)
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(doc), ensure_ascii=ascii_only, allow_nan=True)
    for i, fragment in enumerate(raws):
        text = text.replace(json.dumps(_SENTINEL % i, ensure_ascii=ascii_only), fragment, 1)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def json_texts(draw) -> Case:
    """JSON-ish text: nested values written by json.dumps, raw fragments, or both inside an object."""
    kind = draw(st.sampled_from(["value", "fragment", "object"]))
    if kind == "fragment":
        return Case(dumps(draw(raw_fragment), True), kind)
    value = draw(json_values)
    if kind == "object":
        value = {draw(hostile_text | st.sampled_from(list(ENVELOPES[0]))): draw(hostile_value) for _ in range(3)}
    return Case(dumps(value, draw(st.booleans())), kind)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (dict keys and list indexes), leaves and containers."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found.append(prefix + (k,))
            found += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.append(prefix + (i,))
            found += _paths(v, prefix + (i,))
    return found


def _set(doc: Any, path: tuple, value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


def _get(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def hostile_envelopes(draw, value=hostile_value) -> Case:
    """A valid envelope of some entity with one envelope or data field (or a new one) set to a hostile value."""
    envelope = copy.deepcopy(draw(st.sampled_from(ENVELOPES)))
    entity = CATALOGUE[envelope["entity"]]
    op = draw(st.sampled_from(["c", "c", "u", "r", "d"]))
    envelope["op"] = op
    if op == "d":
        envelope.pop("data")
    if draw(st.booleans()):
        envelope["trace_id"] = "4bf92f3577b34da6a3ce929b0e0e4736"
    paths = [p for p in _paths(envelope) if p[0] != "data" or op != "d"]
    target = draw(st.sampled_from(paths + [("data", "__new__"), ("__new__",)] if op != "d" else paths + [("__new__",)]))
    if target[-1] == "__new__":
        target = target[:-1] + (draw(hostile_text | st.text(max_size=10)),)
    new = draw(value)
    try:
        old = _get(envelope, target)
    except (KeyError, IndexError, TypeError):
        old = None  # a new field
    if isinstance(old, str) and isinstance(new, str) and draw(st.booleans()):
        new = old + new  # a good value with a hostile tail, so format rules of free-text fields still pass
    _set(envelope, target, new)
    about = f"{entity.entity} op={op} {'.'.join(map(str, target))[:60]!r}"
    note(f"{about} = {repr(new)[:300]}")
    rekey = op != "d" and len(target) > 1 and target[0] == "data" and target[1] in entity.key_fields
    if rekey and not isinstance(new, Raw):
        # Rebuild the key from the changed data, so the event is not rejected only for envelope.key_mismatch.
        record, problems = entity.to_record(envelope["data"])
        if record is not None:
            envelope["key"] = entity.key_of(record)
    return Case(dumps(envelope, draw(st.booleans())), about)


def _mutate(raw: bytes, edits: list[tuple[int, int, bytes]]) -> Case:
    data = bytearray(raw)
    for position, delete, insert in edits:
        at = position % (len(data) + 1)
        data[at:at + delete] = insert
    return Case(bytes(data), f"edits {edits}")


mutated_envelopes = st.builds(
    _mutate,
    st.sampled_from([json.dumps(e, ensure_ascii=False).encode() for e in ENVELOPES]),
    st.lists(st.tuples(st.integers(min_value=0, max_value=4_000), st.integers(min_value=0, max_value=3),
                       st.binary(max_size=4) | st.sampled_from([b'"', b"\\", b"\\u", b"\\ud800", b"{", b"[", b"\xff",
                                                                b"\xed\xa0\x80", b"1e999"])),
             min_size=1, max_size=4),
)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

def test_the_examples_are_valid_and_pass_the_oracle():
    for envelope in ENVELOPES:
        result = check(json.dumps(envelope, ensure_ascii=False).encode())
        assert isinstance(result, Valid), (envelope["entity"], getattr(result, "problems", None))


@examples(300)
@given(st.binary(max_size=2_000) | st.sampled_from([b"", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf{}", b"\xed\xa0\x80"]))
def test_any_bytes_give_a_result_never_an_exception(raw):
    check(raw)


@examples(300)
@given(json_texts())
def test_any_json_document_gives_a_result_never_an_exception(case):
    check(case.raw)


@examples(300)
@given(mutated_envelopes)
def test_a_damaged_envelope_gives_a_result_never_an_exception(case):
    check(case.raw)


@examples(300)
@given(hostile_envelopes())
def test_an_envelope_with_one_hostile_field_gives_a_writable_valid_or_a_bounded_dead_letter(case):
    check(case.raw)


@examples(200)
@given(hostile_envelopes(value=st.one_of(hostile_int, hostile_float, raw_number)))
def test_numbers_out_of_avro_range_or_not_finite_never_reach_a_canonical_topic(case):
    check(case.raw)


@examples(200)
@given(hostile_envelopes(value=st.one_of(surrogate_text, control_text)))
def test_lone_surrogates_and_control_characters_never_break_a_write(case):
    check(case.raw)


huge_values = st.one_of(
    st.builds(lambda c, head, tail: head + c * BIG + tail, st.sampled_from(["x", "é", "9", "\x00", "\ud800"]),
              st.sampled_from(["", "HP031", "031309001234", "2026-05-20"]), st.sampled_from(["", "T09:00:00+07:00", "A1"])),
    st.builds(lambda c: [c * BIG], st.sampled_from(["x", "\ud800"])),
    st.builds(lambda c: {c * BIG: 1}, st.sampled_from(["k", "\ud800"])),
)


@examples(60)
@given(hostile_envelopes(value=huge_values))
def test_a_600_kB_string_anywhere_is_invalid_with_small_dead_letter_headers(case):
    result = check(case.raw)
    assert isinstance(result, Invalid), "a 600 kB string was accepted for a canonical topic"


@examples(40)
@given(st.integers(min_value=900, max_value=200_000), st.sampled_from(["[", '{"a":']),
       st.sampled_from(["top", "data", "trace_id", "unknown"]))
def test_deep_nesting_anywhere_gives_a_result_never_an_exception(depth, opener, where):
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + ("1" if opener != "[" else "") + closer * depth
    if where == "top":
        raw = nested.encode()
    else:
        envelope = copy.deepcopy(ENVELOPES[0])
        field = {"data": "data", "trace_id": "trace_id", "unknown": "extra"}[where]
        envelope[field] = Raw(nested)
        raw = dumps(envelope, True)
    result = check(raw)
    assert isinstance(result, Invalid)


# ---------------------------------------------------------------------------------------------
# Known hostile inputs: every run checks these, whatever hypothesis draws. Where the hub has a rule
# for the case (schema.int_range, schema.not_finite, *.invalid_unicode, *.control_char, envelope.too_deep,
# schema.string_too_long, envelope.too_long), the event must break at least that one.
# ---------------------------------------------------------------------------------------------

_BY_ENTITY = {e["entity"]: e for e in ENVELOPES}


def _envelope(entity: str, path: tuple = (), value: Any = None, op: str | None = None) -> bytes:
    envelope = copy.deepcopy(_BY_ENTITY[entity])
    if op is not None:
        envelope["op"] = op
        if op == "d":
            envelope.pop("data")
    if path:
        _set(envelope, path, value)
    return dumps(envelope, True)


KNOWN = [
    # (name, raw bytes, a rule the event must break, or None when any rule will do)
    ("int 2**31 in an Avro int", lambda: _envelope("exam.registration", ("data", "exam_year"), 2**31),
     "schema.int_range"),
    ("int -2**31-1 in an Avro int", lambda: _envelope("enrollment.result", ("data", "matched_rank"), -(2**31) - 1),
     "schema.int_range"),
    ("int 2**63", lambda: _envelope("enrollment.result", ("data", "matched_rank"), 2**63), "schema.int_range"),
    ("int 10**400", lambda: _envelope("exam.registration", ("data", "exam_year"), 10**400), "schema.int_range"),
    ("float 1e300 for an int", lambda: _envelope("school.class", ("data", "size"), 1e300),
     "schema.int_range"),
    ("float 1e300 for a decimal", lambda: _envelope("school.term_result", ("data", "average_score"), 1e300), None),
    ("int 10**400 for a decimal", lambda: _envelope("exam.result", ("data", "graduation_score"), 10**400), None),
    ("NaN for a decimal", lambda: _envelope("exam.result", ("data", "graduation_score"), Raw("NaN")),
     "schema.not_finite"),
    ("Infinity for an int", lambda: _envelope("school.score", ("data", "seq"), Raw("Infinity")), "schema.not_finite"),
    ("1e309 for an int", lambda: _envelope("school.score", ("data", "seq"), Raw("1e309")), "schema.not_finite"),
    ("5000-digit number", lambda: _envelope("school.score", ("data", "seq"), Raw("1" * 5_000)), None),
    ("lone surrogate in free text", lambda: _envelope("school.school", ("data", "name"), "Trường \ud800"),
     "schema.invalid_unicode"),
    ("lone surrogate as a field name of data", lambda: _envelope("school.school", ("data", "\ud800"), 1),
     "schema.invalid_unicode"),
    ("lone surrogate in trace_id", lambda: _envelope("school.school", ("trace_id",), "\ud800"),
     "envelope.invalid_unicode"),
    ("lone surrogate in the key of a delete", lambda: _envelope("school.school", ("key",), "\ud800", op="d"),
     "envelope.invalid_unicode"),
    ("lone surrogate in event_id", lambda: _envelope("school.school", ("event_id",), "\ud800"), None),
    ("lone surrogate as a top-level field name", lambda: _envelope("school.school", ("\udc00",), 1),
     "envelope.invalid_unicode"),
    ("lone surrogate as the only key", lambda: b'{"\\ud800": null}', "envelope.invalid_unicode"),
    ("NUL in free text", lambda: _envelope("school.student", ("data", "address", "street"), "S\u1ed1 12\x00"),
     "schema.control_char"),
    ("ESC in trace_id", lambda: _envelope("school.student", ("trace_id",), "\x1b[31m"), "envelope.control_char"),
    ("NUL in the key of a delete", lambda: _envelope("school.student", ("key",), "031309001234\x00", op="d"),
     "envelope.control_char"),
    ("600 kB of free text", lambda: _envelope("school.student", ("data", "address", "street"), "x" * BIG),
     "schema.string_too_long"),
    ("600 kB trace_id", lambda: _envelope("school.student", ("trace_id",), "x" * BIG), "envelope.too_long"),
    ("600 kB key of a delete", lambda: _envelope("school.student", ("key",), "x" * BIG, op="d"), "envelope.too_long"),
    ("600 kB event_id", lambda: _envelope("school.student", ("event_id",), "x" * BIG), None),
    ("600 kB entity", lambda: _envelope("school.student", ("entity",), "x" * BIG), None),
    ("600 kB field name", lambda: _envelope("school.student", ("data", "x" * BIG), 1), None),
    ("600 kB enum symbol", lambda: _envelope("school.teacher", ("data", "status"), "x" * BIG), None),
    ("600 kB inside a date", lambda: _envelope("school.teacher", ("data", "date_of_birth"), ["x" * BIG]), None),
    ("entity is a list", lambda: _envelope("school.school", ("entity",), ["school.school"]), None),
    ("entity is an object", lambda: _envelope("school.school", ("entity",), {"school.school": 1}), None),
    ("source is a list", lambda: _envelope("school.school", ("source",), [SOURCE]), None),
    ("50000 nested arrays", lambda: b"[" * 50_000 + b"]" * 50_000, "envelope.too_deep"),
    ("50000 unclosed arrays", lambda: b"[" * 50_000, None),
    ("5000 nested objects as data", lambda: _envelope("school.school", ("data",),
                                                      Raw('{"a":' * 5_000 + "1" + "}" * 5_000)), "envelope.too_deep"),
    ("3000 nested arrays as trace_id", lambda: _envelope("school.school", ("trace_id",),
                                                         Raw("[" * 3_000 + "]" * 3_000)), "envelope.too_deep"),
]


@pytest.mark.parametrize("build, rule", [(b, r) for _, b, r in KNOWN], ids=[name for name, *_ in KNOWN])
def test_a_known_hostile_input_is_a_dead_letter_with_its_rule(build, rule):
    result = check(build())
    assert isinstance(result, Invalid), "a hostile input was accepted for a canonical topic"
    if rule is not None:
        assert rule in {p.rule for p in result.problems}, [p.as_dict() for p in result.problems][:5]


# --- read_json reads exactly what json.loads reads (orjson on the fast path, the standard library otherwise)

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text())
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _standard(raw: bytes) -> tuple[str, Any]:
    """What the hub read before orjson: json.loads of the UTF-8 text, or the failure's kind."""
    try:
        return "ok", json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return "error", type(exc).__name__


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types at every depth (1 == 1.0 == True must not pass; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def _check_read(raw: bytes) -> None:
    from hub.contract.envelope import read_json

    doc, problem = read_json(raw)
    kind, expected = _standard(raw)
    if kind == "ok":
        assert problem is None and _same(doc, expected), repr(raw[:300])
    else:
        assert doc is None and problem is not None, repr(raw[:300])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES, st.booleans())
def test_read_json_reads_what_json_loads_reads(value: Any, ascii_only: bool) -> None:
    # ensure_ascii writes lone surrogates as \ud800 escapes, which orjson refuses and json reads
    _check_read(json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass"))


@settings(max_examples=400)
@given(st.binary(max_size=64), JSON_VALUES)
def test_read_json_on_broken_bytes_agrees_with_json_loads(noise: bytes, value: Any) -> None:
    text = json.dumps(value).encode()
    cut = len(noise) % (len(text) + 1)
    _check_read(text[:cut] + noise + text[cut:])


@pytest.mark.parametrize("raw", [
    b'[123456789012345678901234567890]', b'[-9223372036854775809]', b'[18446744073709551616]', b'{"a":1,"a":2}',
    b'[NaN, Infinity, -Infinity, 1e400, -1e400, 1e-400]', b'"\\ud800"', b'"\xed\xa0\x80"', b'\xef\xbb\xbf{}',
    b'[' * 5000 + b']' * 5000, b'{"a":"\x01"}', b'[1]\x00', b'[0.1, -0.0, 1E2, 2.5e-324]', b'', b' ',
])
def test_read_json_edge_cases(raw: bytes) -> None:
    _check_read(raw)

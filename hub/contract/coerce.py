"""JSON → Avro coercion: a converter per Avro type, with a Problem for every value that does not fit."""

from __future__ import annotations

import unicodedata
from datetime import date, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from hub.contract.envelope import Problem, parse_timestamp

# A converter turns one JSON value into its Avro datum, appending Problems for what is wrong.
Converter = Callable[[Any, str, list[Problem]], Any]
_MISSING = object()


def normalize_text(value: str) -> str:
    """NFC, trimmed, inner whitespace runs collapsed to one space (data dictionary §2)."""
    if value.isascii():  # ASCII is already NFC; most codes and ids are ASCII
        return " ".join(value.split())
    return " ".join(unicodedata.normalize("NFC", value).split())


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _mismatch(value: Any, path: str, expected: str, problems: list[Problem]) -> None:
    problems.append(Problem(path, "schema.type", f"{path} must be {expected}, got {_type_name(value)}"))


class _Compiler:
    """Builds converters from an Avro schema, resolving named types as Avro does."""

    def __init__(self) -> None:
        self.named: dict[str, Converter] = {}

    def compile(self, schema: Any, namespace: str = "") -> Converter:
        if isinstance(schema, str):
            if schema in self.named:
                return self.named[schema]
            qualified = f"{namespace}.{schema}" if namespace else schema
            if qualified in self.named:
                return self.named[qualified]
            return self._primitive(schema)
        if isinstance(schema, list):
            return self._union([self.compile(s, namespace) for s in schema], schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "date":
            return _date
        if logical == "timestamp-millis":
            return _timestamp
        if logical == "decimal":
            return _decimal(schema["precision"], schema.get("scale", 0))
        if kind == "record":
            return self._record(schema, namespace)
        if kind == "enum":
            return self._register(schema, namespace, _enum(schema["symbols"]))
        if kind == "array":
            return _array(self.compile(schema["items"], namespace))
        if kind == "map":
            return _map(self.compile(schema["values"], namespace))
        return self.compile(kind, namespace)

    def _register(self, schema: dict, namespace: str, converter: Converter) -> Converter:
        name = schema["name"]
        space = schema.get("namespace", namespace)
        self.named[name] = converter
        self.named[f"{space}.{name}" if space and "." not in name else name] = converter
        return converter

    def _primitive(self, name: str) -> Converter:
        try:
            return _PRIMITIVES[name]
        except KeyError:
            raise ValueError(f"unknown Avro type {name!r}") from None

    def _union(self, branches: list[Converter], schema: list) -> Converter:
        nullable = "null" in schema
        others = [c for c, s in zip(branches, schema) if s != "null"]

        def convert(value: Any, path: str, problems: list[Problem]) -> Any:
            if value is None:
                if nullable:
                    return None
                problems.append(Problem(path, "schema.required", f"{path} must not be null"))
                return None
            if len(others) == 1:
                return others[0](value, path, problems)
            for branch in others:
                attempt: list[Problem] = []
                result = branch(value, path, attempt)
                if not attempt:
                    return result
            _mismatch(value, path, "one of the union's types", problems)
            return None

        return convert

    def _record(self, schema: dict, namespace: str) -> Converter:
        space = schema.get("namespace", namespace)
        fields: list[tuple[str, Converter, Any, bool]] = []
        placeholder: list[Converter] = []

        def by_ref(value: Any, path: str, problems: list[Problem]) -> Any:
            return placeholder[0](value, path, problems)

        self._register(schema, namespace, by_ref)  # allows recursive references
        for f in schema["fields"]:
            fields.append((f["name"], self.compile(f["type"], space), f.get("default", _MISSING), "default" in f))
        names = frozenset(name for name, *_ in fields)
        # Child paths per parent path, built once: formatting them for every event cost more
        # than converting the values.
        child_paths: dict[str, tuple[str, ...]] = {}

        def convert(value: Any, path: str, problems: list[Problem]) -> Any:
            if not isinstance(value, dict):
                _mismatch(value, path, "an object", problems)
                return None
            if not names.issuperset(value):
                for name in value:
                    if name not in names:
                        problems.append(Problem(f"{path}.{name}", "schema.unknown_field",
                                                f"{path}.{name} is not a field of this schema"))
            paths = child_paths.get(path)
            if paths is None:
                paths = child_paths[path] = tuple(f"{path}.{name}" for name, *_ in fields)
            out = {}
            get = value.get
            for (name, conv, default, has_default), child in zip(fields, paths):
                item = get(name, _MISSING)
                if item is _MISSING:
                    if has_default:
                        out[name] = default
                        continue
                    problems.append(Problem(child, "schema.required", f"{child} is required"))
                    continue
                out[name] = conv(item, child, problems)
            return out

        placeholder.append(convert)
        return convert


# No field of the contract needs more (names, addresses, certificate numbers are far shorter); a longer
# string is junk that would bloat every subscriber's copy.
MAX_STRING = 4096


def _string(value: Any, path: str, problems: list[Problem]) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            problems.append(Problem(path, "schema.string_too_long",
                                    f"{path} has {len(value)} characters; at most {MAX_STRING}"))
            return None
        return normalize_text(value)
    _mismatch(value, path, "a string", problems)
    return None


def _integer(bits: int) -> Converter:
    """Avro int (32 bits) or long (64 bits): out-of-range values are refused, since fastavro would write
    them silently and Java readers would fail or wrap them."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    kind = "int" if bits == 32 else "long"

    def convert(value: Any, path: str, problems: list[Problem]) -> Any:
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                problems.append(Problem(path, "schema.not_finite", f"{path} must be a finite integer, got {value}"))
                return None
            if not value.is_integer():
                _mismatch(value, path, "an integer", problems)
                return None
            value = int(value)
        elif not isinstance(value, int) or isinstance(value, bool):
            _mismatch(value, path, "an integer", problems)
            return None
        if low <= value <= high:
            return value
        shown = str(value) if abs(value) < 10 ** 30 else f"an integer of {len(str(abs(value)))} digits"
        problems.append(Problem(path, "schema.int_range", f"{path} must fit an Avro {kind} ({low}..{high}), "
                                                          f"got {shown}"))
        return None

    return convert


def _float(value: Any, path: str, problems: list[Problem]) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = float("inf")
        if number != number or number in (float("inf"), float("-inf")):
            problems.append(Problem(path, "schema.not_finite", f"{path} must be a finite number"))
            return None
        return number
    _mismatch(value, path, "a number", problems)
    return None


def _boolean(value: Any, path: str, problems: list[Problem]) -> Any:
    if isinstance(value, bool):
        return value
    _mismatch(value, path, "true or false", problems)
    return None


def _null(value: Any, path: str, problems: list[Problem]) -> Any:
    if value is not None:
        _mismatch(value, path, "null", problems)
    return None


_PRIMITIVES: dict[str, Converter] = {
    "string": _string,
    "int": _integer(32),
    "long": _integer(64),
    "float": _float,
    "double": _float,
    "boolean": _boolean,
    "null": _null,
}


def _date(value: Any, path: str, problems: list[Problem]) -> Any:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    problems.append(Problem(path, "schema.date_format", f"{path} must be a date YYYY-MM-DD, got {value!r}"))
    return None


def _timestamp(value: Any, path: str, problems: list[Problem]) -> Any:
    parsed = parse_timestamp(value)
    if parsed is None:
        problems.append(
            Problem(path, "schema.timestamp_format", f"{path} must be RFC 3339 with an offset, got {value!r}")
        )
        return None
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+07:00 is before the first UTC instant datetime can hold
        problems.append(Problem(path, "schema.timestamp_format", f"{path} is out of range, got {value!r}"))
        return None


def _decimal(precision: int, scale: int) -> Converter:
    quantum = Decimal(1).scaleb(-scale)

    def convert(value: Any, path: str, problems: list[Problem]) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            _mismatch(value, path, "a decimal number", problems)
            return None
        try:
            number = Decimal(str(value))
        except (InvalidOperation, ValueError):
            _mismatch(value, path, "a decimal number", problems)
            return None
        if not number.is_finite():
            problems.append(Problem(path, "schema.not_finite", f"{path} must be a finite number, got {value!r}"))
            return None
        if number.as_tuple().exponent < -scale:  # type: ignore[operator]
            problems.append(
                Problem(path, "schema.decimal_scale", f"{path} allows at most {scale} decimal places, got {value!r}")
            )
            return None
        try:
            number = number.quantize(quantum)
        except InvalidOperation:  # far more digits than the context holds, e.g. "1e999999"
            number = None
        if number is None or len(number.as_tuple().digits) > precision:
            problems.append(Problem(path, "schema.decimal_precision", f"{path} has more than {precision} digits"))
            return None
        return number

    return convert


def _enum(symbols: list[str]) -> Converter:
    allowed = frozenset(symbols)

    def convert(value: Any, path: str, problems: list[Problem]) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        problems.append(Problem(path, "schema.enum", f"{path} must be one of {', '.join(symbols)}, got {value!r}"))
        return None

    return convert


def _array(item: Converter) -> Converter:
    item_paths: dict[tuple[str, int], str] = {}

    def item_path(path: str, index: int) -> str:
        found = item_paths.get((path, index))
        if found is None:
            found = f"{path}[{index}]"
            if index < 64:  # arrays in the contract are short; do not let the cache grow unbounded
                item_paths[(path, index)] = found
        return found

    def convert(value: Any, path: str, problems: list[Problem]) -> Any:
        if not isinstance(value, list):
            _mismatch(value, path, "an array", problems)
            return None
        return [item(v, item_path(path, i), problems) for i, v in enumerate(value)]

    return convert


def _map(values: Converter) -> Converter:
    def convert(value: Any, path: str, problems: list[Problem]) -> Any:
        if not isinstance(value, dict):
            _mismatch(value, path, "an object", problems)
            return None
        return {k: values(v, f"{path}.{k}", problems) for k, v in value.items()}

    return convert



def compile_schema(schema: Any) -> Converter:
    """The converter of a whole Avro schema (a fresh compiler: named types resolve within it)."""
    return _Compiler().compile(schema)

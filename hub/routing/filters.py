"""The row-filter language of subscriptions: tokenizer, recursive-descent parser, compiler, `Filter`.

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

The filter runs on the FULL canonical record, before projection and masking (see
hub.routing.policy, which also checks that every path exists in a subscribed entity).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable

from hub.contract.envelope import parse_timestamp
from hub.routing.errors import SubscriptionError

MAX_FILTER_LENGTH = 4000
MAX_DEPTH = 40

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

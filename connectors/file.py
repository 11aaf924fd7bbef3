"""Watches a folder for schools' CSV/XLSX exports and publishes them row by row, each file once.

A school exports a class list or a mark book from Excel (or the SMAS web app) and drops it in
the inbox folder. The connector takes the oldest file first, publishes one envelope per row and
moves the file to `done_folder` once Kafka holds every row. A file is known by the SHA-256 of its
bytes: the same export dropped again, under any name, is moved aside without publishing anything.

Cells are converted to what the entity's Avro schema expects (numbers, dates, booleans, lists);
a cell that does not convert is published as the text it holds, so the hub rejects the row with a
precise reason (and keeps it in the source's DLQ) instead of the connector guessing. A row that
does not fit the header at all carries the explanation in an extra `_row_error` field, which the
hub reports as an unknown field. Nothing in a file stops the connector.

The helpers `field_specs`, `assemble` and `key_of` are shared with the Debezium connector: they map
flat source columns (dotted field names build nested records) onto an entity's fields.
"""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from connectors.base import ConnectorConfig, SourceConnector, SourceRecord, event_id_for, make_envelope, register
from hub.contract.schemas import Catalogue, EntitySchema, normalize_text

log = logging.getLogger(__name__)

# Vietnam keeps +07:00 all year (no daylight saving): file times and local spreadsheet times use it.
VN_TZ = timezone(timedelta(hours=7))
DONE_KEEP = 1_000  # processed checksums kept in the offset (it is rewritten after every batch)
HASH_CHUNK = 1 << 20
ROW_ERROR = "_row_error"  # not a field of any entity: the hub rejects the row and names this field
FILE_ERROR = "_file_error"

Kind = Literal["int", "decimal", "date", "bool", "json", "string", "timestamp", "list"]


# --- mapping flat columns onto an entity's fields (shared with connectors.debezium) -------------

@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an entity, by dotted path: how to convert its source value, and its null rules."""

    path: str
    kind: str  # int, float, decimal, date, timestamp, bool, list, json, string, record
    nullable: bool
    has_default: bool


@functools.lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    return Catalogue.load()


def entity_schema(entity: str) -> EntitySchema:
    entities = catalogue().entities
    if entity not in entities:
        raise ValueError(f"unknown entity {entity!r}; one of {', '.join(sorted(entities))}")
    return entities[entity]


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
        out[path] = FieldSpec(path, kind, nullable, "default" in f)
        if record is not None:
            _walk(record.get("fields", []), path + ".", named, out)


@functools.lru_cache(maxsize=None)
def field_specs(entity: str) -> dict[str, FieldSpec]:
    """Every field of the entity by dotted path, parents (kind "record") before their children.

    >>> specs = field_specs("school.student")
    >>> specs["address"].kind, specs["address.ward_code"].kind, specs["date_of_birth"].kind
    ('record', 'string', 'date')
    """
    out: dict[str, FieldSpec] = {}
    _walk(entity_schema(entity).schema["fields"], "", {}, out)
    return out


def check_field_names(entity: str, names: Any, what: str) -> None:
    """ValueError naming the keys of `names` that are not (dotted) fields of the entity."""
    specs = field_specs(entity)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"{what}: {', '.join(map(repr, unknown))} not fields of {entity} "
                         f"(fields: {', '.join(specs)})")


_ABSENT = object()


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


def key_of(entity: str, data: dict[str, Any] | None) -> str:
    """The entity key from (unconverted) data, as the hub builds it: key fields joined with '|'."""
    parts = []
    for name in entity_schema(entity).key_fields:
        value = (data or {}).get(name)
        if value is None:
            parts.append("")
        elif isinstance(value, str):
            parts.append(normalize_text(value))
        else:
            parts.append(str(value))
    return "|".join(parts)


def local_iso(moment: datetime, tz: Any = VN_TZ) -> str:
    """RFC 3339 with offset; a naive datetime is wall-clock time in `tz`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


# --- converting spreadsheet cells -----------------------------------------------------------------

_DMY = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_LOCAL_TIME = re.compile(
    r"^(?:(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})|(?P<d2>\d{1,2})/(?P<m2>\d{1,2})/(?P<y2>\d{4}))"
    r"[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?$")
_INT = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_TRUE = frozenset({"true", "1", "có", "x", "yes", "đúng"})
_FALSE = frozenset({"false", "0", "không", "no", "sai"})


def number_text(value: float | int) -> str:
    """A spreadsheet number as text: 15 significant digits, as Excel shows it (6.699999999999999 → 6.7)."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return str(int(value))
    return format(Decimal(format(value, ".15g")), "f")


def cell_text(value: Any) -> str:
    """Any cell value as the text a person sees in it."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return number_text(value)
    if isinstance(value, datetime):
        if value.time() == datetime.min.time() and value.tzinfo is None:
            return value.date().isoformat()
        return local_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def parse_date(text: str) -> str | None:
    """ISO YYYY-MM-DD, or DD/MM/YYYY as Vietnamese spreadsheets write dates, to ISO; else None."""
    try:
        return date.fromisoformat(text).isoformat() if len(text) == 10 else None
    except ValueError:
        pass
    match = _DMY.match(text)
    if match:
        day, month, year = map(int, match.groups())
        try:
            return date(year, month, day).isoformat()
        except ValueError:
            return None
    return None


def _to_int(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = cell_text(value)
    if _INT.match(text):
        return int(text.split(".")[0])
    return text


def _to_decimal(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)
    text = cell_text(value)
    if _DECIMAL_COMMA.match(text):  # "8,5": a decimal comma, as Vietnamese Excel writes
        text = text.replace(",", ".")
    try:
        Decimal(text)
    except InvalidOperation:
        return text  # the hub says it is not a decimal number
    return text


def _to_date(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = cell_text(value)
    return parse_date(text) or text


def _to_timestamp(value: Any) -> Any:
    if isinstance(value, datetime):
        return local_iso(value)
    if isinstance(value, date):
        return local_iso(datetime(value.year, value.month, value.day))
    text = cell_text(value)
    match = _LOCAL_TIME.match(text)
    if match:  # local time without an offset: Vietnam's
        g = match.groupdict()
        try:
            moment = datetime(int(g["y"] or g["y2"]), int(g["m"] or g["m2"]), int(g["d"] or g["d2"]),
                              int(g["H"]), int(g["M"]), int(g["S"] or 0))
        except ValueError:
            return text
        return local_iso(moment)
    return text


def _to_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = cell_text(value)
    folded = unicodedata.normalize("NFC", text).casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    return text


def _to_list(value: Any) -> Any:
    if isinstance(value, list):
        return value
    return [item.strip() for item in cell_text(value).split(";") if item.strip()]


def _to_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value.strip()


def _to_float(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = cell_text(value)
    if _DECIMAL_COMMA.match(text):
        text = text.replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return text


CONVERTERS = {
    "int": _to_int,
    "float": _to_float,
    "decimal": _to_decimal,
    "date": _to_date,
    "timestamp": _to_timestamp,
    "bool": _to_bool,
    "list": _to_list,
    "json": _to_json,
    "record": _to_json,
    "string": cell_text,
}


def convert_cell(kind: str, value: Any) -> Any:
    """A cell converted for a field of `kind`; what does not convert stays as its text. Empty → None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return CONVERTERS[kind](value)


def _header_key(text: Any) -> str:
    return normalize_text(cell_text(text)).casefold() if text is not None else ""


# --- the connector -------------------------------------------------------------------------------

class FileConnectorConfig(ConnectorConfig):
    """A folder of spreadsheet exports of one entity."""

    folder: Path = Field(description="inbox folder the schools' exports are dropped in (not searched recursively)")
    done_folder: Path | None = Field(
        None, description="finished files are moved here (created when missing); default <folder>/done")
    patterns: list[str] = Field(
        default_factory=lambda: ["*.csv", "*.xlsx"], min_length=1,
        description="file name patterns to read (case-insensitive glob); Excel's ~$ lock files are never read")
    entity: str = Field(description="entity every row of these files is, e.g. school.score")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="entity field → header text in the file, e.g. {student_id: Mã định danh, score: Điểm}; "
                    "dotted fields (address.ward_code) build nested records; a field not listed is read from "
                    "a header with its own name. Headers match ignoring case, NFC/NFD and extra spaces")
    op: Literal["c", "u", "r", "d"] = Field(
        "c", description="op of every row: c create, u update, r snapshot read, d delete (the key only)")
    csv_encoding: str = Field("utf-8-sig", description="text encoding of CSV files; utf-8-sig reads UTF-8 with or "
                                                       "without the BOM Excel writes")
    csv_delimiter: str = Field(",", min_length=1, max_length=1,
                               description="CSV cell delimiter; Vietnamese-locale Excel often writes ';'")
    types: dict[str, Kind] = Field(
        default_factory=dict,
        description="field → int, decimal, date, bool, json, string, timestamp or list, to override the "
                    "conversion derived from the entity's Avro schema (int/long → int; decimal → the number as "
                    "text, decimal comma accepted; date → ISO, DD/MM/YYYY accepted; timestamp → RFC 3339, local "
                    "times taken as +07:00; boolean → true/false/1/0/có/không; array of enums or strings → cells "
                    "split on ';'; other arrays, maps and records → JSON text; everything else text)")
    values: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="field → {cell text: value to publish}, applied before conversion and matched ignoring "
                    "case, e.g. {gender: {Nam: MALE, Nữ: FEMALE}}; texts not listed pass unchanged")
    settle_s: float = Field(
        2.0, ge=0, le=3600,
        description="a file is read only once it has not been modified for this many seconds (still being copied)")

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        entity_schema(value)
        return value

    @model_validator(mode="after")
    def _fields(self) -> "FileConnectorConfig":
        check_field_names(self.entity, self.columns, "columns")
        check_field_names(self.entity, self.types, "types")
        check_field_names(self.entity, self.values, "values")
        if self.done_folder is None:
            self.done_folder = self.folder / "done"
        return self


@dataclass
class _Row:
    number: int  # spreadsheet row number: the header is row 1
    cells: list[Any]
    error: str | None = None


@dataclass
class _OpenFile:
    path: Path
    checksum: str
    occurred_at: str
    columns: dict[str, int]  # field path → cell index, for the fields the header has
    rows: list[_Row]
    position: int = 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@register
class FileConnector(SourceConnector):
    """Publishes the rows of spreadsheet exports dropped in a folder, oldest file first, each file once."""

    kind = "file"
    config_model = FileConnectorConfig
    config: FileConnectorConfig

    def __init__(self, config: FileConnectorConfig) -> None:
        super().__init__(config)
        self._specs = field_specs(config.entity)
        self._kinds = {path: config.types.get(path, spec.kind) for path, spec in self._specs.items()}
        self._values = {path: {_header_key(k): v for k, v in mapping.items()}
                        for path, mapping in config.values.items()}
        self._done: list[str] = []  # processed checksums, oldest first; replaced, never mutated
        self._done_set: set[str] = set()
        self._resume: tuple[str, int] | None = None
        self._current: _OpenFile | None = None
        self._awaiting: dict[str, Path] = {}  # checksum → file fully published, moved once committed
        self._lock = threading.Lock()

    @property
    def done_folder(self) -> Path:
        assert self.config.done_folder is not None
        return self.config.done_folder

    async def start(self, offset: dict[str, Any] | None) -> None:
        await asyncio.to_thread(self._start, offset or {})

    def _start(self, offset: dict[str, Any]) -> None:
        self.config.folder.mkdir(parents=True, exist_ok=True)
        self.done_folder.mkdir(parents=True, exist_ok=True)
        done = [c for c in offset.get("done") or [] if isinstance(c, str)][-DONE_KEEP:]
        self._done, self._done_set = done, set(done)
        checksum, row = offset.get("file"), offset.get("row")
        self._resume = (checksum, int(row)) if isinstance(checksum, str) and checksum not in self._done_set \
            and isinstance(row, int) else None
        self._current = None
        self._awaiting.clear()

    async def poll(self) -> list[SourceRecord]:
        return await asyncio.to_thread(self._poll)

    async def committed(self, records: Sequence[SourceRecord]) -> None:
        finished = []
        for record in records:
            checksum = record.offset.get("file")
            done = record.offset.get("done")
            if checksum in self._awaiting and done and done[-1] == checksum:
                finished.append(checksum)
        if finished:
            await asyncio.to_thread(self._finish, finished)

    # -- synchronous work, off the event loop ---------------------------------------------------

    def _poll(self) -> list[SourceRecord]:
        with self._lock:
            records: list[SourceRecord] = []
            while len(records) < self.config.batch_size:
                if self._current is None and not self._open_next():
                    break
                current = self._current
                assert current is not None
                while current.position < len(current.rows) and len(records) < self.config.batch_size:
                    row = current.rows[current.position]
                    current.position += 1
                    last = current.position == len(current.rows)
                    if last:
                        self._mark_done(current.checksum)
                    offset = {"file": current.checksum, "row": row.number, "done": self._done}
                    records.append(SourceRecord(self._envelope(current, row), offset))
                if current.position >= len(current.rows):
                    self._awaiting[current.checksum] = current.path
                    self._current = None
            return records

    def _mark_done(self, checksum: str) -> None:
        done = [*self._done, checksum]
        if len(done) > DONE_KEEP:
            dropped = done[: len(done) - DONE_KEEP]
            done = done[-DONE_KEEP:]
            self._done_set.difference_update(dropped)
        self._done = done  # a new list: offsets already handed out keep theirs
        self._done_set.add(checksum)

    def _candidates(self) -> list[Path]:
        patterns = [p.lower() for p in self.config.patterns]
        awaiting = set(self._awaiting.values())
        newest = time.time() - self.config.settle_s
        found = []
        try:
            entries = list(os.scandir(self.config.folder))
        except FileNotFoundError:
            self.config.folder.mkdir(parents=True, exist_ok=True)
            return []
        for entry in entries:
            name = entry.name
            if name.startswith(("~$", ".")) or not any(fnmatch.fnmatchcase(name.lower(), p) for p in patterns):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError:
                continue
            path = Path(entry.path)
            if path in awaiting or stat.st_mtime > newest:
                continue
            found.append((stat.st_mtime_ns, name, path))
        return [path for *_, path in sorted(found)]

    def _open_next(self) -> bool:
        """Open the oldest unprocessed file as `_current`; moves repeats aside. False if there is none."""
        for path in self._candidates():
            try:
                checksum = sha256_of(path)
                mtime = path.stat().st_mtime
            except OSError as error:  # removed or unreadable meanwhile: next time
                log.warning("cannot read %s: %s", path, error)
                continue
            if checksum in self._done_set:
                log.info("%s was already published (sha256 %s): moved aside, nothing published", path.name, checksum)
                self._move(path, checksum)
                continue
            header, rows = self._read(path)
            if self._resume is not None and self._resume[0] == checksum:
                rows = [row for row in rows if row.number > self._resume[1]]
                self._resume = None
            occurred_at = datetime.fromtimestamp(mtime, VN_TZ).isoformat(timespec="seconds")
            if not rows:  # nothing (left) to publish: the file is done without a record
                log.info("%s has no rows to publish", path.name)
                self._mark_done(checksum)
                self._move(path, checksum)
                continue
            self._current = _OpenFile(path, checksum, occurred_at, self._columns_of(header), rows)
            log.info("publishing %s: %d rows (sha256 %s)", path.name, len(rows), checksum)
            return True
        return False

    def _columns_of(self, header: list[Any]) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, text in enumerate(header):
            if _header_key(text):
                index.setdefault(_header_key(text), i)
        columns = {}
        for path in self._specs:
            column = index.get(_header_key(self.config.columns.get(path, path)))
            if column is not None:
                columns[path] = column
        missing = [f"{p} ({self.config.columns[p]!r})" for p in self.config.columns if p not in columns]
        if header and missing:
            log.warning("the header has no column for %s", ", ".join(missing))
        return columns

    def _read(self, path: Path) -> tuple[list[Any], list[_Row]]:
        """The header and the non-empty data rows; an unreadable file is one row carrying the error."""
        try:
            if path.suffix.lower() in (".xlsx", ".xlsm"):
                table = self._read_xlsx(path)
                strict = False
            else:
                table = self._read_csv(path)
                strict = True
        except Exception as error:  # noqa: BLE001 - any broken file becomes a dead letter, never a stop
            log.error("cannot read %s: %s", path.name, error)
            return [], [_Row(0, [], error=f"cannot read {path.name}: {type(error).__name__}: {error}")]
        if not table:
            return [], []
        header, *body = table
        width = len(header)
        rows = []
        for number, cells in enumerate(body, start=2):
            if all(_blank(c) for c in cells):
                continue
            error = None
            if strict and (len(cells) < width or any(not _blank(c) for c in cells[width:])):
                error = f"row {number} of {path.name} has {len(cells)} cells, the header has {width}"
            rows.append(_Row(number, list(cells), error))
        return header, rows

    def _read_csv(self, path: Path) -> list[list[str]]:
        with path.open(encoding=self.config.csv_encoding, newline="") as handle:
            return list(csv.reader(handle, delimiter=self.config.csv_delimiter))

    def _read_xlsx(self, path: Path) -> list[list[Any]]:
        import openpyxl

        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            sheet = workbook.worksheets[0]
            sheet.reset_dimensions()  # some exporters write a wrong sheet size; read what the cells are
            return [list(row) for row in sheet.iter_rows(values_only=True)]
        finally:
            workbook.close()

    def _envelope(self, current: _OpenFile, row: _Row) -> dict[str, Any]:
        config = self.config
        event_id = event_id_for(config.source, current.checksum, row.number)
        if row.number == 0:  # the file itself could not be read
            return make_envelope(source=config.source, entity=config.entity, op=config.op, key=current.path.name,
                                 occurred_at=current.occurred_at, event_id=event_id,
                                 data={FILE_ERROR: row.error, "_file": current.path.name})
        data = self._map(current, row)
        key = key_of(config.entity, data)
        return make_envelope(source=config.source, entity=config.entity, op=config.op, key=key,
                             occurred_at=current.occurred_at, data=data, event_id=event_id)

    def _map(self, current: _OpenFile, row: _Row) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for path, column in current.columns.items():
            cell = row.cells[column] if column < len(row.cells) else None
            mapping = self._values.get(path)
            if mapping and not _blank(cell):
                cell = mapping.get(_header_key(cell), cell)
            values[path] = convert_cell(self._kinds[path], cell)
        if row.error:
            values[ROW_ERROR] = row.error
        return assemble(self.config.entity, values, omit_nulls=True)

    def _finish(self, checksums: list[str]) -> None:
        with self._lock:
            for checksum in checksums:
                path = self._awaiting.pop(checksum, None)
                if path is None:
                    continue
                try:
                    unchanged = sha256_of(path) == checksum
                except OSError:
                    log.warning("%s vanished before it could be moved to %s", path, self.done_folder)
                    continue
                if unchanged:
                    self._move(path, checksum)
                else:  # overwritten meanwhile (a corrected export under the same name): a new file
                    log.warning("%s changed after it was read; it will be read again", path.name)

    def _move(self, path: Path, checksum: str) -> None:
        """Move a finished file to done_folder; a name already there gets the checksum's start added."""
        self.done_folder.mkdir(parents=True, exist_ok=True)
        target = self.done_folder / path.name
        if target.exists():
            target = self.done_folder / f"{path.stem}.{checksum[:12]}{path.suffix}"
            n = 1
            while target.exists():
                target = self.done_folder / f"{path.stem}.{checksum[:12]}.{n}{path.suffix}"
                n += 1
        try:
            shutil.move(str(path), str(target))
        except FileNotFoundError:
            log.warning("%s vanished before it could be moved to %s", path, self.done_folder)
        else:
            log.info("moved %s to %s", path.name, target)

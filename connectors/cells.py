"""Spreadsheet cells: CSV/XLSX files read as rows of cells, and cells converted for a field's kind."""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from hub.contract.coerce import normalize_text

# Vietnam keeps +07:00 all year (no daylight saving): file times and local spreadsheet times use it.
VN_TZ = timezone(timedelta(hours=7))


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


def header_key(text: Any) -> str:
    """A header (or a `values` key) as it is matched: NFC, spaces collapsed, case folded."""
    return normalize_text(cell_text(text)).casefold() if text is not None else ""


# --- reading a file ------------------------------------------------------------------------------

@dataclass
class Row:
    """One data row of a file."""

    number: int  # spreadsheet row number: the header is row 1
    cells: list[Any]
    error: str | None = None


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def read_table(path: Path, encoding: str, delimiter: str) -> tuple[list[list[Any]], bool]:
    """Every row of the file's cells (the first sheet of a workbook), and whether the width is strict:
    a CSV row must be as wide as the header, a sheet's rows end where their cells do."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return read_xlsx(path), False
    return read_csv(path, encoding, delimiter), True


def read_csv(path: Path, encoding: str, delimiter: str) -> list[list[str]]:
    with path.open(encoding=encoding, newline="") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def read_xlsx(path: Path) -> list[list[Any]]:
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()  # some exporters write a wrong sheet size; read what the cells are
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


def data_rows(table: list[list[Any]], strict: bool, name: str) -> tuple[list[Any], list[Row]]:
    """The header and the non-empty data rows; in a strict table a row that does not fit the header
    carries the explanation."""
    if not table:
        return [], []
    header, *body = table
    width = len(header)
    rows = []
    for number, cells in enumerate(body, start=2):
        if all(blank(c) for c in cells):
            continue
        error = None
        if strict and (len(cells) < width or any(not blank(c) for c in cells[width:])):
            error = f"row {number} of {name} has {len(cells)} cells, the header has {width}"
        rows.append(Row(number, list(cells), error))
    return header, rows

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

Cells are read and converted in connectors.cells; the header's columns become the entity's fields
by the row-mapping model every connector shares (connectors.rows: dotted field names build nested
records).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from connectors.base import ConnectorConfig, SourceConnector, SourceRecord, event_id_for, make_envelope, register
from connectors.cells import VN_TZ, Row, blank, convert_cell, data_rows, header_key, read_table
from connectors.rows import assemble, check_fields, entity_schema, field_specs, key_of

log = logging.getLogger(__name__)

DONE_KEEP = 1_000  # processed checksums kept in the offset (it is rewritten after every batch)
HASH_CHUNK = 1 << 20
ROW_ERROR = "_row_error"  # not a field of any entity: the hub rejects the row and names this field
FILE_ERROR = "_file_error"

Kind = Literal["int", "decimal", "date", "bool", "json", "string", "timestamp", "list"]


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
        check_fields(self.entity, self.columns, "columns")
        check_fields(self.entity, self.types, "types")
        check_fields(self.entity, self.values, "values")
        if self.done_folder is None:
            self.done_folder = self.folder / "done"
        return self


@dataclass
class _OpenFile:
    path: Path
    checksum: str
    occurred_at: str
    columns: dict[str, int]  # field path → cell index, for the fields the header has
    rows: list[Row]
    position: int = 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
        self._values = {path: {header_key(k): v for k, v in mapping.items()}
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
            if header_key(text):
                index.setdefault(header_key(text), i)
        columns = {}
        for path in self._specs:
            column = index.get(header_key(self.config.columns.get(path, path)))
            if column is not None:
                columns[path] = column
        missing = [f"{p} ({self.config.columns[p]!r})" for p in self.config.columns if p not in columns]
        if header and missing:
            log.warning("the header has no column for %s", ", ".join(missing))
        return columns

    def _read(self, path: Path) -> tuple[list[Any], list[Row]]:
        """The header and the non-empty data rows; an unreadable file is one row carrying the error."""
        try:
            table, strict = read_table(path, self.config.csv_encoding, self.config.csv_delimiter)
        except Exception as error:  # noqa: BLE001 - any broken file becomes a dead letter, never a stop
            log.error("cannot read %s: %s", path.name, error)
            return [], [Row(0, [], error=f"cannot read {path.name}: {type(error).__name__}: {error}")]
        return data_rows(table, strict, path.name)

    def _envelope(self, current: _OpenFile, row: Row) -> dict[str, Any]:
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

    def _map(self, current: _OpenFile, row: Row) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for path, column in current.columns.items():
            cell = row.cells[column] if column < len(row.cells) else None
            mapping = self._values.get(path)
            if mapping and not blank(cell):
                cell = mapping.get(header_key(cell), cell)
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

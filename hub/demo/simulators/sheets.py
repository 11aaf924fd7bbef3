"""Schools' spreadsheet exports (CSV/XLSX mark books) dropped into a folder, read by the `file` connector."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hub.demo.simulators.marks import (COMMENT_GRADED_SUBJECTS, CORE_SCHOOL_SUBJECTS, ELECTIVE_GROUPS, SCHOOL_YEAR,
                                       TERM_1_MARKS, _mark, _random_moment, _school_year_first, _term_window)
from hub.demo.simulators.people import (BIRTH_PROVINCES, HAIPHONG_SCHOOLS, _birth, _local_rfc3339, _vn_wall,
                                        _weighted, person_id)

# school.score field → the column header a Vietnamese mark-book export carries.
SPREADSHEET_SCORE_COLUMNS: dict[str, str] = {
    "student_id": "Mã định danh",
    "school_code": "Mã trường",
    "school_year": "Năm học",
    "term": "Học kỳ",
    "subject": "Môn",
    "kind": "Loại điểm",
    "seq": "Lần",
    "score": "Điểm",
    "pass_result": "Đánh giá",
    "teacher_id": "Mã giáo viên",
    "recorded_at": "Thời điểm ghi",
}
# What a broken spreadsheet row looks like: kind → the hub's rule that rejects it.
SPREADSHEET_BAD_KINDS: dict[str, str] = {
    "score_in_words": "schema.type",  # "mười" typed instead of 10
    "empty_student_id": "schema.required",  # the ID cell left empty
    "score_over_10": "score.range",  # 85 for 8.5, the decimal point forgotten
    "student_id_lost_leading_zero": "national_id.format",  # Excel made the ID a number
}


def file_connector_config(folder: str | Path, source: str = "school-sheets", name: str = "school-sheets") -> dict[str, Any]:
    """The hub.yaml `connectors:` entry (kind `file`) reading a `SchoolSpreadsheets` folder.

    >>> file_connector_config("/srv/inbox")["columns"]["score"]
    'Điểm'
    """
    return {
        "name": name,
        "kind": "file",
        "source": source,
        "folder": str(folder),
        "entity": "school.score",
        "columns": dict(SPREADSHEET_SCORE_COLUMNS),
    }


class SchoolSpreadsheets:
    """A school's mark-book exports (sổ điểm) dropped as CSV or XLSX files into a folder.

    One file is one class's marks for one assessment (subject, kind, lần) after another, one
    row per student, under Vietnamese headers (`SPREADSHEET_SCORE_COLUMNS`). CSV is UTF-8 with
    the BOM Excel writes; an absent optional value is an empty cell. With `bad_rows` some rows
    are broken (`SPREADSHEET_BAD_KINDS`); `last_bad` maps their 0-based data-row index to the kind.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = SchoolSpreadsheets(folder, seed=1).write_scores_csv(3)
    ...     path.read_bytes()[:3] == b"\\xef\\xbb\\xbf", len(path.read_text("utf-8-sig").splitlines())
    (True, 4)
    """

    roster_size = 38

    def __init__(self, folder: str | Path, seed: int | None = None, school_code: str | None = None,
                 school_year: str = SCHOOL_YEAR) -> None:
        self.folder = Path(folder)
        self.rng = random.Random(seed)
        self.school_code = school_code or self.rng.choice(sorted(HAIPHONG_SCHOOLS))
        self.school_year = school_year
        self.first_year = _school_year_first(school_year)
        self.last_bad: dict[int, str] = {}
        self._files = 0
        self._classes = 0
        self._used_ids: set[str] = set()
        self._rows = self._row_stream()

    def _roster(self) -> tuple[str, list[tuple[str, float]], tuple[str, ...]]:
        """A new class: its name, its students (ID, ability) and its subjects."""
        rng = self.rng
        self._classes += 1
        grade = 10 + (self._classes - 1) % 3
        name = f"{grade}A{(self._classes - 1) // 3 + 1}"
        students = []
        for _ in range(self.roster_size):
            gender = rng.choice(("MALE", "FEMALE"))
            birth = _birth(rng, self.first_year - grade - 5 - (1 if rng.random() < 0.04 else 0))
            while True:
                pid = person_id(rng, birth, gender, _weighted(rng, BIRTH_PROVINCES))
                if pid not in self._used_ids:
                    self._used_ids.add(pid)
                    break
            students.append((pid, min(9.8, max(3.0, rng.gauss(6.9, 1.1)))))
        group = ELECTIVE_GROUPS[self._classes % len(ELECTIVE_GROUPS)]
        return name, students, (*CORE_SCHOOL_SUBJECTS, *group[:2], "PE", "EXPERIENTIAL")

    def _row_stream(self) -> Iterator[dict[str, Any]]:
        """School.score rows without end, as Python values: class after class, assessment after assessment."""
        rng = self.rng
        now = _vn_wall(datetime.now(UTC))
        teacher_base = f"{self.school_code}GV"
        while True:
            _, students, subjects = self._roster()
            for term, marks in ((1, TERM_1_MARKS), (2, (*TERM_1_MARKS[:2], ("REGULAR", 3), *TERM_1_MARKS[2:]))):
                for subject in subjects:
                    teacher = f"{teacher_base}{rng.randint(1, 60):03d}" if rng.random() < 0.9 else None
                    for kind, seq in marks:
                        start, end = _term_window(self.first_year, term, kind)
                        # The teacher enters the whole class at one sitting.
                        moment = _random_moment(rng, start, end, cap=now)
                        for pid, ability in students:
                            comment = subject in COMMENT_GRADED_SUBJECTS
                            yield {
                                "student_id": pid,
                                "school_code": self.school_code,
                                "school_year": self.school_year,
                                "term": term,
                                "subject": subject,
                                "kind": kind,
                                "seq": seq,
                                "score": None if comment else _mark(rng, ability, kind),
                                "pass_result": ("PASS" if rng.random() < 0.97 else "FAIL") if comment else None,
                                "teacher_id": teacher,
                                "recorded_at": moment,
                            }
                            moment += timedelta(seconds=rng.randint(5, 40))

    def _take(self, n_rows: int, bad_rows: int) -> list[dict[str, Any]]:
        if not 0 <= bad_rows <= n_rows:
            raise ValueError(f"bad_rows must be 0..n_rows, got {bad_rows} of {n_rows}")
        rng = self.rng
        rows = [next(self._rows) for _ in range(n_rows)]
        kinds = list(SPREADSHEET_BAD_KINDS)
        free = set(range(n_rows))
        self.last_bad = {}
        for i in range(bad_rows):
            kind = kinds[i % len(kinds)]
            pool = sorted(free)
            if kind in ("score_in_words", "score_over_10"):  # a scored subject, if the file has one
                pool = [j for j in pool if rows[j]["score"] is not None] or pool
            position = rng.choice(pool)
            free.discard(position)
            self.last_bad[position] = kind
            row = rows[position]
            if kind in ("score_in_words", "score_over_10") and row["score"] is None:
                row["pass_result"] = None  # only comment-graded rows left: the mark goes in anyway
            if kind == "score_in_words":
                row["score"] = "mười"
            elif kind == "score_over_10":
                score = row["score"]
                # 85 for 8.5: the decimal point forgotten.
                row["score"] = score * 10 if score is not None and 1 < score < 10 else Decimal(85)
            elif kind == "empty_student_id":
                row["student_id"] = None
            else:
                row["student_id"] = row["student_id"].lstrip("0")
        return rows

    def _path(self, suffix: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files += 1
        return self.folder / f"bang-diem_{self.school_code}_{self.school_year}_{self._files:03d}.{suffix}"

    @staticmethod
    def _text(field: str, value: Any) -> str:
        if value is None:
            return ""
        if field == "recorded_at":
            return _local_rfc3339(value)
        if isinstance(value, Decimal):
            return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f").rstrip("0")
        return str(value)

    def write_scores_csv(self, n_rows: int, bad_rows: int = 0) -> Path:
        """A CSV export of `n_rows` marks (UTF-8 with BOM, Vietnamese headers, CRLF as Excel writes)."""
        rows = self._take(n_rows, bad_rows)
        path = self._path("csv")
        tmp = path.with_name(path.name + ".part")
        with tmp.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.writer(f, lineterminator="\r\n")
            writer.writerow(SPREADSHEET_SCORE_COLUMNS.values())
            for row in rows:
                writer.writerow(self._text(field, row[field]) for field in SPREADSHEET_SCORE_COLUMNS)
        tmp.replace(path)  # appears complete: a watcher never reads half a file
        return path

    def write_scores_xlsx(self, n_rows: int, bad_rows: int = 0) -> Path:
        """The same export as an XLSX workbook: IDs as text cells, numbers as numbers."""
        from openpyxl import Workbook

        rows = self._take(n_rows, bad_rows)
        path = self._path("xlsx")
        book = Workbook()
        sheet = book.active
        sheet.title = "Bảng điểm"
        sheet.append(list(SPREADSHEET_SCORE_COLUMNS.values()))
        for row in rows:
            cells: list[Any] = []
            for field in SPREADSHEET_SCORE_COLUMNS:
                value = row[field]
                if field == "recorded_at":
                    value = _local_rfc3339(value)
                elif isinstance(value, Decimal):
                    value = float(value)
                cells.append(value)
            sheet.append(cells)
        for cell in sheet["A"][1:]:
            cell.number_format = "@"  # the ID column is text, or Excel drops the leading zero
        tmp = path.with_name(path.name + ".part")
        book.save(tmp)
        tmp.replace(path)
        return path

    file_connector_config = staticmethod(file_connector_config)

"""Rows of a school-management cohort: schools, teachers, students with addresses, their marks and term results."""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from hub.demo.simulators.marks import (_TENTH, COMMENT_GRADED_SUBJECTS, TERM_1_MARKS, TERM_2_MARKS, _mark,
                                       _random_moment, _rating, _term_window)
from hub.demo.simulators.people import (BIRTH_PROVINCES, HAIPHONG_SCHOOLS, _birth, _exported_name, _mobile,
                                        _weighted, person_id, vietnamese_name)

HOME_PROVINCE = "31"  # Hải Phòng, after 1 July 2025
EMAIL_DOMAIN = "haiphong.edu.vn"

# Ethnic groups of Hải Phòng learners: almost all Kinh (01); Hoa (04), Tày (02), Mường (06),
# Nùng (07), Thái (03) and Sán Dìu (34) are the small minorities seen in the city's schools.
ETHNICITIES: dict[str, int] = {"01": 988, "04": 4, "02": 2, "06": 2, "07": 1, "03": 1, "34": 2}
HAIPHONG_STREETS = (
    "Lạch Tray", "Lê Lợi", "Trần Phú", "Điện Biên Phủ", "Tô Hiệu", "Văn Cao", "Cầu Đất",
    "Lê Thánh Tông", "Hai Bà Trưng", "Nguyễn Đức Cảnh", "Trần Nguyên Hãn", "Hùng Vương",
    "Đà Nẵng", "Lê Hồng Phong", "Ngô Quyền", "Thiên Lôi", "Nguyễn Văn Linh", "Trần Hưng Đạo",
    "Lý Thường Kiệt", "Hoàng Văn Thụ", "Phạm Văn Đồng", "Mạc Đăng Doanh",
)
HAMLETS = ("Thôn Đông", "Thôn Tây", "Thôn Nam", "Thôn Bắc", "Thôn Trung", "Thôn Thượng", "Thôn Hạ")
# Wards of the seeded schools: plausible places in the old urban districts and towns of the city
# for a realistic spread (not an official register); wards are current (from 1 July 2025).
SCHOOL_WARDS: dict[str, str] = {
    "31THPT001": "Phường Hải An",
    "31THPT002": "Phường Lê Chân",
    "31THPT003": "Phường Ngô Quyền",
    "31THPT004": "Phường Gia Viên",
    "31THPT005": "Phường An Biên",
    "31THPT006": "Phường Gia Viên",
    "31THPT007": "Phường Hồng Bàng",
    "31THPT008": "Phường Đông Hải",
    "31THPT009": "Phường Kiến An",
    "31THPT010": "Phường Thuỷ Nguyên",
    "31THPT011": "Xã Vĩnh Bảo",
    "31THPT012": "Phường An Biên",
}
# Ward codes from 11311 up are the former Hải Phòng; below, the former Hải Dương merged into it.
OLD_HAIPHONG_FIRST_WARD = "11311"
OLD_HAIPHONG_SHARE = 0.8
# A few learners live across the border (Quảng Ninh 22, Hưng Yên 33): valid, as the rules say.
OUTSIDE_PROVINCES = ("22", "33")
OUTSIDE_SHARE = 0.02
# Teachers' main subjects in the order a school staffs them, and a usual second subject.
TEACHER_SUBJECT_ORDER = (
    "MATH", "LITERATURE", "ENGLISH", "PHYSICS", "CHEMISTRY", "HISTORY", "GEOGRAPHY", "PE",
    "BIOLOGY", "INFORMATICS", "ECONOMICS_LAW", "TECHNOLOGY", "DEFENSE_EDU", "MUSIC", "FINE_ARTS",
    "LOCAL_EDU",
)
SECOND_SUBJECT = {"PE": "DEFENSE_EDU", "PHYSICS": "TECHNOLOGY", "HISTORY": "LOCAL_EDU",
                  "LITERATURE": "EXPERIENTIAL", "GEOGRAPHY": "EXPERIENTIAL"}


@lru_cache(maxsize=None)
def _wards(province: str) -> tuple[tuple[str, str], ...]:
    """(5-digit ward code, name) of a province after the 2025 merger, sorted by code."""
    from vietnam_provinces import Ward

    wards = [(f"{int(w.code):05d}", w.name) for w in Ward.iter_all() if int(w.province_code) == int(province)]
    if not wards:
        raise ValueError(f"no wards known for province {province!r}")
    return tuple(sorted(wards))


def _ascii_fold(text: str) -> str:
    """Vietnamese text without diacritics, as in e-mail addresses (Đặng → Dang)."""
    text = unicodedata.normalize("NFC", text).replace("Đ", "D").replace("đ", "d")
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))


class _CohortRows:
    """The row builders of `SchoolManagementDatabase`: each call draws one realistic row from `rng`.

    A base class of its own so the database's operations (seed, step, bad rows) read apart from
    how a single row is made up; `SchoolManagementDatabase.__init__` sets the attributes below.
    """

    rng: random.Random
    engine: sa.Engine
    tables: dict[str, sa.Table]
    school_year: str
    first_year: int
    _used_ids: set[str] | None

    def _num(self, value: Decimal | None) -> Any:
        """A decimal as the driver wants it (SQLite has no decimal type and warns about Decimal)."""
        if value is None or self.engine.dialect.name != "sqlite":
            return value
        return float(value)

    def _unique_person_id(self, conn: sa.Connection, birth: date, gender: str, province: str | None = None) -> str:
        if self._used_ids is None:
            st, te = self.tables["students"], self.tables["teachers"]
            self._used_ids = set(conn.execute(sa.select(st.c.student_id)).scalars())
            self._used_ids.update(conn.execute(sa.select(te.c.national_id)).scalars())
        while True:
            pid = person_id(self.rng, birth, gender, province or _weighted(self.rng, BIRTH_PROVINCES))
            if pid not in self._used_ids:
                self._used_ids.add(pid)
                return pid

    def _school_row(self, code: str) -> dict[str, Any]:
        rng = self.rng
        name = HAIPHONG_SCHOOLS[code]
        wards = _wards(HOME_PROVINCE)
        named = [w for w in wards if w[1] == SCHOOL_WARDS.get(code)]
        ward = named[0] if named else rng.choice([w for w in wards if w[0] >= OLD_HAIPHONG_FIRST_WARD])
        return {
            "school_code": code,
            "name": name,
            "levels": json.dumps(["UPPER_SECONDARY"]),
            "ownership": "PUBLIC",
            "province_code": HOME_PROVINCE,
            "ward_code": ward[0],
            "phone": _mobile(rng) if rng.random() < 0.7 else None,  # the rules take mobiles only
            "status": "ACTIVE",
        }

    def _teacher_row(self, conn: sa.Connection, code: str, index: int) -> dict[str, Any]:
        rng = self.rng
        gender = "FEMALE" if rng.random() < 0.7 else "MALE"  # about 70% of teachers are women
        birth = _birth(rng, self.first_year - rng.randint(23, 57))  # 23-57 at the start of the year
        name = vietnamese_name(rng, gender)
        main = TEACHER_SUBJECT_ORDER[index % len(TEACHER_SUBJECT_ORDER)]
        subjects = [main]
        if main in SECOND_SUBJECT and rng.random() < 0.4:
            subjects.append(SECOND_SUBJECT[main])
        parts = _ascii_fold(name).lower().split()
        local = parts[-1] + "".join(p[0] for p in parts[:-1])  # Nguyễn Thị Thu Hà → hantt
        return {
            "teacher_id": f"{code}GV{index + 1:03d}",
            "national_id": self._unique_person_id(conn, birth, gender),
            "full_name": _exported_name(rng, name),
            "date_of_birth": birth,
            "gender": gender,
            "school_code": code,
            "subjects": json.dumps(subjects),
            "phone": _mobile(rng) if rng.random() < 0.9 else None,
            "email": f"{local}.{code.lower()}@{EMAIL_DOMAIN}" if rng.random() < 0.85 else None,
            "status": "WORKING",
        }

    def _address(self) -> tuple[str, str, str | None]:
        rng = self.rng
        province = rng.choice(OUTSIDE_PROVINCES) if rng.random() < OUTSIDE_SHARE else HOME_PROVINCE
        wards = _wards(province)
        if province == HOME_PROVINCE and rng.random() < OLD_HAIPHONG_SHARE:
            wards = tuple(w for w in wards if w[0] >= OLD_HAIPHONG_FIRST_WARD)
        ward_code, ward_name = rng.choice(wards)
        street = None
        if rng.random() < 0.85:
            if ward_name.startswith("Phường"):
                street = f"Số {rng.randint(1, 250)} {rng.choice(HAIPHONG_STREETS)}"
            else:
                street = rng.choice(HAMLETS)
        return province, ward_code, street

    def _student_row(self, conn: sa.Connection, code: str, grade: int, class_name: str,
                     birth_year: int | None = None) -> dict[str, Any]:
        rng = self.rng
        gender = rng.choice(("MALE", "FEMALE"))
        if birth_year is None:
            # Most started grade 1 at six (age grade+5); a few a year or two later (held back).
            birth_year = self.first_year - grade - 5 - rng.choices((0, 1, 2), weights=(95, 4, 1))[0]
        birth = _birth(rng, birth_year)
        province, ward, street = self._address()
        return {
            "student_id": self._unique_person_id(conn, birth, gender),
            "full_name": _exported_name(rng, vietnamese_name(rng, gender)),
            "date_of_birth": birth,
            "gender": gender,
            "ethnicity_code": _weighted(rng, ETHNICITIES),
            "nationality": "VN",
            "school_code": code,
            "grade": grade,
            "class_name": class_name,
            "school_year": self.school_year,
            "address_province_code": province,
            "address_ward_code": ward,
            "address_street": street,
            "guardian_phone": _mobile(rng) if rng.random() < 0.92 else None,
            "status": "STUDYING",
        }

    def _teacher_of(self, teachers: Sequence[dict[str, Any]], subject: str) -> str | None:
        for teacher in teachers:
            if subject in json.loads(teacher["subjects"]):
                return teacher["teacher_id"]
        return None

    def _student_marks(self, student: dict[str, Any], subjects: Sequence[str],
                       teachers: Sequence[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rng = self.rng
        ability = min(9.8, max(3.0, rng.gauss(6.9, 1.1)))
        scores: list[dict[str, Any]] = []
        averages: list[Decimal] = []
        for term, marks in ((1, TERM_1_MARKS), (2, TERM_2_MARKS)):
            for subject in subjects:
                weighted, weights = Decimal(0), 0
                for kind, seq in marks:
                    start, end = _term_window(self.first_year, term, kind)
                    row = {
                        "student_id": student["student_id"],
                        "school_code": student["school_code"],
                        "school_year": self.school_year,
                        "term": term,
                        "subject": subject,
                        "kind": kind,
                        "seq": seq,
                        "score": None,
                        "pass_result": None,
                        "teacher_id": self._teacher_of(teachers, subject) if rng.random() < 0.95 else None,
                        "recorded_at": _random_moment(rng, start, end, cap=now),
                    }
                    if subject in COMMENT_GRADED_SUBJECTS:
                        row["pass_result"] = "PASS" if rng.random() < 0.97 else "FAIL"
                    else:
                        mark = _mark(rng, ability, kind)
                        row["score"] = self._num(mark)
                        weight = {"REGULAR": 1, "MIDTERM": 2, "FINAL": 3}[kind]
                        weighted += mark * weight
                        weights += weight
                    scores.append(row)
                if term == 1 and weights:
                    averages.append(weighted / weights)
        average = None
        if averages and rng.random() < 0.9:
            average = (sum(averages) / len(averages)).quantize(_TENTH, ROUND_HALF_UP)
        result = {
            "student_id": student["student_id"],
            "school_code": student["school_code"],
            "school_year": self.school_year,
            "term": "1",
            "learning_rating": _rating(average if average is not None else Decimal(repr(ability))),
            "conduct_rating": rng.choices(("TOT", "KHA", "DAT", "CHUA_DAT"), weights=(72, 22, 5, 1))[0],
            "average_score": self._num(average),
        }
        return scores, result

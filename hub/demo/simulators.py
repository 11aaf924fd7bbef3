"""Realistic synthetic records of the seed systems, for the demo and the tests.

One generator for every source system around the hub (data dictionary §4):

- `ExamRegistrationSimulator`: ingest envelopes of the exam registration system;
- `ExamRegistrationOutbox`: the same registrations written by that system into its own
  database with a transactional outbox (for the `outbox` connector);
- `SchoolManagementDatabase`: the school-management system (SMAS-like), a relational database
  of schools, classes, teachers, students, scores and term results (for the `sql` connector);
- `AdmissionPortal`: the online admission portal, pushing signed JSON over HTTP (`http`);
- `SchoolSpreadsheets`: schools' CSV/XLSX mark-book exports (`file`).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import hmac
import json
import random
import re
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:  # httpx is only needed by AdmissionPortal.post, which receives a client
    import httpx

__all__ = [
    "BAD_KINDS",
    "HAIPHONG_SCHOOLS",
    "SMAS_BAD_KINDS",
    "SMAS_TABLES",
    "SPREADSHEET_BAD_KINDS",
    "SPREADSHEET_SCORE_COLUMNS",
    "AdmissionPortal",
    "ExamRegistrationOutbox",
    "ExamRegistrationSimulator",
    "SchoolManagementDatabase",
    "SchoolSpreadsheets",
    "file_connector_config",
    "outbox_connector_config",
    "outbox_metadata",
    "person_id",
    "sign",
    "smas_connector_configs",
    "smas_metadata",
    "vietnamese_name",
]

# Vietnam keeps one offset all year (no daylight saving), so a fixed +07:00 is exact.
VN_TZ = timezone(timedelta(hours=7), "ICT")

# Upper secondary schools of Hải Phòng (codes in the ^[0-9A-Z]{2,12}$ pattern of school.school).
HAIPHONG_SCHOOLS: dict[str, str] = {
    "31THPT001": "Trường THPT chuyên Trần Phú",
    "31THPT002": "Trường THPT Trần Phú",
    "31THPT003": "Trường THPT Ngô Quyền",
    "31THPT004": "Trường THPT Thái Phiên",
    "31THPT005": "Trường THPT Lê Quý Đôn",
    "31THPT006": "Trường THPT Lê Hồng Phong",
    "31THPT007": "Trường THPT Hồng Bàng",
    "31THPT008": "Trường THPT Ngô Gia Tự",
    "31THPT009": "Trường THPT Kiến An",
    "31THPT010": "Trường THPT Thủy Sơn",
    "31THPT011": "Trường THPT Vĩnh Bảo",
    "31THPT012": "Trường THPT Nguyễn Trãi",
}

# What a broken envelope of the exam registration system can look like; one fault each.
BAD_KINDS: tuple[str, ...] = (
    "name_digit",  # a digit in full_name ("Nguyễn Văn An2", a de-duplication suffix)
    "national_id_gender_digit",  # G disagrees with gender
    "national_id_11_digits",  # Excel dropped the leading zero of the personal ID
    "three_electives",  # five subjects: MATH, LITERATURE and three electives
    "language_without_subject",  # foreign_language set, FOREIGN_LANGUAGE not registered
    "unknown_field",  # a misspelt top-level field ("evnet_id") next to the right one
    "event_id_not_uuid",  # the outbox row number instead of a UUID
    "occurred_at_no_offset",  # a local timestamp without its +07:00
)

ENTITY = "exam.registration"
CORE_SUBJECTS = ("MATH", "LITERATURE")
# Electives with rough weights from recent Hải Phòng registrations (history, geography and
# physics lead; the technology subjects are rare). FOREIGN_LANGUAGE is drawn separately.
ELECTIVE_WEIGHTS: dict[str, int] = {
    "PHYSICS": 22,
    "CHEMISTRY": 16,
    "BIOLOGY": 7,
    "HISTORY": 24,
    "GEOGRAPHY": 24,
    "ECONOMICS_LAW": 17,
    "INFORMATICS": 3,
    "TECH_INDUSTRIAL": 1,
    "TECH_AGRICULTURAL": 1,
}
EXAM_SUBJECTS = (*CORE_SUBJECTS, *ELECTIVE_WEIGHTS, "FOREIGN_LANGUAGE")
FOREIGN_LANGUAGE_SHARE = 0.6

# Pre-2025 province of birth registration (PPP of the personal ID). After the 2025 merger
# Hải Phòng includes old Hải Dương (030); neighbours send the rest.
BIRTH_PROVINCES: dict[str, int] = {
    "031": 70,  # Hải Phòng
    "030": 18,  # Hải Dương
    "034": 4,  # Thái Bình
    "022": 3,  # Quảng Ninh
    "001": 2,  # Hà Nội
    "033": 1,  # Hưng Yên
    "036": 1,  # Nam Định
    "038": 1,  # Thanh Hoá
}

FAMILY_NAMES: dict[str, int] = {
    "Nguyễn": 36, "Trần": 11, "Lê": 9, "Phạm": 8, "Hoàng": 4, "Vũ": 5, "Đặng": 2,
    "Bùi": 3, "Đỗ": 3, "Ngô": 2, "Dương": 1, "Lý": 1, "Đinh": 1, "Phan": 2, "Mạc": 1,
    "Lương": 1, "Trịnh": 1, "Hồ": 1, "Đoàn": 1, "Tô": 1,
}
MIDDLE_NAMES = {
    "MALE": ("Văn", "Đức", "Minh", "Hoàng", "Quang", "Hữu", "Thành", "Tuấn", "Gia", "Anh",
             "Mạnh", "Trung"),
    "FEMALE": ("Thị", "Thị", "Thị", "Ngọc", "Thu", "Minh", "Phương", "Thanh", "Khánh",
               "Bảo", "Hoài", "Diệu"),
}
GIVEN_NAMES = {
    "MALE": ("An", "Bình", "Dũng", "Đạt", "Đức", "Hải", "Hiếu", "Hùng", "Huy", "Khánh",
             "Kiên", "Long", "Minh", "Nam", "Phúc", "Quân", "Sơn", "Thắng", "Tuấn", "Việt",
             "Vinh", "Khôi", "Nghĩa", "Phong"),
    "FEMALE": ("An", "Anh", "Châu", "Hà", "Hằng", "Hương", "Khánh", "Lan", "Linh", "Mai",
               "Ngân", "Ngọc", "Nhung", "Phương", "Thảo", "Thủy", "Thuỷ", "Trang", "Uyên",
               "Vy", "Yến", "Hoà", "Giang", "My"),
}

CANDIDATE_TYPES: dict[str, int] = {
    "CURRENT_STUDENT": 85,
    "NOT_YET_GRADUATED": 5,
    "GRADUATED_FOR_ADMISSION": 7,
    "VOCATIONAL": 3,
}
FOREIGN_LANGUAGES: dict[str, int] = {"N1": 93, "N3": 2, "N4": 2, "N6": 2, "N7": 1}
# Island districts (Cát Hải, Bạch Long Vĩ) are KV1; the old rural districts KV2_NT.
PRIORITY_AREAS: dict[str, int] = {"KV1": 2, "KV2_NT": 18, "KV2": 38, "KV3": 42}
PRIORITY_GROUPS: dict[str, int] = {"01": 1, "02": 1, "03": 1, "04": 2, "05": 1, "06": 3, "07": 1}

SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(tuple(weights), weights=tuple(weights.values()))[0]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(VN_TZ).isoformat(timespec="seconds")


def person_id(rng: random.Random, birth: date, gender: str, province: str = "031") -> str:
    """A 12-digit personal ID `PPP G YY NNNNNN` that agrees with `birth` and `gender`.

    `province` is the 3-digit pre-2025 province code where the birth was registered.

    >>> pid = person_id(random.Random(1), date(2008, 3, 14), "FEMALE", "030")
    >>> len(pid), pid[:6]
    (12, '030308')
    """
    if not re.fullmatch(r"[0-9]{3}", province):
        raise ValueError(f"province must be a 3-digit pre-2025 province code, got {province!r}")
    if gender not in ("MALE", "FEMALE"):
        raise ValueError(f"gender must be MALE or FEMALE, got {gender!r}")
    if not 1900 <= birth.year <= 2199:
        raise ValueError(f"a personal ID encodes births 1900-2199, got {birth.year}")
    century_digit = 2 * ((birth.year - 1900) // 100) + (1 if gender == "FEMALE" else 0)
    return f"{province}{century_digit}{birth.year % 100:02d}{rng.randrange(1_000_000):06d}"


def vietnamese_name(rng: random.Random, gender: str) -> str:
    """A Vietnamese full name (family, middle, given) in NFC, consistent with `gender`.

    >>> name = vietnamese_name(random.Random(3), "FEMALE")
    >>> name == unicodedata.normalize("NFC", name) and len(name.split()) >= 3
    True
    """
    if gender not in ("MALE", "FEMALE"):
        raise ValueError(f"gender must be MALE or FEMALE, got {gender!r}")
    given = rng.choice(GIVEN_NAMES[gender])
    middles = [m for m in MIDDLE_NAMES[gender] if m != given]
    # About one in six carries two middle names ("Nguyễn Thị Thu Hà").
    count = 2 if rng.random() < 0.16 else 1
    chosen: list[str] = []
    while len(chosen) < count:
        middle = rng.choice(middles)
        if middle not in chosen:
            chosen.append(middle)
    return " ".join((_weighted(rng, FAMILY_NAMES), *chosen, given))


class ExamRegistrationSimulator:
    """Ingest envelopes of the exam registration system (đăng ký thi trực tuyến).

    Mostly creations of new registrations, some updates of an earlier one (school
    confirmation, a changed elective, a cancellation). With ``bad_ratio`` > 0 that share of
    envelopes is broken in exactly one way from `BAD_KINDS`; `last_bad_kind` tells which.
    Output is deterministic for a seed when ``now`` is passed too.

    >>> sim = ExamRegistrationSimulator(seed=7)
    >>> env = sim.envelope(now=datetime(2026, 6, 1, tzinfo=UTC))
    >>> env["entity"], env["key"] == env["data"]["registration_id"], sim.last_bad_kind
    ('exam.registration', True, None)
    >>> len(list(sim.envelopes(5, now=datetime(2026, 6, 1, tzinfo=UTC))))
    5
    """

    update_ratio = 0.1
    trace_ratio = 0.3
    double_space_ratio = 0.03
    exemption_ratio = 0.06  # of the English takers

    def __init__(
        self,
        seed: int | None = None,
        source: str = "exam-reg",
        exam_year: int = 2026,
        council_code: str = "03",
        bad_ratio: float = 0.0,
        nfd_ratio: float = 0.1,
    ) -> None:
        if not SOURCE_ID.fullmatch(source):
            raise ValueError(f"source {source!r} does not match {SOURCE_ID.pattern}")
        if not re.fullmatch(r"[0-9]{2}", council_code):
            raise ValueError(f"council_code must be 2 digits, got {council_code!r}")
        if not 1930 <= exam_year <= 2150:
            raise ValueError(f"exam_year out of range: {exam_year}")
        for name, ratio in (("bad_ratio", bad_ratio), ("nfd_ratio", nfd_ratio)):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{name} must lie in 0..1, got {ratio}")
        self.rng = random.Random(seed)
        self.source = source
        self.exam_year = exam_year
        self.council_code = council_code
        self.bad_ratio = bad_ratio
        self.nfd_ratio = nfd_ratio
        self.last_bad_kind: str | None = None
        self._used_ids: set[str] = set()
        # registration_id -> (last valid data sent, when it was sent); updates build on it.
        self._registrations: dict[str, tuple[dict[str, Any], datetime]] = {}
        # Registrations that may still be updated, kept as a list for an O(1) random pick.
        self._open: list[str] = []
        self._open_at: dict[str, int] = {}
        self._outbox_seq = 0

    def _close(self, registration_id: str) -> None:
        """Take a cancelled registration out of the open list (swap with the last: O(1))."""
        index = self._open_at.pop(registration_id, None)
        if index is None:
            return
        last = self._open.pop()
        if last != registration_id:
            self._open[index] = last
            self._open_at[last] = index

    # -- public API ---------------------------------------------------------------------

    def envelope(self, now: datetime | None = None) -> dict[str, Any]:
        """One ingest envelope (data dictionary §1); `occurred_at` is never after `now`."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        rng = self.rng
        self._outbox_seq += 1
        if self._open and rng.random() < self.update_ratio:
            op = "u"
            data, occurred = self._update(rng.choice(self._open), now)
        else:
            op = "c"
            data = self._registration(now)
            occurred = datetime.fromisoformat(data["registered_at"])
        registration_id = data["registration_id"]
        self._registrations[registration_id] = (copy.deepcopy(data), occurred)
        if data["status"] == "CANCELLED":
            self._close(registration_id)
        elif registration_id not in self._open_at:
            self._open_at[registration_id] = len(self._open)
            self._open.append(registration_id)

        envelope: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "source": self.source,
            "entity": ENTITY,
            "op": op,
            "key": data["registration_id"],
            "occurred_at": _rfc3339(occurred),
            "data": data,
        }
        if rng.random() < self.trace_ratio:
            envelope["trace_id"] = f"{rng.getrandbits(128):032x}"

        self.last_bad_kind = None
        if self.bad_ratio and rng.random() < self.bad_ratio:
            self.last_bad_kind = rng.choice(BAD_KINDS)
            self._spoil(envelope, self.last_bad_kind, occurred)
        return envelope

    def envelopes(self, n: int, now: datetime | None = None) -> Iterator[dict[str, Any]]:
        """`n` envelopes in a row (see `envelope`)."""
        for _ in range(n):
            yield self.envelope(now)

    # -- valid records ------------------------------------------------------------------

    def _registration(self, now: datetime) -> dict[str, Any]:
        rng = self.rng
        year = self.exam_year
        candidate_type = _weighted(rng, CANDIDATE_TYPES)
        gender = rng.choice(("MALE", "FEMALE"))
        birth_year = {
            "CURRENT_STUDENT": year - 18,
            "NOT_YET_GRADUATED": year - rng.randint(19, 24),
            "GRADUATED_FOR_ADMISSION": year - rng.randint(19, 23),
            "VOCATIONAL": year - rng.randint(18, 21),
        }[candidate_type]
        birth = date(birth_year, 1, 1) + timedelta(days=rng.randrange(365))

        if candidate_type == "GRADUATED_FOR_ADMISSION":
            count = rng.choices((1, 2, 3, 4), weights=(2, 3, 5, 4))[0]
            pool = list(EXAM_SUBJECTS)
            picked: set[str] = set()
            while len(picked) < count:
                picked.add(rng.choice(pool))
            subjects = [s for s in EXAM_SUBJECTS if s in picked]
        else:
            electives: list[str] = []
            if rng.random() < FOREIGN_LANGUAGE_SHARE:
                electives.append("FOREIGN_LANGUAGE")
            while len(electives) < 2:
                elective = _weighted(rng, ELECTIVE_WEIGHTS)
                if elective not in electives:
                    electives.append(elective)
            subjects = [*CORE_SUBJECTS, *(s for s in EXAM_SUBJECTS if s in electives)]

        foreign_language = None
        exemption, certificate = False, None
        if "FOREIGN_LANGUAGE" in subjects:
            foreign_language = _weighted(rng, FOREIGN_LANGUAGES)
            if foreign_language == "N1" and rng.random() < self.exemption_ratio:
                exemption = True
                expires = date(year, 6, 2) + timedelta(days=rng.randrange(600))
                certificate = {"kind": "IELTS", "expires_on": expires.isoformat()}

        # Only a current student belongs to a school; the others register on their own.
        school_code = rng.choice(tuple(HAIPHONG_SCHOOLS)) if candidate_type == "CURRENT_STUDENT" else None
        priority_group = None
        if rng.random() < 0.08:
            priority_group = _weighted(rng, PRIORITY_GROUPS)

        return {
            "registration_id": self._new_registration_id(),
            "exam_year": year,
            "council_code": self.council_code,
            "national_id": person_id(rng, birth, gender, _weighted(rng, BIRTH_PROVINCES)),
            "full_name": self._as_exported(vietnamese_name(rng, gender)),
            "date_of_birth": birth.isoformat(),
            "gender": gender,
            "candidate_type": candidate_type,
            "school_code": school_code,
            "subjects": subjects,
            "foreign_language": foreign_language,
            "language_exemption": exemption,
            "exemption_certificate": certificate,
            "priority_area": _weighted(rng, PRIORITY_AREAS),
            "priority_group": priority_group,
            "registered_at": _rfc3339(self._registration_time(now)),
            "status": "CONFIRMED" if rng.random() < 0.2 else "SUBMITTED",
        }

    def _update(self, registration_id: str, now: datetime) -> tuple[dict[str, Any], datetime]:
        rng = self.rng
        previous, previous_at = self._registrations[registration_id]
        data = copy.deepcopy(previous)
        change = rng.choices(("confirm", "elective", "cancel"), weights=(6, 3, 1))[0]
        if change == "confirm" and data["status"] == "SUBMITTED":
            data["status"] = "CONFIRMED"
        elif change == "cancel":
            data["status"] = "CANCELLED"
        elif data["candidate_type"] != "GRADUATED_FOR_ADMISSION":
            # Swap one non-language elective for another the candidate has not chosen.
            swappable = [s for s in data["subjects"][2:] if s != "FOREIGN_LANGUAGE"]
            choices = [s for s in ELECTIVE_WEIGHTS if s not in data["subjects"]]
            old, new = rng.choice(swappable), rng.choice(choices)
            chosen = (set(data["subjects"]) - {old}) | {new}
            data["subjects"] = [s for s in EXAM_SUBJECTS if s in chosen]
        else:
            data["priority_area"] = _weighted(rng, PRIORITY_AREAS)
        # Within three days of the previous change, never in the future.
        latest = min(previous_at + timedelta(days=3), now)
        span = max(0, int((latest - previous_at).total_seconds()))
        return data, min(previous_at + timedelta(seconds=rng.randint(0, span)), now)

    def _new_registration_id(self) -> str:
        if len(self._used_ids) >= 1_000_000:
            raise RuntimeError("all 10^6 registration numbers of this council and year are used")
        while True:
            rid = f"{self.exam_year}{self.council_code}{self.rng.randrange(1_000_000):06d}"
            if rid not in self._used_ids:
                self._used_ids.add(rid)
                return rid

    def _registration_time(self, now: datetime) -> datetime:
        # Online registration runs from late April to early May of the exam year; before
        # that window has passed, fall back to the last two weeks so nothing is in the future.
        start = datetime(self.exam_year, 4, 21, 7, 0, tzinfo=VN_TZ)
        end = min(datetime(self.exam_year, 5, 5, 17, 0, tzinfo=VN_TZ), now)
        if end <= start:
            start, end = now - timedelta(days=14), now
        return start + timedelta(seconds=self.rng.randint(0, int((end - start).total_seconds())))

    def _as_exported(self, name: str) -> str:
        """The name as a source system really sends it: sometimes NFD, a double space."""
        rng = self.rng
        if rng.random() < self.double_space_ratio:
            parts = name.split(" ")
            cut = rng.randrange(1, len(parts))
            name = " ".join(parts[:cut]) + "  " + " ".join(parts[cut:])
        if rng.random() < self.nfd_ratio:
            name = unicodedata.normalize("NFD", name)
        return name

    # -- broken envelopes ---------------------------------------------------------------

    def _spoil(self, envelope: dict[str, Any], kind: str, occurred: datetime) -> None:
        rng = self.rng
        data = envelope["data"]
        if kind == "name_digit":
            data["full_name"] = f"{data['full_name']}{rng.randint(1, 3)}"
        elif kind == "national_id_gender_digit":
            nid = data["national_id"]
            data["national_id"] = f"{nid[:3]}{int(nid[3]) ^ 1}{nid[4:]}"
        elif kind == "national_id_11_digits":
            nid = data["national_id"]
            # Excel reads "031..." as a number; a code without a leading zero loses a digit.
            data["national_id"] = nid[1:] if nid.startswith("0") else nid[:-1]
        elif kind == "three_electives":
            extra = [s for s in ELECTIVE_WEIGHTS if s not in data["subjects"]]
            rng.shuffle(extra)
            chosen = set(data["subjects"]) | set(extra[: 5 - len(data["subjects"])])
            data["subjects"] = [s for s in EXAM_SUBJECTS if s in chosen]
        elif kind == "language_without_subject":
            if "FOREIGN_LANGUAGE" in data["subjects"]:
                replacement = rng.choice([s for s in ELECTIVE_WEIGHTS if s not in data["subjects"]])
                chosen = (set(data["subjects"]) - {"FOREIGN_LANGUAGE"}) | {replacement}
                data["subjects"] = [s for s in EXAM_SUBJECTS if s in chosen]
                data["language_exemption"], data["exemption_certificate"] = False, None
            else:
                data["foreign_language"] = "N1"
        elif kind == "unknown_field":
            envelope["evnet_id"] = envelope["event_id"]
        elif kind == "event_id_not_uuid":
            envelope["event_id"] = str(self._outbox_seq)
        elif kind == "occurred_at_no_offset":
            local = occurred.astimezone(VN_TZ).replace(tzinfo=None)
            envelope["occurred_at"] = local.isoformat(sep=rng.choice("T "), timespec="seconds")
        else:  # pragma: no cover - BAD_KINDS and this chain are kept in step
            raise AssertionError(kind)


# =============================================================================================
# Shared helpers of the source-system simulators below.

SCHOOL_YEAR = "2025-2026"
HOME_PROVINCE = "31"  # Hải Phòng, after 1 July 2025
EMAIL_DOMAIN = "haiphong.edu.vn"

# Mobile prefixes in use (Viettel 03x/086/096-098, Vinaphone 08x/091/094, MobiFone 07x/089/090/093,
# Vietnamobile 056/058, Gmobile 059); weights roughly follow market shares.
MOBILE_PREFIXES: dict[str, int] = {
    "032": 4, "033": 4, "034": 4, "035": 4, "036": 4, "037": 4, "038": 4, "039": 4, "086": 4,
    "096": 5, "097": 6, "098": 6, "081": 2, "082": 2, "083": 2, "084": 2, "085": 2, "088": 2,
    "091": 4, "094": 3, "070": 2, "076": 1, "077": 2, "078": 1, "079": 1, "089": 2, "090": 4,
    "093": 3, "056": 1, "058": 1, "059": 1,
}
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
NFD_SHARE = 0.1

# School subjects (data dictionary §3) and how upper-secondary schools use them.
COMMENT_GRADED_SUBJECTS = frozenset(("PE", "ARTS", "MUSIC", "FINE_ARTS", "EXPERIENTIAL", "LOCAL_EDU"))
CORE_SCHOOL_SUBJECTS = ("MATH", "LITERATURE", "ENGLISH")
# Elective groups (tổ hợp môn lựa chọn) offered by Hải Phòng upper-secondary schools under the
# 2018 curriculum; a class studies one group.
ELECTIVE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("PHYSICS", "CHEMISTRY", "BIOLOGY", "INFORMATICS"),
    ("PHYSICS", "CHEMISTRY", "ECONOMICS_LAW", "INFORMATICS"),
    ("GEOGRAPHY", "ECONOMICS_LAW", "PHYSICS", "TECHNOLOGY"),
    ("GEOGRAPHY", "ECONOMICS_LAW", "CHEMISTRY", "INFORMATICS"),
)
# Teachers' main subjects in the order a school staffs them, and a usual second subject.
TEACHER_SUBJECT_ORDER = (
    "MATH", "LITERATURE", "ENGLISH", "PHYSICS", "CHEMISTRY", "HISTORY", "GEOGRAPHY", "PE",
    "BIOLOGY", "INFORMATICS", "ECONOMICS_LAW", "TECHNOLOGY", "DEFENSE_EDU", "MUSIC", "FINE_ARTS",
    "LOCAL_EDU",
)
SECOND_SUBJECT = {"PE": "DEFENSE_EDU", "PHYSICS": "TECHNOLOGY", "HISTORY": "LOCAL_EDU",
                  "LITERATURE": "EXPERIENTIAL", "GEOGRAPHY": "EXPERIENTIAL"}
# Marks per term and subject in the seeded cohort (Thông tư 22/2021): term 1 is complete,
# term 2 has begun.
TERM_1_MARKS = (("REGULAR", 1), ("REGULAR", 2), ("MIDTERM", 1), ("FINAL", 1))
TERM_2_MARKS = (("REGULAR", 1),)
REGULAR_PER_TERM = 3

_CENT = Decimal("0.01")
_TENTH = Decimal("0.1")


def _vn_wall(moment: datetime) -> datetime:
    """Naive local Vietnam time of an aware datetime, as the source databases store it."""
    return moment.astimezone(VN_TZ).replace(tzinfo=None)


def _local_rfc3339(naive_local: datetime) -> str:
    """RFC 3339 (+07:00) of a naive local Vietnam time, seconds precision."""
    return naive_local.replace(tzinfo=VN_TZ).isoformat(timespec="seconds")


class _Clock:
    """Naive local Vietnam time for created_at/updated_at that never repeats nor goes back."""

    def __init__(self) -> None:
        self.last: datetime | None = None

    def __call__(self) -> datetime:
        now = _vn_wall(datetime.now(UTC))
        if self.last is not None and now <= self.last:
            now = self.last + timedelta(microseconds=1)
        self.last = now
        return now


@lru_cache(maxsize=None)
def _wards(province: str) -> tuple[tuple[str, str], ...]:
    """(5-digit ward code, name) of a province after the 2025 merger, sorted by code."""
    from vietnam_provinces import Ward

    wards = [(f"{int(w.code):05d}", w.name) for w in Ward.iter_all() if int(w.province_code) == int(province)]
    if not wards:
        raise ValueError(f"no wards known for province {province!r}")
    return tuple(sorted(wards))


def _mobile(rng: random.Random) -> str:
    """A Vietnamese mobile number in the local form 0xxxxxxxxx."""
    return _weighted(rng, MOBILE_PREFIXES) + f"{rng.randrange(10_000_000):07d}"


def _exported_name(rng: random.Random, name: str, nfd_share: float = NFD_SHARE) -> str:
    """The name as a source system stores it: some decomposed (NFD, macOS/Excel), rarely a double space."""
    if rng.random() < 0.02:
        parts = name.split(" ")
        cut = rng.randrange(1, len(parts))
        name = " ".join(parts[:cut]) + "  " + " ".join(parts[cut:])
    if rng.random() < nfd_share:
        name = unicodedata.normalize("NFD", name)
    return name


def _ascii_fold(text: str) -> str:
    """Vietnamese text without diacritics, as in e-mail addresses (Đặng → Dang)."""
    text = unicodedata.normalize("NFC", text).replace("Đ", "D").replace("đ", "d")
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))


def _school_year_first(school_year: str) -> int:
    m = re.fullmatch(r"([0-9]{4})-([0-9]{4})", school_year)
    if m is None or int(m.group(2)) != int(m.group(1)) + 1:
        raise ValueError(f"school_year must be YYYY-YYYY with consecutive years, got {school_year!r}")
    return int(m.group(1))


def _random_moment(rng: random.Random, start: datetime, end: datetime, cap: datetime | None = None) -> datetime:
    """A moment between `start` and `end` during school hours (07:00-17:00), never after `cap`."""
    days = max(0, (end.date() - start.date()).days)
    day = start.date() + timedelta(days=rng.randint(0, days))
    moment = datetime(day.year, day.month, day.day, rng.randint(7, 16), rng.randrange(60), rng.randrange(60))
    if cap is not None and moment > cap:
        moment = cap
    return moment


def _birth(rng: random.Random, year: int) -> date:
    return date(year, 1, 1) + timedelta(days=rng.randrange(365))


def _mark(rng: random.Random, ability: float, kind: str) -> Decimal:
    """A mark 0-10: oral and 15-minute marks in halves, tests in tenths or quarter points."""
    raw = min(10.0, max(0.0, rng.gauss(ability, 1.1 if kind == "REGULAR" else 1.3)))
    if kind == "REGULAR" and rng.random() < 0.6:
        step = Decimal("0.5")
    elif rng.random() < 0.3:
        step = Decimal("0.25")  # multiple-choice tests
    else:
        step = _TENTH
    value = (Decimal(repr(raw)) / step).quantize(Decimal(1), ROUND_HALF_UP) * step
    return min(Decimal(10), value).quantize(_CENT)


def _term_window(first_year: int, term: int, kind: str) -> tuple[datetime, datetime]:
    """When marks of a kind are recorded in a term (the Hải Phòng school calendar)."""
    y1, y2 = first_year, first_year + 1
    windows = {
        (1, "REGULAR"): (datetime(y1, 9, 15), datetime(y1, 12, 20)),
        (1, "MIDTERM"): (datetime(y1, 10, 27), datetime(y1, 11, 8)),
        (1, "FINAL"): (datetime(y1, 12, 22), datetime(y2, 1, 8)),
        (2, "REGULAR"): (datetime(y2, 1, 19), datetime(y2, 4, 30)),
        (2, "MIDTERM"): (datetime(y2, 3, 9), datetime(y2, 3, 21)),
        (2, "FINAL"): (datetime(y2, 5, 4), datetime(y2, 5, 16)),
    }
    return windows[(term, kind)]


def _rating(average: Decimal | None) -> str:
    """Learning rating of a term from its average (Thông tư 22, simplified)."""
    if average is None:
        return "DAT"
    if average >= 8:
        return "TOT"
    if average >= Decimal("6.5"):
        return "KHA"
    if average >= 5:
        return "DAT"
    return "CHUA_DAT"


# =============================================================================================
# 1. The school-management system (SMAS-like): a relational database, read by the `sql` connector.

# Table → entity it holds, in the order rows are inserted (references first).
SMAS_TABLES: dict[str, str] = {
    "schools": "school.school",
    "teachers": "school.teacher",
    "classes": "school.class",
    "students": "school.student",
    "scores": "school.score",
    "term_results": "school.term_result",
}
# Entity fields stored under another column name (nested records are flattened).
SMAS_COLUMNS: dict[str, dict[str, str]] = {
    "students": {
        "address.province_code": "address_province_code",
        "address.ward_code": "address_ward_code",
        "address.street": "address_street",
    },
}
# Array fields, stored as JSON text in a TEXT column of the same name.
SMAS_JSON_COLUMNS: dict[str, list[str]] = {"schools": ["levels"], "teachers": ["subjects"]}

# What `SchoolManagementDatabase.bad_rows` inserts: kind → (table, the hub's rule it breaks).
SMAS_BAD_KINDS: dict[str, tuple[str, str]] = {
    "score_over_10": ("scores", "score.range"),  # 11.5, a typo for 1.5
    "score_for_comment_subject": ("scores", "score.grading_mode"),  # PE marked 8 instead of Đạt
    "midterm_seq_2": ("scores", "score.seq"),  # a second midterm mark
    "student_id_gender_digit": ("students", "national_id.gender_mismatch"),
    "student_too_old_for_grade": ("students", "student.age_for_grade"),
    "class_name_other_grade": ("students", "student.class_name"),  # grade 11 in class 10A1
    "ward_outside_province": ("students", "ward_code.province_mismatch"),  # Quảng Ninh ward, province 31
    "guardian_landline": ("students", "phone.format"),  # 0225 3xxx xxx, a Hải Phòng landline
    "teacher_subject_twice": ("teachers", "teacher.subjects"),
    "class_over_60": ("classes", "class.size_range"),
    "average_over_10": ("term_results", "term_result.average_range"),
}


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False, index=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
    ]


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def smas_metadata() -> sa.MetaData:
    """The school-management tables (SQLAlchemy Core), one per entity of §3, for SQLite and PostgreSQL.

    Columns are the entity's fields, except the student's address (three `address_*` columns)
    and arrays (JSON text). Every table also has `id` (autoincrement), `created_at`,
    `updated_at` (naive local Vietnam time) and `deleted_at` (soft delete).
    """
    md = sa.MetaData()
    opts = {"sqlite_autoincrement": True}  # SQLite never reuses an id: incrementing readers rely on it
    sa.Table(
        "schools", md, _id(),
        sa.Column("school_code", sa.String(12), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("levels", sa.Text(), nullable=False),
        sa.Column("ownership", sa.String(10), nullable=False),
        sa.Column("province_code", sa.String(2), nullable=False),
        sa.Column("ward_code", sa.String(5), nullable=False),
        sa.Column("phone", sa.String(20)),
        sa.Column("status", sa.String(10), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "teachers", md, _id(),
        sa.Column("teacher_id", sa.String(30), nullable=False, unique=True),
        sa.Column("national_id", sa.String(12), nullable=False),
        sa.Column("full_name", sa.String(120), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(6), nullable=False),
        sa.Column("school_code", sa.String(12), nullable=False, index=True),
        sa.Column("subjects", sa.Text(), nullable=False),
        sa.Column("phone", sa.String(20)),
        sa.Column("email", sa.String(254)),
        sa.Column("status", sa.String(12), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "classes", md, _id(),
        sa.Column("class_id", sa.String(40), nullable=False, unique=True),
        sa.Column("school_code", sa.String(12), nullable=False, index=True),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(10), nullable=False),
        sa.Column("homeroom_teacher_id", sa.String(30)),
        sa.Column("size", sa.Integer(), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "students", md, _id(),
        sa.Column("student_id", sa.String(12), nullable=False, unique=True),
        sa.Column("full_name", sa.String(120), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(6), nullable=False),
        sa.Column("ethnicity_code", sa.String(2), nullable=False),
        sa.Column("nationality", sa.String(2), nullable=False),
        sa.Column("school_code", sa.String(12), nullable=False, index=True),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(10), nullable=False),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("address_province_code", sa.String(2), nullable=False),
        sa.Column("address_ward_code", sa.String(5), nullable=False),
        sa.Column("address_street", sa.String(200)),
        sa.Column("guardian_phone", sa.String(20)),
        sa.Column("status", sa.String(12), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "scores", md, _id(),
        sa.Column("student_id", sa.String(12), nullable=False, index=True),
        sa.Column("school_code", sa.String(12), nullable=False),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("score", sa.Numeric(5, 2)),
        sa.Column("pass_result", sa.String(4)),
        sa.Column("teacher_id", sa.String(30)),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        *_stamps(),
        sa.UniqueConstraint("student_id", "school_year", "term", "subject", "kind", "seq", name="scores_key"),
        **opts,
    )
    sa.Table(
        "term_results", md, _id(),
        sa.Column("student_id", sa.String(12), nullable=False, index=True),
        sa.Column("school_code", sa.String(12), nullable=False),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("term", sa.String(4), nullable=False),
        sa.Column("learning_rating", sa.String(8), nullable=False),
        sa.Column("conduct_rating", sa.String(8), nullable=False),
        # One decimal place, as the entity: a NUMERIC(5,2) would hand 7.30 to the hub, which
        # rejects more than one decimal place for average_score.
        sa.Column("average_score", sa.Numeric(4, 1)),
        *_stamps(),
        sa.UniqueConstraint("student_id", "school_year", "term", name="term_results_key"),
        **opts,
    )
    return md


def smas_connector_configs(url: str, source: str = "smas") -> list[dict[str, Any]]:
    """The hub.yaml `connectors:` entries (kind `sql`) reading a `SchoolManagementDatabase`, one per table.

    >>> configs = smas_connector_configs("sqlite:///smas.db")
    >>> [c["name"] for c in configs][-2:], configs[3]["columns"]["address.ward_code"]
    (['smas-scores', 'smas-term-results'], 'address_ward_code')
    """
    return [
        {
            "name": f"{source}-{table.replace('_', '-')}",
            "kind": "sql",
            "source": source,
            "url": url,
            "table": table,
            "entity": entity,
            "timestamp_column": "updated_at",
            "incrementing_column": "id",
            "created_column": "created_at",
            "soft_delete_column": "deleted_at",
            "columns": dict(SMAS_COLUMNS.get(table, {})),
            "json_columns": list(SMAS_JSON_COLUMNS.get(table, [])),
        }
        for table, entity in SMAS_TABLES.items()
    ]


class SchoolManagementDatabase:
    """The school-management system (SMAS-like) of a cluster of Hải Phòng upper-secondary schools.

    `seed` fills the six tables with a realistic cohort; `step` makes the changes of a school
    day (new marks mostly, corrections, a transfer, a mark deleted by mistake); `bad_rows`
    inserts rows the hub must reject (`SMAS_BAD_KINDS`). Rows keep `created_at`/`updated_at`
    in naive local Vietnam time and are soft-deleted through `deleted_at`, which is what the
    `sql` connector reads (`smas_connector_configs`). Row contents are deterministic for a
    seed; the timestamps are the real time of writing.

    >>> smas = SchoolManagementDatabase("sqlite://", seed=1)
    >>> smas.create_schema()
    >>> smas.seed(schools=1, classes_per_school=3, students_per_class=5, teachers_per_school=4)["students"]
    15
    >>> changes = smas.step(5)
    >>> len(changes), all(table in SMAS_TABLES for table, op in changes)
    (5, True)
    """

    connector_configs = staticmethod(smas_connector_configs)

    def __init__(self, url: str, seed: int | None = None, school_year: str = SCHOOL_YEAR) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.school_year = school_year
        self.first_year = _school_year_first(school_year)
        self.engine = sa.create_engine(url)
        self.metadata = smas_metadata()
        self.tables: dict[str, sa.Table] = dict(self.metadata.tables)
        self._clock = _Clock()
        self._used_ids: set[str] | None = None
        self._bad_done = 0

    # -- schema and counts ------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the six tables (existing ones are kept)."""
        self.metadata.create_all(self.engine)

    def count(self, table: str, include_deleted: bool = True) -> int:
        """Rows in `table`; soft-deleted ones too unless `include_deleted` is false."""
        t = self._table(table)
        query = sa.select(sa.func.count()).select_from(t)
        if not include_deleted:
            query = query.where(t.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _table(self, name: str) -> sa.Table:
        try:
            return self.tables[name]
        except KeyError:
            raise ValueError(f"unknown table {name!r}; one of {', '.join(self.tables)}") from None

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

    # -- the cohort --------------------------------------------------------------------------

    def seed(self, schools: int = 5, classes_per_school: int = 4, students_per_class: int = 30,
             teachers_per_school: int = 8) -> dict[str, int]:
        """Insert a cohort: schools from `HAIPHONG_SCHOOLS`, their teachers, classes 10A1..12An,
        students of the right age, marks of term 1 (and the first of term 2) and term-1 results.
        Returns the rows inserted per table."""
        if not 1 <= schools <= len(HAIPHONG_SCHOOLS):
            raise ValueError(f"schools must be 1-{len(HAIPHONG_SCHOOLS)}, got {schools}")
        if classes_per_school < 1 or teachers_per_school < 1:
            raise ValueError("classes_per_school and teachers_per_school must be at least 1")
        if not 0 <= students_per_class <= 60:
            raise ValueError(f"students_per_class must be 0-60 (the class size rule), got {students_per_class}")
        self.create_schema()
        if self.count("schools"):
            raise RuntimeError("the database is already seeded; use step() for further changes")
        rng = self.rng
        now = self._clock()
        stamps = {"created_at": now, "updated_at": now, "deleted_at": None}
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in SMAS_TABLES}
        with self.engine.begin() as conn:
            for code in sorted(rng.sample(sorted(HAIPHONG_SCHOOLS), schools)):
                rows["schools"].append({**self._school_row(code), **stamps})
                teachers = [self._teacher_row(conn, code, i) for i in range(teachers_per_school)]
                rows["teachers"].extend({**t, **stamps} for t in teachers)
                for i in range(classes_per_school):
                    grade, number = 10 + i % 3, i // 3 + 1
                    name = f"{grade}A{number}"
                    rows["classes"].append({
                        "class_id": f"{code}-{self.school_year}-{name}",
                        "school_code": code,
                        "school_year": self.school_year,
                        "grade": grade,
                        "name": name,
                        "homeroom_teacher_id": teachers[i % len(teachers)]["teacher_id"],
                        "size": students_per_class,
                        **stamps,
                    })
                    group = ELECTIVE_GROUPS[(number + grade) % len(ELECTIVE_GROUPS)]
                    subjects = (*CORE_SCHOOL_SUBJECTS, group[0], "PE")
                    for _ in range(students_per_class):
                        student = self._student_row(conn, code, grade, name)
                        rows["students"].append({**student, **stamps})
                        scores, result = self._student_marks(student, subjects, teachers, now)
                        rows["scores"].extend({**s, **stamps} for s in scores)
                        rows["term_results"].append({**result, **stamps})
            for table, table_rows in rows.items():
                if table_rows:
                    conn.execute(self.tables[table].insert(), table_rows)
        return {table: len(table_rows) for table, table_rows in rows.items()}

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

    # -- a school day of changes -------------------------------------------------------------

    def step(self, n: int = 10) -> list[tuple[str, str]]:
        """Make `n` changes, each in its own transaction, with `updated_at` set to now.

        Mostly new marks, some corrected marks, now and then a student transferring to another
        school (status TRANSFERRED) and rarely a mark soft-deleted (entered by mistake).
        Returns (table, op) per change, op being c, u or d (a soft delete).
        """
        if not self.count("students"):
            raise RuntimeError("nothing to change: seed() the database first")
        changes = []
        for _ in range(n):
            change = self.rng.choices(("new_score", "update_score", "transfer", "delete_score"),
                                      weights=(68, 20, 7, 5))[0]
            with self.engine.begin() as conn:
                done = getattr(self, "_" + change)(conn)
                if done is None:  # nothing to transfer or correct any more: a new mark instead
                    done = self._new_score(conn)
            changes.append(done)
        return changes

    def _studying(self, conn: sa.Connection) -> list[Any]:
        st = self.tables["students"]
        return list(conn.execute(
            sa.select(st.c.id, st.c.student_id, st.c.school_code, st.c.grade, st.c.class_name)
            .where(st.c.deleted_at.is_(None), st.c.status == "STUDYING").order_by(st.c.id)
        ))

    def _next_seq(self, conn: sa.Connection, student_id: str, term: int, subject: str, kind: str) -> int:
        sc = self.tables["scores"]
        top = conn.execute(
            sa.select(sa.func.max(sc.c.seq)).where(
                sc.c.student_id == student_id, sc.c.school_year == self.school_year, sc.c.term == term,
                sc.c.subject == subject, sc.c.kind == kind)
        ).scalar_one()
        return (top or 0) + 1

    def _new_score(self, conn: sa.Connection) -> tuple[str, str]:
        rng = self.rng
        sc, te = self.tables["scores"], self.tables["teachers"]
        studying = self._studying(conn)
        if not studying:
            raise RuntimeError("no student is studying any more: nothing to mark")
        student = rng.choice(studying)
        previous = list(conn.execute(
            sa.select(sc.c.subject, sc.c.term, sc.c.kind, sc.c.score)
            .where(sc.c.student_id == student.student_id, sc.c.school_year == self.school_year)
            .order_by(sc.c.id)
        ))
        subjects = sorted({p.subject for p in previous}) or list(CORE_SCHOOL_SUBJECTS)
        subject = rng.choice(subjects)
        term = 2
        kinds = [p.kind for p in previous if p.term == term and p.subject == subject]
        if kinds.count("REGULAR") < REGULAR_PER_TERM:
            kind = "REGULAR"
        elif "MIDTERM" not in kinds:
            kind = "MIDTERM"
        elif "FINAL" not in kinds:
            kind = "FINAL"
        else:
            kind = "REGULAR"
        seq = self._next_seq(conn, student.student_id, term, subject, kind) if kind == "REGULAR" else 1
        marks = [float(p.score) for p in previous if p.score is not None]
        ability = sum(marks) / len(marks) if marks else 6.9
        teacher = None
        for row in conn.execute(sa.select(te.c.teacher_id, te.c.subjects)
                                .where(te.c.school_code == student.school_code, te.c.deleted_at.is_(None))
                                .order_by(te.c.id)):
            if subject in json.loads(row.subjects):
                teacher = row.teacher_id
                break
        now = self._clock()
        comment = subject in COMMENT_GRADED_SUBJECTS
        conn.execute(sc.insert().values(
            student_id=student.student_id, school_code=student.school_code, school_year=self.school_year,
            term=term, subject=subject, kind=kind, seq=seq,
            score=None if comment else self._num(_mark(rng, ability, kind)),
            pass_result=("PASS" if rng.random() < 0.97 else "FAIL") if comment else None,
            teacher_id=teacher, recorded_at=now, created_at=now, updated_at=now, deleted_at=None,
        ))
        return ("scores", "c")

    def _live_score_ids(self, conn: sa.Connection) -> list[int]:
        sc = self.tables["scores"]
        return list(conn.execute(sa.select(sc.c.id).where(sc.c.deleted_at.is_(None)).order_by(sc.c.id)).scalars())

    def _update_score(self, conn: sa.Connection) -> tuple[str, str] | None:
        rng = self.rng
        sc = self.tables["scores"]
        ids = self._live_score_ids(conn)
        if not ids:
            return None
        row = conn.execute(sa.select(sc).where(sc.c.id == rng.choice(ids))).one()
        now = self._clock()
        if row.score is not None:
            # A correction: a mark mistyped or re-marked after an appeal, by a quarter to one point.
            delta = Decimal(rng.choice(("-1", "-0.5", "-0.25", "0.25", "0.5", "1")))
            new = min(Decimal(10), max(Decimal(0), Decimal(str(row.score)) + delta)).quantize(_CENT)
            if new == Decimal(str(row.score)).quantize(_CENT):
                new = (new - delta).quantize(_CENT)
            values: dict[str, Any] = {"score": self._num(new)}
        else:
            values = {"pass_result": "FAIL" if row.pass_result == "PASS" else "PASS"}
        conn.execute(sc.update().where(sc.c.id == row.id).values(**values, recorded_at=now, updated_at=now))
        return ("scores", "u")

    def _transfer(self, conn: sa.Connection) -> tuple[str, str] | None:
        st = self.tables["students"]
        studying = self._studying(conn)
        everyone = conn.execute(sa.select(sa.func.count()).select_from(st).where(st.c.deleted_at.is_(None))).scalar()
        # Transfers stop at half the cohort: a long-running demo must keep students to mark.
        if len(studying) <= (everyone or 0) // 2:
            return None
        student = self.rng.choice(studying)
        conn.execute(st.update().where(st.c.id == student.id).values(status="TRANSFERRED", updated_at=self._clock()))
        return ("students", "u")

    def _delete_score(self, conn: sa.Connection) -> tuple[str, str] | None:
        sc = self.tables["scores"]
        ids = self._live_score_ids(conn)
        if not ids:
            return None
        now = self._clock()
        conn.execute(sc.update().where(sc.c.id == self.rng.choice(ids)).values(deleted_at=now, updated_at=now))
        return ("scores", "d")

    # -- rows the hub must reject ------------------------------------------------------------

    def bad_rows(self, n: int, kinds: Sequence[str] | None = None) -> list[tuple[str, int, str]]:
        """Insert `n` invalid rows, each breaking exactly one rule; kinds cycle through
        `SMAS_BAD_KINDS` (or `kinds`). Returns (table, row id, rule id the hub reports)."""
        chosen = list(kinds) if kinds is not None else list(SMAS_BAD_KINDS)
        for kind in chosen:
            if kind not in SMAS_BAD_KINDS:
                raise ValueError(f"unknown bad kind {kind!r}; one of {', '.join(SMAS_BAD_KINDS)}")
        if not self.count("students"):
            raise RuntimeError("seed() the database first: bad rows refer to its schools and students")
        out = []
        for _ in range(n):
            kind = chosen[self._bad_done % len(chosen)]
            self._bad_done += 1
            table, rule = SMAS_BAD_KINDS[kind]
            with self.engine.begin() as conn:
                row = self._bad_row(conn, kind)
                now = self._clock()
                row.update(created_at=now, updated_at=now, deleted_at=None)
                row_id = conn.execute(self.tables[table].insert().values(**row)).inserted_primary_key[0]
            out.append((table, int(row_id), rule))
        return out

    def _bad_row(self, conn: sa.Connection, kind: str) -> dict[str, Any]:
        rng = self.rng
        cl = self.tables["classes"]
        if kind in ("score_over_10", "score_for_comment_subject", "midterm_seq_2"):
            student = rng.choice(self._studying(conn))
            subject = "PE" if kind == "score_for_comment_subject" else "MATH"
            item = "MIDTERM" if kind == "midterm_seq_2" else "REGULAR"
            seq = self._next_seq(conn, student.student_id, 2, subject, item)
            return {
                "student_id": student.student_id, "school_code": student.school_code,
                "school_year": self.school_year, "term": 2, "subject": subject, "kind": item,
                "seq": max(seq, 2) if item == "MIDTERM" else seq,
                "score": self._num(Decimal("11.5") if kind == "score_over_10" else Decimal("8")),
                "pass_result": None, "teacher_id": None, "recorded_at": self._clock(),
            }
        if kind == "average_over_10":
            tr = self.tables["term_results"]
            taken = {(r.student_id, r.term) for r in conn.execute(sa.select(tr.c.student_id, tr.c.term))}
            studying = self._studying(conn)
            for student in rng.sample(studying, k=len(studying)):
                for term in ("2", "YEAR"):
                    if (student.student_id, term) not in taken:
                        return {
                            "student_id": student.student_id, "school_code": student.school_code,
                            "school_year": self.school_year, "term": term, "learning_rating": "TOT",
                            "conduct_rating": "TOT", "average_score": self._num(Decimal("10.5")),
                        }
            raise RuntimeError("every studying student has all term results: no room for a bad one")
        klass = rng.choice(list(conn.execute(sa.select(cl).where(cl.c.deleted_at.is_(None)).order_by(cl.c.id))))
        if kind == "class_over_60":
            names = set(conn.execute(sa.select(cl.c.name).where(cl.c.school_code == klass.school_code)).scalars())
            number = next(k for k in range(1, 100) if f"{klass.grade}A{k}" not in names)
            name = f"{klass.grade}A{number}"
            return {
                "class_id": f"{klass.school_code}-{self.school_year}-{name}", "school_code": klass.school_code,
                "school_year": self.school_year, "grade": klass.grade, "name": name,
                "homeroom_teacher_id": None, "size": rng.randint(61, 68),
            }
        if kind == "teacher_subject_twice":
            te = self.tables["teachers"]
            ids = set(conn.execute(sa.select(te.c.teacher_id).where(te.c.school_code == klass.school_code)).scalars())
            number = next(k for k in range(1, 10_000) if f"{klass.school_code}GV{k:03d}" not in ids)
            row = self._teacher_row(conn, klass.school_code, number - 1)
            main = json.loads(row["subjects"])[0]
            row["subjects"] = json.dumps([main, main])
            return row
        # The student kinds: a new learner of an existing class, wrong in one way.
        if kind == "student_too_old_for_grade":
            row = self._student_row(conn, klass.school_code, klass.grade, klass.name,
                                    birth_year=self.first_year - klass.grade - rng.randint(10, 12))
        else:
            row = self._student_row(conn, klass.school_code, klass.grade, klass.name)
        if kind == "student_id_gender_digit":
            pid = row["student_id"]
            row["student_id"] = f"{pid[:3]}{int(pid[3]) ^ 1}{pid[4:]}"
        elif kind == "class_name_other_grade":
            other = rng.choice([g for g in (10, 11, 12) if g != klass.grade])
            row["class_name"] = f"{other}A{rng.randint(1, 4)}"
        elif kind == "ward_outside_province":
            row["address_province_code"] = HOME_PROVINCE
            row["address_ward_code"] = rng.choice(_wards("22"))[0]  # Quảng Ninh
        elif kind == "guardian_landline":
            row["guardian_phone"] = f"02253{rng.randrange(1_000_000):06d}"
        return row


# =============================================================================================
# 2. The exam registration system writing a transactional outbox (Debezium's outbox columns).


def outbox_metadata() -> sa.MetaData:
    """The exam registration system's own `registrations` table and its `outbox` table."""
    md = sa.MetaData()
    sa.Table(
        "registrations", md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("registration_id", sa.String(20), nullable=False, unique=True),
        sa.Column("exam_year", sa.Integer(), nullable=False),
        sa.Column("council_code", sa.String(2), nullable=False),
        sa.Column("national_id", sa.String(12), nullable=False),
        sa.Column("full_name", sa.String(120), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(6), nullable=False),
        sa.Column("candidate_type", sa.String(30), nullable=False),
        sa.Column("school_code", sa.String(12)),
        sa.Column("subjects", sa.Text(), nullable=False),  # JSON text
        sa.Column("foreign_language", sa.String(2)),
        sa.Column("language_exemption", sa.Boolean(), nullable=False),
        sa.Column("exemption_certificate", sa.Text()),  # JSON text {"kind", "expires_on"}
        sa.Column("priority_area", sa.String(6), nullable=False),
        sa.Column("priority_group", sa.String(2)),
        sa.Column("registered_at", sa.DateTime(), nullable=False),  # naive local Vietnam time
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "outbox", md,
        sa.Column("id", sa.Text(), primary_key=True),  # a UUID
        sa.Column("seq", sa.Integer(), nullable=False, unique=True),  # write order
        sa.Column("aggregatetype", sa.Text(), nullable=False),
        sa.Column("aggregateid", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True, index=True),
    )
    return md


def outbox_connector_config(url: str, source: str = "exam-reg", name: str = "exam-outbox") -> dict[str, Any]:
    """The hub.yaml `connectors:` entry (kind `outbox`) reading an `ExamRegistrationOutbox`.

    >>> outbox_connector_config("sqlite:///exam.db")["published_column"]
    'published_at'
    """
    return {
        "name": name,
        "kind": "outbox",
        "source": source,
        "url": url,
        "table": "outbox",
        "published_column": "published_at",
        "occurred_column": "created_at",
    }


class ExamRegistrationOutbox:
    """The exam registration system (đăng ký thi trực tuyến) writing through a transactional outbox.

    Each `submit`ted change writes the `registrations` row and its `outbox` row in ONE
    transaction (the outbox pattern): the outbox row carries the registration exactly in the
    dictionary's JSON form (`payload`), the entity (`aggregatetype`), its key (`aggregateid`)
    and the op (`type`); `seq` orders the rows. The data come from `ExamRegistrationSimulator`
    (creations mostly, some updates); its broken envelopes are skipped unless `include_bad`.

    >>> exam = ExamRegistrationOutbox("sqlite://", seed=2)
    >>> exam.create_schema()
    >>> changes = exam.submit(3)
    >>> len(changes), exam.count("outbox"), exam.count("registrations") == sum(op == "c" for _, op in changes)
    (3, 3, True)
    """

    connector_config = staticmethod(outbox_connector_config)

    def __init__(self, url: str, seed: int | None = None, council_code: str = "03", exam_year: int = 2026,
                 bad_ratio: float = 0.0) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.metadata = outbox_metadata()
        self.tables: dict[str, sa.Table] = dict(self.metadata.tables)
        self.simulator = ExamRegistrationSimulator(seed=seed, council_code=council_code, exam_year=exam_year,
                                                   bad_ratio=bad_ratio)
        self._clock = _Clock()

    def create_schema(self) -> None:
        """Create `registrations` and `outbox` (existing tables are kept)."""
        self.metadata.create_all(self.engine)

    def count(self, table: str) -> int:
        if table not in self.tables:
            raise ValueError(f"unknown table {table!r}; one of {', '.join(self.tables)}")
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.tables[table])).scalar_one())

    def submit(self, n: int, include_bad: bool = False) -> list[tuple[str, str]]:
        """Write `n` registration changes, each in one transaction with its outbox row.
        Returns (registration_id, op) per change."""
        if self.simulator.bad_ratio >= 1.0 and not include_bad:
            raise ValueError("with bad_ratio 1.0 every registration is broken: pass include_bad=True")
        done: list[tuple[str, str]] = []
        while len(done) < n:
            envelope = self.simulator.envelope(datetime.now(UTC))
            if self.simulator.last_bad_kind is not None and not include_bad:
                continue
            op = self._write(envelope["op"], envelope["key"], envelope["data"], envelope["event_id"])
            done.append((envelope["key"], op))
        return done

    def _write(self, op: str, key: str, data: dict[str, Any], outbox_id: str) -> str:
        """Write the registration and its outbox row in one transaction; returns the op written."""
        reg, outbox = self.tables["registrations"], self.tables["outbox"]
        now = self._clock()
        with self.engine.begin() as conn:
            values = self._registration_columns(data)
            if op != "c":
                updated = conn.execute(reg.update().where(reg.c.registration_id == key)
                                       .values(**values, updated_at=now)).rowcount
                if not updated:  # the creation was a skipped bad envelope: this is the first write
                    op = "c"
            if op == "c":
                conn.execute(reg.insert().values(**values, created_at=now, updated_at=now))
            seq = (conn.execute(sa.select(sa.func.max(outbox.c.seq))).scalar_one() or 0) + 1
            conn.execute(outbox.insert().values(
                id=outbox_id, seq=seq, aggregatetype=ENTITY, aggregateid=key, type=op,
                payload=json.dumps(data, ensure_ascii=False), created_at=now, published_at=None,
            ))
        return op

    def publish_results(self, n: int) -> list[str]:
        """Publish exam results (exam.result) of `n` registered candidates through the same outbox.

        Scores are realistic (a few weak candidates fail); `passed` follows the rule of the
        dictionary: every score above 1.0 and a graduation score of at least 5.0. Returns the keys.
        """
        rng = self.simulator.rng
        reg, outbox = self.tables["registrations"], self.tables["outbox"]
        keys: list[str] = []
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(reg.c.national_id, reg.c.subjects, reg.c.exam_year)
                                .order_by(sa.func.random()).limit(n)).all()
            seq = conn.execute(sa.select(sa.func.max(outbox.c.seq))).scalar_one() or 0
            now = self._clock()
            for national_id, subjects, exam_year in rows:
                ability = rng.uniform(3.0, 9.5)
                scores = {s: round(min(10.0, max(0.0, rng.gauss(ability, 1.2))) * 4) / 4 for s in json.loads(subjects)}
                graduation = round(sum(scores.values()) / len(scores), 2)
                candidate = f"{self.simulator.council_code}{rng.randrange(10**6):06d}"
                key = f"{exam_year}|{candidate}"
                payload = {"exam_year": exam_year, "candidate_number": candidate, "national_id": national_id,
                           "scores": {s: f"{v:.2f}" for s, v in scores.items()},
                           "graduation_score": f"{graduation:.2f}",
                           "passed": all(v > 1.0 for v in scores.values()) and graduation >= 5.0}
                seq += 1
                conn.execute(outbox.insert().values(
                    id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), seq=seq, aggregatetype="exam.result",
                    aggregateid=key, type="c", payload=json.dumps(payload), created_at=now, published_at=None))
                keys.append(key)
        return keys

    @staticmethod
    def _registration_columns(data: dict[str, Any]) -> dict[str, Any]:
        values = dict(data)
        values["date_of_birth"] = date.fromisoformat(data["date_of_birth"])
        values["registered_at"] = _vn_wall(datetime.fromisoformat(data["registered_at"]))
        values["subjects"] = json.dumps(data["subjects"])
        certificate = data.get("exemption_certificate")
        values["exemption_certificate"] = json.dumps(certificate) if certificate is not None else None
        return values


# =============================================================================================
# 3. The online admission portal (tuyển sinh trực tuyến), pushing signed JSON over HTTP.

HEADER_TIMESTAMP = "X-EduHub-Timestamp"
HEADER_SIGNATURE = "X-EduHub-Signature"

ADMISSION_LEVELS: dict[str, int] = {"GRADE_10": 5, "GRADE_6": 3, "GRADE_1": 2}
LEVEL_GRADE = {"GRADE_1": 1, "GRADE_6": 6, "GRADE_10": 10}
LEVEL_AGE = {"GRADE_1": 6, "GRADE_6": 11, "GRADE_10": 15}
# Hải Phòng's primary (TH) and lower-secondary (THCS) schools, by code.
HAIPHONG_PRIMARY = tuple(f"31TH{n:03d}" for n in range(1, 61))
HAIPHONG_LOWER_SECONDARY = tuple(f"31THCS{n:03d}" for n in range(1, 41))
SPECIALIZED_SCHOOL = "31THPT001"  # THPT chuyên Trần Phú
SPECIALIZED_SUBJECTS = ("MATH", "LITERATURE", "ENGLISH", "PHYSICS", "CHEMISTRY", "BIOLOGY", "INFORMATICS",
                        "HISTORY", "GEOGRAPHY")
PRIORITY_POINTS: dict[str, int] = {"0": 88, "1.0": 5, "1.5": 4, "2.0": 3}
ENCOURAGEMENT_POINTS: dict[str, int] = {"0": 85, "0.5": 7, "1.0": 6, "1.5": 2}
# Submission and publication windows of the 2026-style calendar, (month, day) pairs.
SUBMISSION_WINDOW = {"GRADE_10": ((4, 20), (5, 10)), "GRADE_6": ((7, 1), (7, 10)), "GRADE_1": ((7, 11), (7, 20))}
PUBLICATION_WINDOW = {"GRADE_10": ((6, 25), (7, 1)), "GRADE_6": ((7, 15), (7, 20)), "GRADE_1": ((7, 25), (7, 30))}


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-EduHub-Signature` value: "sha256=" and the hex HMAC-SHA256 of "<timestamp>." + body.

    >>> sign(b"k", 1767225600, b"[]")[:7]
    'sha256='
    """
    return "sha256=" + hmac.new(secret, f"{int(timestamp)}.".encode() + body, hashlib.sha256).hexdigest()


class AdmissionPortal:
    """The online admission portal: applications to grades 1, 6 and 10 and, later, their results,
    as ingest envelopes it POSTs to the hub's HTTP connector, signed with HMAC-SHA256.

    Event ids and contents are deterministic for a seed (times are capped at now).

    >>> portal = AdmissionPortal("http://127.0.0.1:6066", b"secret", seed=4)
    >>> apps = portal.applications(3)
    >>> [e["entity"] for e in apps] + [e["entity"] for e in portal.results(1)]
    ['enrollment.application', 'enrollment.application', 'enrollment.application', 'enrollment.result']

    Sending (needs the hub)::

        async with httpx.AsyncClient() as client:
            response = await portal.post(apps, client)  # 202 once Kafka holds them
    """

    def __init__(self, url: str, secret: bytes, source: str = "admission-portal", seed: int | None = None,
                 admission_year: int = 2026) -> None:
        if not SOURCE_ID.fullmatch(source):
            raise ValueError(f"source {source!r} does not match {SOURCE_ID.pattern}")
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("secret must be non-empty bytes")
        self.url = url.rstrip("/")
        self.secret = secret
        self.source = source
        self.admission_year = admission_year
        self.rng = random.Random(seed)
        self._numbers: dict[str, int] = {}
        self._pending: list[dict[str, Any]] = []  # applications without a result yet
        # Cut-off totals of the grade-10 public schools this year (điểm chuẩn).
        self._cutoffs = {code: round(self.rng.uniform(13.0, 24.0) * 4) / 4 for code in HAIPHONG_SCHOOLS}

    @property
    def endpoint(self) -> str:
        return f"{self.url}/ingest/{self.source}"

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _window(self, window: tuple[tuple[int, int], tuple[int, int]], now: datetime,
                not_before: datetime | None = None) -> datetime:
        (m1, d1), (m2, d2) = window
        year = self.admission_year
        start = datetime(year, m1, d1, 7, 0, tzinfo=VN_TZ)
        end = min(datetime(year, m2, d2, 22, 0, tzinfo=VN_TZ), now)
        if not_before is not None:
            start = max(start, not_before)
        if end <= start:  # the window is still ahead: the last days before now instead
            start = max(not_before or now - timedelta(days=7), now - timedelta(days=7))
            end = now
        return start + timedelta(seconds=self.rng.randint(0, max(0, int((end - start).total_seconds()))))

    def _envelope(self, entity: str, key: str, occurred: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"event_id": self._event_id(), "source": self.source, "entity": entity, "op": "c",
                "key": key, "occurred_at": occurred, "data": data}

    def applications(self, n: int, now: datetime | None = None) -> list[dict[str, Any]]:
        """`n` envelopes of new enrollment.application records (status SUBMITTED)."""
        now = (now or datetime.now(UTC)).astimezone(VN_TZ)
        rng = self.rng
        out = []
        for _ in range(n):
            level = _weighted(rng, ADMISSION_LEVELS)
            grade = LEVEL_GRADE[level]
            self._numbers[level] = number = self._numbers.get(level, 0) + 1
            application_id = f"TS{self.admission_year}-{grade:02d}-{number:06d}"
            gender = rng.choice(("MALE", "FEMALE"))
            age = LEVEL_AGE[level] + (1 if level != "GRADE_1" and rng.random() < 0.03 else 0)
            birth = _birth(rng, self.admission_year - age)
            if level == "GRADE_10":
                current = rng.choice(HAIPHONG_LOWER_SECONDARY)
                public = [c for c in HAIPHONG_SCHOOLS if c != SPECIALIZED_SCHOOL]
                chosen = rng.sample(public, 2 if rng.random() < 0.7 else 1)
            elif level == "GRADE_6":
                current = rng.choice(HAIPHONG_PRIMARY)
                chosen = [rng.choice(HAIPHONG_LOWER_SECONDARY)]
            else:
                current = None  # from kindergarten: no school code
                chosen = [rng.choice(HAIPHONG_PRIMARY)]
            specialized = None
            if level == "GRADE_10" and rng.random() < 0.12:
                specialized = {"school_code": SPECIALIZED_SCHOOL, "subject": rng.choice(SPECIALIZED_SUBJECTS)}
            submitted = _rfc3339(self._window(SUBMISSION_WINDOW[level], now))
            data = {
                "application_id": application_id,
                "admission_year": self.admission_year,
                "level": level,
                "applicant_id": person_id(rng, birth, gender, _weighted(rng, BIRTH_PROVINCES)),
                "full_name": _exported_name(rng, vietnamese_name(rng, gender)),
                "date_of_birth": birth.isoformat(),
                "gender": gender,
                "current_school_code": current,
                "preferences": [{"rank": i + 1, "school_code": code} for i, code in enumerate(chosen)],
                "specialized_choice": specialized,
                "priority_points": _weighted(rng, PRIORITY_POINTS),
                "encouragement_points": _weighted(rng, ENCOURAGEMENT_POINTS) if level == "GRADE_10" else "0",
                "submitted_at": submitted,
                "status": "SUBMITTED",
            }
            self._pending.append(copy.deepcopy(data))
            out.append(self._envelope("enrollment.application", application_id, submitted, data))
        return out

    def results(self, n: int | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
        """enrollment.result envelopes for up to `n` (default all) earlier applications without one."""
        now = (now or datetime.now(UTC)).astimezone(VN_TZ)
        rng = self.rng
        count = len(self._pending) if n is None else min(n, len(self._pending))
        batch, self._pending = self._pending[:count], self._pending[count:]
        out = []
        for app in batch:
            level = app["level"]
            total = None
            rank = None
            if level == "GRADE_10":
                # Maths + literature + English (quarter points) plus priority and encouragement.
                exam = sum(min(10.0, max(0.0, round(rng.gauss(6.6, 1.6) * 4) / 4)) for _ in range(3))
                total_dec = (Decimal(repr(exam)) + Decimal(app["priority_points"])
                             + Decimal(app["encouragement_points"])).quantize(_CENT)
                total = str(total_dec)
                for pref in app["preferences"]:
                    if total_dec >= Decimal(repr(self._cutoffs[pref["school_code"]])):
                        rank = pref["rank"]
                        break
            elif rng.random() < 0.98:  # grades 1 and 6 admit by residence: nearly everyone
                rank = 1
            submitted = datetime.fromisoformat(app["submitted_at"])
            published = _rfc3339(self._window(PUBLICATION_WINDOW[level], now, not_before=submitted))
            admitted = rank is not None
            data = {
                "application_id": app["application_id"],
                "admission_year": app["admission_year"],
                "total_score": total,
                "outcome": "ADMITTED" if admitted else "NOT_ADMITTED",
                "admitted_school_code": app["preferences"][rank - 1]["school_code"] if admitted else None,
                "matched_rank": rank,
                "published_at": published,
            }
            out.append(self._envelope("enrollment.result", app["application_id"], published, data))
        return out

    def signed(self, envelopes: Sequence[dict[str, Any]], timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """The JSON array body and its headers, as `post` sends them."""
        body = json.dumps(list(envelopes), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        ts = int(time.time()) if timestamp is None else int(timestamp)
        headers = {
            "Content-Type": "application/json",
            HEADER_TIMESTAMP: str(ts),
            HEADER_SIGNATURE: sign(self.secret, ts, body),
        }
        return body, headers

    async def post(self, envelopes: Sequence[dict[str, Any]], client: httpx.AsyncClient) -> httpx.Response:
        """POST `envelopes` as one signed JSON array to f"{url}/ingest/{source}"."""
        body, headers = self.signed(envelopes)
        return await client.post(self.endpoint, content=body, headers=headers)


# =============================================================================================
# 4. Schools' spreadsheet exports (CSV/XLSX mark books), read by the `file` connector.

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



"""Vietnamese people of the seed systems: names, personal IDs, phones, birth dates, Vietnam time and the row clock."""

from __future__ import annotations

import random
import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone

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

SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")

# Mobile prefixes in use (Viettel 03x/086/096-098, Vinaphone 08x/091/094, MobiFone 07x/089/090/093,
# Vietnamobile 056/058, Gmobile 059); weights roughly follow market shares.
MOBILE_PREFIXES: dict[str, int] = {
    "032": 4, "033": 4, "034": 4, "035": 4, "036": 4, "037": 4, "038": 4, "039": 4, "086": 4,
    "096": 5, "097": 6, "098": 6, "081": 2, "082": 2, "083": 2, "084": 2, "085": 2, "088": 2,
    "091": 4, "094": 3, "070": 2, "076": 1, "077": 2, "078": 1, "079": 1, "089": 2, "090": 4,
    "093": 3, "056": 1, "058": 1, "059": 1,
}
NFD_SHARE = 0.1


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


def _birth(rng: random.Random, year: int) -> date:
    return date(year, 1, 1) + timedelta(days=rng.randrange(365))


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

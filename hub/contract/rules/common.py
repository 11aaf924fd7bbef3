"""Checks every domain's rules share: names, personal IDs, codes, phones, email, geography, enums, ages."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from hub.contract.envelope import Problem

RULES: dict[str, str] = {
    # Generic rules (any entity carrying such a field).
    "person_name.length": "A person's name is 1-100 characters after normalisation.",
    "person_name.invalid_characters": "A person's name has only letters, combining marks, spaces, hyphens and apostrophes.",
    "national_id.format": "A personal ID is exactly 12 ASCII digits.",
    "national_id.province": "A personal ID starts with one of the 63 pre-2025 province codes.",
    "national_id.century_gender": "The personal ID's century/gender digit G is 0-5.",
    "national_id.birth_year_mismatch": "The birth year encoded in the personal ID (G, YY) equals date_of_birth's year.",
    "national_id.gender_mismatch": "The personal ID's G digit agrees with gender (even MALE, odd FEMALE).",
    "school_code.format": "A school code matches ^[0-9A-Z]{2,12}$.",
    "school_year.format": "A school year is YYYY-YYYY with the second year the first plus one.",
    "phone.format": "A phone is a Vietnamese mobile, 0 + 9 digits (03/05/07/08/09) or +84 + 9 digits; stored as +84XXXXXXXXX.",
    "email.format": "An email address has the form local@domain.tld.",
    "province_code.unknown": "A province code is one of the 34 codes in force from 1 July 2025.",
    "ward_code.format": "A ward/commune code is 5 digits.",
    "ward_code.unknown": "A ward/commune code exists in the list in force from 1 July 2025.",
    "ward_code.province_mismatch": "A ward/commune belongs to the record's province.",
    "ethnicity_code.unknown": "An ethnicity code is 01-54.",
    "nationality.format": "A nationality is an ISO 3166 alpha-2 code: two uppercase letters.",
    "enum.unknown_symbol": "UNKNOWN is a reader fallback symbol, never valid on ingest.",
    "grade.range": "A grade is 1-12.",
    "subject.unknown": "A school subject is one of the dictionary's school subject codes.",
}


@dataclass(frozen=True)
class RuleContext:
    council_code: str = "03"  # Hải Phòng's exam council (hub.yaml exam.council_code)
    home_province: str = "31"  # Hải Phòng
    today: date | None = None  # None = date.today(); for rules needing "now"


# An entity's checks: canonical record, context, the list to append problems to.
Check = Callable[[dict, RuleContext, list[Problem]], None]

# ---------------------------------------------------------------------------------------------
# Constants, built once.

# The 63 pre-2025 province codes that open a personal ID (data dictionary §2, Thông tư 07/2016).
ID_PROVINCES = frozenset(
    "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033 034 035 036"
    " 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 067 068 070 072 074 075"
    " 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096".split()
)
ETHNICITY_CODES = frozenset(f"{n:02d}" for n in range(1, 55))
UNKNOWN = "UNKNOWN"
NAME_MAX = 100
NAME_PUNCTUATION = frozenset(" -'\u2019")

# re.ASCII: \d and friends must not match Arabic-Indic or full-width digits.
_A = re.ASCII
SCHOOL_CODE = re.compile(r"[0-9A-Z]{2,12}", _A)
SCHOOL_YEAR = re.compile(r"([0-9]{4})-([0-9]{4})", _A)
MOBILE_LOCAL = re.compile(r"0[35789][0-9]{8}", _A)
MOBILE_INTL = re.compile(r"\+84[35789][0-9]{8}", _A)
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}",
    _A,
)
NATIONALITY = re.compile(r"[A-Z]{2}", _A)
DIGITS5 = re.compile(r"[0-9]{5}", _A)


# Provinces and wards after the 1 July 2025 merger, from the vietnam-provinces package; loaded on
# first use (importing the package's tables costs tens of milliseconds, not every CLI needs them).
class _Geo:
    __slots__ = ("provinces", "wards")

    def __init__(self) -> None:
        from vietnam_provinces import Province, Ward

        self.provinces: dict[str, str] = {f"{int(p.code):02d}": p.name for p in Province.iter_all()}
        # ward code → (province code, ward name)
        self.wards: dict[str, tuple[str, str]] = {
            f"{int(w.code):05d}": (f"{int(w.province_code):02d}", w.name) for w in Ward.iter_all()
        }


_geo: _Geo | None = None


def geography() -> _Geo:
    """The current province and ward lookups (built once)."""
    global _geo
    if _geo is None:
        _geo = _Geo()
    return _geo


# ---------------------------------------------------------------------------------------------
# Generic checks. Each appends to `problems`; paths are formatted only when something is wrong.


def check_person_name(value: Any, path: str, problems: list[Problem]) -> None:
    if value is None:
        return
    n = len(value)
    if n < 1 or n > NAME_MAX:
        problems.append(Problem.at(path, "person_name.length", f"expected 1-{NAME_MAX} characters, got {n}"))
        if n == 0:
            return
    # Fast path: after NFC a Vietnamese name is letters and spaces only.
    if value.replace(" ", "").isalpha():
        return
    bad = []
    letters = 0
    for ch in value:
        if ch in NAME_PUNCTUATION:
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "L":
            letters += 1
        elif cat[0] != "M":
            bad.append(ch)
    if bad:
        shown = ", ".join(repr(c) for c in dict.fromkeys(bad))
        problems.append(
            Problem.at(
                path,
                "person_name.invalid_characters",
                f"expected letters, spaces, hyphens and apostrophes only, got {shown} in {value!r}",
            )
        )
    elif letters == 0:
        problems.append(Problem.at(path, "person_name.invalid_characters", f"expected at least one letter, got {value!r}"))


def check_national_id(value: Any, path: str, problems: list[Problem], born: date | None, gender: str | None) -> None:
    if value is None:
        return
    if len(value) != 12 or not value.isdigit() or not value.isascii():
        problems.append(Problem.at(path, "national_id.format", f"expected exactly 12 digits, got {value!r}"))
        return
    if value[:3] not in ID_PROVINCES:
        problems.append(
            Problem.at(
                path,
                "national_id.province",
                f"expected the first 3 digits to be a pre-2025 province code, got {value[:3]}",
            )
        )
    g = ord(value[3]) - 48
    if g > 5:
        problems.append(Problem.at(path, "national_id.century_gender", f"expected century/gender digit 0-5, got {g}"))
        return
    if born is not None:
        year = 1900 + 100 * (g >> 1) + int(value[4:6])
        if year != born.year:
            problems.append(
                Problem.at(
                    path,
                    "national_id.birth_year_mismatch",
                    f"birth year digits {value[4:6]} ({year}) disagree with date_of_birth {born.isoformat()}",
                )
            )
    if gender is not None and gender != UNKNOWN:
        encoded = "FEMALE" if g & 1 else "MALE"
        if encoded != gender:
            problems.append(
                Problem.at(
                    path,
                    "national_id.gender_mismatch",
                    f"century/gender digit {g} means {encoded}, disagrees with gender {gender}",
                )
            )


def check_school_code(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and not SCHOOL_CODE.fullmatch(value):
        problems.append(Problem.at(path, "school_code.format", f"expected 2-12 of 0-9 A-Z, got {value!r}"))


def check_school_year(value: Any, path: str, problems: list[Problem]) -> int | None:
    """Checks a school year; returns its first year when valid."""
    if value is None:
        return None
    m = SCHOOL_YEAR.fullmatch(value)
    if m is not None:
        first = int(m.group(1))
        if int(m.group(2)) == first + 1:
            return first
    problems.append(
        Problem.at(path, "school_year.format", f"expected YYYY-YYYY with consecutive years (2025-2026), got {value!r}")
    )
    return None


def check_phone(record: dict, name: str, problems: list[Problem]) -> None:
    """Checks a Vietnamese mobile and rewrites it in place to +84XXXXXXXXX."""
    value = record.get(name)
    if value is None:
        return
    if MOBILE_LOCAL.fullmatch(value):
        record[name] = "+84" + value[1:]
    elif not MOBILE_INTL.fullmatch(value):
        problems.append(
            Problem.at(
                "data." + name,
                "phone.format",
                f"expected a Vietnamese mobile 0[35789]XXXXXXXX or +84[35789]XXXXXXXX, got {value!r}",
            )
        )


def check_email(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and (len(value) > 254 or not EMAIL.fullmatch(value)):
        problems.append(Problem.at(path, "email.format", f"expected an address like name@example.vn, got {value!r}"))


def check_province_ward(obj: dict, prefix: str, problems: list[Problem]) -> str | None:
    """Checks province_code and ward_code of `obj`; returns the province code when it is known."""
    geo = _geo or geography()
    province = obj.get("province_code")
    known = None
    if province is not None:
        if province in geo.provinces:
            known = province
        else:
            problems.append(
                Problem.at(
                    prefix + "province_code",
                    "province_code.unknown",
                    f"expected one of the 34 province codes in force from 1 July 2025, got {province!r}",
                )
            )
    ward = obj.get("ward_code")
    if ward is None:
        return known
    if not DIGITS5.fullmatch(ward):
        problems.append(Problem.at(prefix + "ward_code", "ward_code.format", f"expected 5 digits, got {ward!r}"))
        return known
    found = geo.wards.get(ward)
    if found is None:
        problems.append(
            Problem.at(
                prefix + "ward_code", "ward_code.unknown", f"expected a ward/commune code in force from 1 July 2025, got {ward}"
            )
        )
    elif known is not None and found[0] != known:
        problems.append(
            Problem.at(
                prefix + "ward_code",
                "ward_code.province_mismatch",
                f"ward {ward} ({found[1]}) belongs to province {found[0]}"
                f" ({geo.provinces.get(found[0], '?')}), not to province_code {known}",
            )
        )
    return known


def check_ethnicity(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and value not in ETHNICITY_CODES:
        problems.append(Problem.at(path, "ethnicity_code.unknown", f"expected 01-54, got {value!r}"))


def check_nationality(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and not NATIONALITY.fullmatch(value):
        problems.append(
            Problem.at(path, "nationality.format", f"expected an ISO 3166 alpha-2 code such as VN, got {value!r}")
        )


def check_enums(record: dict, fields: tuple[tuple[str, ...], tuple[str, ...]], problems: list[Problem]) -> None:
    """UNKNOWN in the entity's enum fields: (scalar fields, array fields)."""
    scalars, arrays = fields
    for name in scalars:
        if record.get(name) == UNKNOWN:
            problems.append(
                Problem.at("data." + name, "enum.unknown_symbol", "UNKNOWN is a reader fallback, never valid on ingest")
            )
    for name in arrays:
        items = record.get(name)
        if items and UNKNOWN in items:
            for i, item in enumerate(items):
                if item == UNKNOWN:
                    problems.append(
                        Problem.at(
                            f"data.{name}[{i}]", "enum.unknown_symbol", "UNKNOWN is a reader fallback, never valid on ingest"
                        )
                    )


def age_years(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))

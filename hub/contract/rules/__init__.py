"""Sector rules that Avro cannot express (data dictionary §2 and each entity's Rules), each with a stable id."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Callable

from hub.contract.envelope import Problem

# Decisions where the data dictionary is silent, one per item; schemas/README.md lists them.
DECISIONS: tuple[str, ...] = (
    'Phones (phone.format): only the two forms of §2 are accepted, `0` + 9 digits with prefix 03/05/07/08/09 or `+84` + 9 digits starting 3/5/7/8/9; separators (spaces, dots, hyphens), `84…` without the plus and `0084…` are rejected rather than guessed, so a connector fixes its export once. school.school.phone is mobile-only too, as the dictionary says "Vietnamese mobile": a school\'s landline (e.g. 0225 3xxx xxx) is rejected until the contract adds one.',
    'Person names (person_name.*): length counts Unicode code points after NFC. The typographic apostrophe U+2019 (’) is accepted besides U+0027 (\'), because Ê Đê and Gia Rai names ("H’Hen Niê") arrive that way from word processors; both are kept as sent. A name must contain at least one letter ("-" alone is not a name).',
    'Personal ID (national_id.*): when the 12-digit format fails no further ID rule runs; when G is not 0–5 the birth-year and gender comparisons are skipped (there is nothing to compare).',
    "Ward codes (ward_code.*): the ward must exist in vietnam-provinces' current list; a mismatch with the province is reported only when the province code itself is known.",
    "school.school.province_code must be the hub's home province (school.home_province): the Department's school register holds only its own schools; codes of schools elsewhere still appear freely as school_code / current_school_code references. A student's address may be in any province (learners living across the border in Quảng Ninh, Hưng Yên are normal).",
    'school.school.levels must be non-empty and without repeats (school.levels).',
    'Class names (student.class_name, class.name): grade number without a leading zero, then a letter, then up to 5 letters/digits (10A1, 6A, 12CT); the number must equal the grade. Requiring a letter after the number removes the ambiguity of "101" (10-1 or 1-01); the "10/1" style used elsewhere in Vietnam is not accepted. school.class.name follows the same rule as school.student.class_name.',
    'school.teacher: subjects are school subject codes (subject.unknown) and the teacher is at least 18 years old on RuleContext.today (teacher.age).',
    "school.score: the grading mode follows the dictionary's list literally, so primary-only subjects (VIETNAMESE, ETHICS, NATURE_SOCIETY) need a numeric score; REGULAR marks have no upper bound on seq (Thông tư 22 sets a minimum number of regular marks, not a maximum).",
    'enrollment.application: the order of `preferences` in the array does not matter, only that the ranks are exactly 1..n; the rules apply whatever the status (a WITHDRAWN application still carries what was submitted). specialized_choice.subject is not checked against the school subject list (specialised classes exist for French, Russian, Japanese...).',
    'enrollment.result: matched_rank, when present, is at least 1 (result.matched_rank).',
    'exam.registration: an exemption_certificate without language_exemption is tolerated (the candidate holds a certificate but chose to sit the exam); school_code is optional, not forbidden, for candidate types other than CURRENT_STUDENT.',
    "exam.result: the candidate number's council prefix must be 01–99 but need not equal the hub's council (results are the Ministry's, keyed by any council); scores are checked for range only, not for the 0.25 step.",
    'nationality is checked for form (two uppercase ASCII letters), not against the ISO list.',
    'An entity without rules (not in the dictionary) returns no problems.',
)

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
    # school.school
    "school.home_province": "A school in the register is in the hub's home province.",
    "school.levels": "A school's levels are non-empty and without repeats.",
    # school.student
    "student.age_for_grade": "A student's age (first year of school_year minus birth year) is grade+4 .. grade+9.",
    "student.class_name": "A student's class name is the grade number then a letter and up to 5 letters/digits (10A1).",
    # school.class
    "class.id_mismatch": "class_id equals {school_code}-{school_year}-{name}.",
    "class.size_range": "A class has 0-60 students.",
    "class.name": "A class name is the grade number then a letter and up to 5 letters/digits (10A1).",
    # school.teacher
    "teacher.subjects": "A teacher has at least one subject and no subject twice.",
    "teacher.age": "A teacher is at least 18 years old today.",
    # school.score
    "score.term": "A score's term is 1 or 2.",
    "score.seq": "seq is at least 1, and exactly 1 unless kind is REGULAR.",
    "score.grading_mode": "Comment-graded subjects carry pass_result and no score; all others a score and no pass_result.",
    "score.range": "A score is 0-10 with at most 2 decimal places.",
    # school.term_result
    "term_result.term": "A term result's term is 1, 2 or YEAR.",
    "term_result.average_range": "A term average is 0-10 with at most 1 decimal place.",
    # enrollment.application
    "application.preference_ranks": "Preference ranks are exactly 1..n, with no gap or repeat.",
    "application.preference_duplicate_school": "No school appears twice among the preferences.",
    "application.preference_count": "GRADE_1 and GRADE_6 have exactly 1 preference, GRADE_10 1 or 2.",
    "application.specialized_choice_level": "A specialised-school choice is only for GRADE_10.",
    "application.priority_points": "Priority points are 0, 1.0, 1.5 or 2.0.",
    "application.encouragement_points": "Encouragement points are 0-1.5.",
    "application.age_for_level": "Age in the admission year: 6 for GRADE_1, 11-14 for GRADE_6, 15-20 for GRADE_10.",
    # enrollment.result
    "result.admission_fields": "admitted_school_code and matched_rank are present iff the outcome is ADMITTED.",
    "result.matched_rank": "matched_rank is at least 1.",
    "result.total_score": "total_score is not negative.",
    # exam.registration
    "exam.council_code.format": "An exam council code is 2 digits.",
    "exam.council_code.mismatch": "The registration's council is the hub's exam council.",
    "exam.subjects.compulsory_missing": "MATH and LITERATURE are registered (all candidate types but GRADUATED_FOR_ADMISSION).",
    "exam.subjects.elective_count": "Exactly two distinct electives besides MATH and LITERATURE.",
    "exam.subjects.duplicate": "No exam subject is registered twice.",
    "exam.subjects.count": "GRADUATED_FOR_ADMISSION registers 1-4 subjects.",
    "exam.foreign_language.required": "foreign_language is given when FOREIGN_LANGUAGE is registered.",
    "exam.foreign_language.forbidden": "foreign_language is absent when FOREIGN_LANGUAGE is not registered.",
    "exam.exemption.requires_foreign_language": "A language exemption requires FOREIGN_LANGUAGE among the subjects.",
    "exam.exemption.certificate_missing": "A language exemption requires an exemption_certificate.",
    "exam.exemption.certificate_expired": "The exemption certificate is valid on 1 June of the exam year.",
    "exam.school_code.required": "A CURRENT_STUDENT registration names the candidate's school.",
    "exam.priority_group": "A priority group is 01-07.",
    "exam.candidate_age": "The candidate is 16 or older in the exam year.",
    # exam.result
    "exam.candidate_number.format": "A candidate number is 8 digits: a 2-digit council code (01-99) and 6 digits.",
    "exam.result.score_range": "Every exam score is 0-10.",
    "exam.result.subject_unknown": "Every score is keyed by an exam subject code.",
    "exam.result.passed_inconsistent": "passed true requires every score above 1.0 and graduation_score at least 5.0.",
}


@dataclass(frozen=True)
class RuleContext:
    council_code: str = "03"  # Hải Phòng's exam council (hub.yaml exam.council_code)
    home_province: str = "31"  # Hải Phòng
    today: date | None = None  # None = date.today(); for rules needing "now"


# ---------------------------------------------------------------------------------------------
# Constants, built once.

# The 63 pre-2025 province codes that open a personal ID (data dictionary §2, Thông tư 07/2016).
ID_PROVINCES = frozenset(
    "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033 034 035 036"
    " 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 067 068 070 072 074 075"
    " 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096".split()
)
ETHNICITY_CODES = frozenset(f"{n:02d}" for n in range(1, 55))
SCHOOL_SUBJECTS = frozenset(
    "MATH LITERATURE ENGLISH PHYSICS CHEMISTRY BIOLOGY HISTORY GEOGRAPHY ECONOMICS_LAW INFORMATICS"
    " TECHNOLOGY NATURAL_SCIENCE HISTORY_GEOGRAPHY CIVICS PE ARTS MUSIC FINE_ARTS EXPERIENTIAL LOCAL_EDU"
    " DEFENSE_EDU VIETNAMESE ETHICS NATURE_SOCIETY".split()
)
COMMENT_GRADED = frozenset(("PE", "ARTS", "MUSIC", "FINE_ARTS", "EXPERIENTIAL", "LOCAL_EDU"))
EXAM_SUBJECTS = frozenset(
    "MATH LITERATURE PHYSICS CHEMISTRY BIOLOGY HISTORY GEOGRAPHY ECONOMICS_LAW INFORMATICS"
    " TECH_INDUSTRIAL TECH_AGRICULTURAL FOREIGN_LANGUAGE".split()
)
PRIORITY_POINTS = frozenset((Decimal(0), Decimal("1.0"), Decimal("1.5"), Decimal("2.0")))
# Admission preferences and ages per level: (min count, max count), (min age, max age).
PREFERENCE_COUNT = {"GRADE_1": (1, 1), "GRADE_6": (1, 1), "GRADE_10": (1, 2)}
AGE_FOR_LEVEL = {"GRADE_1": (6, 6), "GRADE_6": (11, 14), "GRADE_10": (15, 20)}
UNKNOWN = "UNKNOWN"
NAME_MAX = 100
NAME_PUNCTUATION = frozenset(" -'\u2019")
EXAM_MIN_AGE = 16
TEACHER_MIN_AGE = 18

_D0 = Decimal(0)
_D1 = Decimal(1)
_D5 = Decimal(5)
_D10 = Decimal(10)
_D1_5 = Decimal("1.5")
_CENT = Decimal("0.01")
_TENTH = Decimal("0.1")

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
CLASS_NAME = re.compile(r"([1-9]|1[0-2])[A-Z][A-Z0-9]{0,5}", _A)
COUNCIL_CODE = re.compile(r"[0-9]{2}", _A)
CANDIDATE_NUMBER = re.compile(r"(?!00)[0-9]{8}", _A)
PRIORITY_GROUP = re.compile(r"0[1-7]", _A)
DIGITS5 = re.compile(r"[0-9]{5}", _A)

# Enum-valued fields per entity: (scalar fields, array fields), for the UNKNOWN check.
ENUM_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "school.school": (("ownership", "status"), ("levels",)),
    "school.student": (("gender", "status"), ()),
    "school.class": ((), ()),
    "school.teacher": (("gender", "status"), ("subjects",)),
    "school.score": (("subject", "kind", "pass_result"), ()),
    "school.term_result": (("learning_rating", "conduct_rating"), ()),
    "enrollment.application": (("level", "gender", "status"), ()),
    "enrollment.result": (("outcome",), ()),
    "exam.registration": (("gender", "candidate_type", "foreign_language", "priority_area", "status"), ("subjects",)),
    "exam.result": ((), ()),
}


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


def _person_name(value: Any, path: str, problems: list[Problem]) -> None:
    if value is None:
        return
    n = len(value)
    if n < 1 or n > NAME_MAX:
        problems.append(
            Problem(path, "person_name.length", f"{path}: expected 1-{NAME_MAX} characters, got {n}")
        )
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
            Problem(
                path,
                "person_name.invalid_characters",
                f"{path}: expected letters, spaces, hyphens and apostrophes only, got {shown} in {value!r}",
            )
        )
    elif letters == 0:
        problems.append(
            Problem(path, "person_name.invalid_characters", f"{path}: expected at least one letter, got {value!r}")
        )


def _national_id(value: Any, path: str, problems: list[Problem], born: date | None, gender: str | None) -> None:
    if value is None:
        return
    if len(value) != 12 or not value.isdigit() or not value.isascii():
        problems.append(Problem(path, "national_id.format", f"{path}: expected exactly 12 digits, got {value!r}"))
        return
    if value[:3] not in ID_PROVINCES:
        problems.append(
            Problem(
                path,
                "national_id.province",
                f"{path}: expected the first 3 digits to be a pre-2025 province code, got {value[:3]}",
            )
        )
    g = ord(value[3]) - 48
    if g > 5:
        problems.append(
            Problem(path, "national_id.century_gender", f"{path}: expected century/gender digit 0-5, got {g}")
        )
        return
    if born is not None:
        year = 1900 + 100 * (g >> 1) + int(value[4:6])
        if year != born.year:
            problems.append(
                Problem(
                    path,
                    "national_id.birth_year_mismatch",
                    f"{path}: birth year digits {value[4:6]} ({year}) disagree with date_of_birth {born.isoformat()}",
                )
            )
    if gender is not None and gender != UNKNOWN:
        encoded = "FEMALE" if g & 1 else "MALE"
        if encoded != gender:
            problems.append(
                Problem(
                    path,
                    "national_id.gender_mismatch",
                    f"{path}: century/gender digit {g} means {encoded}, disagrees with gender {gender}",
                )
            )


def _school_code(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and not SCHOOL_CODE.fullmatch(value):
        problems.append(
            Problem(path, "school_code.format", f"{path}: expected 2-12 of 0-9 A-Z, got {value!r}")
        )


def _school_year(value: Any, path: str, problems: list[Problem]) -> int | None:
    """Checks a school year; returns its first year when valid."""
    if value is None:
        return None
    m = SCHOOL_YEAR.fullmatch(value)
    if m is not None:
        first = int(m.group(1))
        if int(m.group(2)) == first + 1:
            return first
    problems.append(
        Problem(path, "school_year.format", f"{path}: expected YYYY-YYYY with consecutive years (2025-2026), got {value!r}")
    )
    return None


def _phone(record: dict, name: str, problems: list[Problem]) -> None:
    """Checks a Vietnamese mobile and rewrites it in place to +84XXXXXXXXX."""
    value = record.get(name)
    if value is None:
        return
    if MOBILE_LOCAL.fullmatch(value):
        record[name] = "+84" + value[1:]
    elif not MOBILE_INTL.fullmatch(value):
        path = "data." + name
        problems.append(
            Problem(
                path,
                "phone.format",
                f"{path}: expected a Vietnamese mobile 0[35789]XXXXXXXX or +84[35789]XXXXXXXX, got {value!r}",
            )
        )


def _email(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and (len(value) > 254 or not EMAIL.fullmatch(value)):
        problems.append(Problem(path, "email.format", f"{path}: expected an address like name@example.vn, got {value!r}"))


def _province_ward(obj: dict, prefix: str, problems: list[Problem]) -> str | None:
    """Checks province_code and ward_code of `obj`; returns the province code when it is known."""
    geo = _geo or geography()
    province = obj.get("province_code")
    known = None
    if province is not None:
        if province in geo.provinces:
            known = province
        else:
            path = prefix + "province_code"
            problems.append(
                Problem(
                    path,
                    "province_code.unknown",
                    f"{path}: expected one of the 34 province codes in force from 1 July 2025, got {province!r}",
                )
            )
    ward = obj.get("ward_code")
    if ward is None:
        return known
    if not DIGITS5.fullmatch(ward):
        path = prefix + "ward_code"
        problems.append(Problem(path, "ward_code.format", f"{path}: expected 5 digits, got {ward!r}"))
        return known
    found = geo.wards.get(ward)
    if found is None:
        path = prefix + "ward_code"
        problems.append(
            Problem(path, "ward_code.unknown", f"{path}: expected a ward/commune code in force from 1 July 2025, got {ward}")
        )
    elif known is not None and found[0] != known:
        path = prefix + "ward_code"
        problems.append(
            Problem(
                path,
                "ward_code.province_mismatch",
                f"{path}: ward {ward} ({found[1]}) belongs to province {found[0]}"
                f" ({geo.provinces.get(found[0], '?')}), not to province_code {known}",
            )
        )
    return known


def _ethnicity(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and value not in ETHNICITY_CODES:
        problems.append(Problem(path, "ethnicity_code.unknown", f"{path}: expected 01-54, got {value!r}"))


def _nationality(value: Any, path: str, problems: list[Problem]) -> None:
    if value is not None and not NATIONALITY.fullmatch(value):
        problems.append(
            Problem(path, "nationality.format", f"{path}: expected an ISO 3166 alpha-2 code such as VN, got {value!r}")
        )


def _grade(value: Any, path: str, problems: list[Problem]) -> bool:
    if value is None:
        return False
    if 1 <= value <= 12:
        return True
    problems.append(Problem(path, "grade.range", f"{path}: expected 1-12, got {value}"))
    return False


def _class_name(value: Any, grade: Any, path: str, rule: str, problems: list[Problem]) -> None:
    if value is None:
        return
    m = CLASS_NAME.fullmatch(value)
    if m is None:
        problems.append(
            Problem(path, rule, f"{path}: expected the grade number then a letter and up to 5 letters/digits (10A1), got {value!r}")
        )
    elif grade is not None and int(m.group(1)) != grade:
        problems.append(Problem(path, rule, f"{path}: class {value!r} is not in grade {grade}"))


def _enums(record: dict, fields: tuple[tuple[str, ...], tuple[str, ...]], problems: list[Problem]) -> None:
    scalars, arrays = fields
    for name in scalars:
        if record.get(name) == UNKNOWN:
            path = "data." + name
            problems.append(
                Problem(path, "enum.unknown_symbol", f"{path}: UNKNOWN is a reader fallback, never valid on ingest")
            )
    for name in arrays:
        items = record.get(name)
        if items and UNKNOWN in items:
            for i, item in enumerate(items):
                if item == UNKNOWN:
                    path = f"data.{name}[{i}]"
                    problems.append(
                        Problem(path, "enum.unknown_symbol", f"{path}: UNKNOWN is a reader fallback, never valid on ingest")
                    )


def _decimal_places_ok(value: Decimal, quantum: Decimal) -> bool:
    return value == value.quantize(quantum)


def _age_years(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


# ---------------------------------------------------------------------------------------------
# Entity checks.

Check = Callable[[dict, RuleContext, list[Problem]], None]


def _school(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["school.school"], problems)
    _school_code(r.get("school_code"), "data.school_code", problems)
    levels = r.get("levels")
    if levels is not None:
        if not levels:
            problems.append(Problem("data.levels", "school.levels", "data.levels: expected at least one level, got none"))
        elif len(set(levels)) != len(levels):
            problems.append(Problem("data.levels", "school.levels", f"data.levels: expected no repeats, got {levels}"))
    province = _province_ward(r, "data.", problems)
    if province is not None and province != ctx.home_province:
        problems.append(
            Problem(
                "data.province_code",
                "school.home_province",
                f"data.province_code: expected the hub's home province {ctx.home_province}, got {province}",
            )
        )
    _phone(r, "phone", problems)


def _student(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["school.student"], problems)
    born = r.get("date_of_birth")
    _national_id(r.get("student_id"), "data.student_id", problems, born, r.get("gender"))
    _person_name(r.get("full_name"), "data.full_name", problems)
    _ethnicity(r.get("ethnicity_code"), "data.ethnicity_code", problems)
    _nationality(r.get("nationality"), "data.nationality", problems)
    _school_code(r.get("school_code"), "data.school_code", problems)
    grade = r.get("grade")
    grade_ok = _grade(grade, "data.grade", problems)
    _class_name(r.get("class_name"), grade if grade_ok else None, "data.class_name", "student.class_name", problems)
    first = _school_year(r.get("school_year"), "data.school_year", problems)
    if grade_ok and first is not None and born is not None:
        age = first - born.year
        if not grade + 4 <= age <= grade + 9:
            problems.append(
                Problem(
                    "data.date_of_birth",
                    "student.age_for_grade",
                    f"data.date_of_birth: expected age {grade + 4}-{grade + 9} in {first} for grade {grade},"
                    f" got {age} (born {born.isoformat()})",
                )
            )
    address = r.get("address")
    if address is not None:
        _province_ward(address, "data.address.", problems)
    _phone(r, "guardian_phone", problems)


def _class(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    school_code = r.get("school_code")
    _school_code(school_code, "data.school_code", problems)
    school_year = r.get("school_year")
    _school_year(school_year, "data.school_year", problems)
    grade = r.get("grade")
    grade_ok = _grade(grade, "data.grade", problems)
    name = r.get("name")
    _class_name(name, grade if grade_ok else None, "data.name", "class.name", problems)
    class_id = r.get("class_id")
    expected = f"{school_code}-{school_year}-{name}"
    if class_id != expected:
        problems.append(
            Problem("data.class_id", "class.id_mismatch", f"data.class_id: expected {expected!r}, got {class_id!r}")
        )
    size = r.get("size")
    if size is not None and not 0 <= size <= 60:
        problems.append(Problem("data.size", "class.size_range", f"data.size: expected 0-60, got {size}"))


def _teacher(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["school.teacher"], problems)
    born = r.get("date_of_birth")
    _national_id(r.get("national_id"), "data.national_id", problems, born, r.get("gender"))
    _person_name(r.get("full_name"), "data.full_name", problems)
    if born is not None:
        today = ctx.today or date.today()
        age = _age_years(born, today)
        if age < TEACHER_MIN_AGE:
            problems.append(
                Problem(
                    "data.date_of_birth",
                    "teacher.age",
                    f"data.date_of_birth: expected a teacher at least {TEACHER_MIN_AGE} on {today.isoformat()},"
                    f" got age {age} (born {born.isoformat()})",
                )
            )
    _school_code(r.get("school_code"), "data.school_code", problems)
    subjects = r.get("subjects")
    if subjects is not None:
        if not subjects:
            problems.append(Problem("data.subjects", "teacher.subjects", "data.subjects: expected at least one subject, got none"))
        seen: set[str] = set()
        for i, subject in enumerate(subjects):
            if subject in seen:
                path = f"data.subjects[{i}]"
                problems.append(Problem(path, "teacher.subjects", f"{path}: {subject} is listed twice"))
            seen.add(subject)
            if subject not in SCHOOL_SUBJECTS and subject != UNKNOWN:
                path = f"data.subjects[{i}]"
                problems.append(Problem(path, "subject.unknown", f"{path}: expected a school subject code, got {subject!r}"))
    _phone(r, "phone", problems)
    _email(r.get("email"), "data.email", problems)


def _score(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["school.score"], problems)
    _national_id(r.get("student_id"), "data.student_id", problems, None, None)
    _school_code(r.get("school_code"), "data.school_code", problems)
    _school_year(r.get("school_year"), "data.school_year", problems)
    term = r.get("term")
    if term is not None and term != 1 and term != 2:
        problems.append(Problem("data.term", "score.term", f"data.term: expected 1 or 2, got {term}"))
    subject = r.get("subject")
    if subject is not None and subject != UNKNOWN and subject not in SCHOOL_SUBJECTS:
        problems.append(Problem("data.subject", "subject.unknown", f"data.subject: expected a school subject code, got {subject!r}"))
    seq = r.get("seq")
    kind = r.get("kind")
    if seq is not None:
        if seq < 1:
            problems.append(Problem("data.seq", "score.seq", f"data.seq: expected 1 or more, got {seq}"))
        elif seq != 1 and kind is not None and kind != "REGULAR":
            problems.append(Problem("data.seq", "score.seq", f"data.seq: expected 1 for a {kind} mark, got {seq}"))
    score = r.get("score")
    passed = r.get("pass_result")
    if subject is not None and subject != UNKNOWN:
        if subject in COMMENT_GRADED:
            if score is not None:
                problems.append(
                    Problem("data.score", "score.grading_mode", f"data.score: {subject} is graded by comment, expected no score, got {score}")
                )
            if passed is None:
                problems.append(
                    Problem("data.pass_result", "score.grading_mode", f"data.pass_result: {subject} is graded by comment, expected PASS or FAIL, got none")
                )
        else:
            if passed is not None:
                problems.append(
                    Problem("data.pass_result", "score.grading_mode", f"data.pass_result: {subject} is graded by score, expected no pass_result, got {passed}")
                )
            if score is None:
                problems.append(
                    Problem("data.score", "score.grading_mode", f"data.score: {subject} is graded by score, expected a score 0-10, got none")
                )
    if score is not None and not (_D0 <= score <= _D10 and _decimal_places_ok(Decimal(score), _CENT)):
        problems.append(Problem("data.score", "score.range", f"data.score: expected 0-10 with at most 2 decimal places, got {score}"))


def _term_result(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["school.term_result"], problems)
    _national_id(r.get("student_id"), "data.student_id", problems, None, None)
    _school_code(r.get("school_code"), "data.school_code", problems)
    _school_year(r.get("school_year"), "data.school_year", problems)
    term = r.get("term")
    if term is not None and term != "1" and term != "2" and term != "YEAR":
        problems.append(Problem("data.term", "term_result.term", f"data.term: expected 1, 2 or YEAR, got {term!r}"))
    average = r.get("average_score")
    if average is not None and not (_D0 <= average <= _D10 and _decimal_places_ok(Decimal(average), _TENTH)):
        problems.append(
            Problem(
                "data.average_score",
                "term_result.average_range",
                f"data.average_score: expected 0-10 with at most 1 decimal place, got {average}",
            )
        )


def _application(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["enrollment.application"], problems)
    born = r.get("date_of_birth")
    _national_id(r.get("applicant_id"), "data.applicant_id", problems, born, r.get("gender"))
    _person_name(r.get("full_name"), "data.full_name", problems)
    _school_code(r.get("current_school_code"), "data.current_school_code", problems)
    level = r.get("level")
    preferences = r.get("preferences")
    if preferences is not None:
        n = len(preferences)
        seen_ranks: set[int] = set()
        seen_schools: set[str] = set()
        for i, pref in enumerate(preferences):
            rank = pref.get("rank")
            if rank is not None:
                if not 1 <= rank <= n or rank in seen_ranks:
                    path = f"data.preferences[{i}].rank"
                    problems.append(
                        Problem(
                            path,
                            "application.preference_ranks",
                            f"{path}: expected ranks 1..{n} each once, got {rank}"
                            + (" again" if rank in seen_ranks else ""),
                        )
                    )
                seen_ranks.add(rank)
            code = pref.get("school_code")
            if code is not None:
                _school_code(code, f"data.preferences[{i}].school_code", problems)
                if code in seen_schools:
                    path = f"data.preferences[{i}].school_code"
                    problems.append(
                        Problem(path, "application.preference_duplicate_school", f"{path}: school {code} is already a preference")
                    )
                seen_schools.add(code)
        bounds = PREFERENCE_COUNT.get(level)
        if bounds is not None and not bounds[0] <= n <= bounds[1]:
            expected = f"exactly {bounds[0]}" if bounds[0] == bounds[1] else f"{bounds[0]}-{bounds[1]}"
            problems.append(
                Problem(
                    "data.preferences",
                    "application.preference_count",
                    f"data.preferences: expected {expected} for {level}, got {n}",
                )
            )
    specialized = r.get("specialized_choice")
    if specialized is not None:
        _school_code(specialized.get("school_code"), "data.specialized_choice.school_code", problems)
        if level is not None and level != "GRADE_10" and level != UNKNOWN:
            problems.append(
                Problem(
                    "data.specialized_choice",
                    "application.specialized_choice_level",
                    f"data.specialized_choice: expected only for GRADE_10, got it for {level}",
                )
            )
    priority = r.get("priority_points")
    if priority is not None and priority not in PRIORITY_POINTS:
        problems.append(
            Problem(
                "data.priority_points",
                "application.priority_points",
                f"data.priority_points: expected 0, 1.0, 1.5 or 2.0, got {priority}",
            )
        )
    encouragement = r.get("encouragement_points")
    if encouragement is not None and not _D0 <= encouragement <= _D1_5:
        problems.append(
            Problem(
                "data.encouragement_points",
                "application.encouragement_points",
                f"data.encouragement_points: expected 0-1.5, got {encouragement}",
            )
        )
    ages = AGE_FOR_LEVEL.get(level)
    year = r.get("admission_year")
    if ages is not None and born is not None and year is not None:
        age = year - born.year
        if not ages[0] <= age <= ages[1]:
            expected = str(ages[0]) if ages[0] == ages[1] else f"{ages[0]}-{ages[1]}"
            problems.append(
                Problem(
                    "data.date_of_birth",
                    "application.age_for_level",
                    f"data.date_of_birth: expected age {expected} in {year} for {level}, got {age} (born {born.isoformat()})",
                )
            )


def _enrollment_result(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["enrollment.result"], problems)
    outcome = r.get("outcome")
    school = r.get("admitted_school_code")
    rank = r.get("matched_rank")
    _school_code(school, "data.admitted_school_code", problems)
    if outcome == "ADMITTED":
        if school is None:
            problems.append(
                Problem("data.admitted_school_code", "result.admission_fields", "data.admitted_school_code: expected for ADMITTED, got none")
            )
        if rank is None:
            problems.append(Problem("data.matched_rank", "result.admission_fields", "data.matched_rank: expected for ADMITTED, got none"))
    elif outcome is not None and outcome != UNKNOWN:
        if school is not None:
            problems.append(
                Problem(
                    "data.admitted_school_code",
                    "result.admission_fields",
                    f"data.admitted_school_code: expected none for {outcome}, got {school!r}",
                )
            )
        if rank is not None:
            problems.append(
                Problem("data.matched_rank", "result.admission_fields", f"data.matched_rank: expected none for {outcome}, got {rank}")
            )
    if rank is not None and rank < 1:
        problems.append(Problem("data.matched_rank", "result.matched_rank", f"data.matched_rank: expected 1 or more, got {rank}"))
    total = r.get("total_score")
    if total is not None and total < _D0:
        problems.append(Problem("data.total_score", "result.total_score", f"data.total_score: expected 0 or more, got {total}"))


_COMPULSORY = ("MATH", "LITERATURE")


def _registration(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    _enums(r, ENUM_FIELDS["exam.registration"], problems)
    council = r.get("council_code")
    if council is not None:
        if not COUNCIL_CODE.fullmatch(council):
            problems.append(
                Problem("data.council_code", "exam.council_code.format", f"data.council_code: expected 2 digits, got {council!r}")
            )
        elif council != ctx.council_code:
            problems.append(
                Problem(
                    "data.council_code",
                    "exam.council_code.mismatch",
                    f"data.council_code: expected this hub's exam council {ctx.council_code}, got {council}",
                )
            )
    born = r.get("date_of_birth")
    _national_id(r.get("national_id"), "data.national_id", problems, born, r.get("gender"))
    _person_name(r.get("full_name"), "data.full_name", problems)
    candidate_type = r.get("candidate_type")
    school = r.get("school_code")
    if school is not None:
        _school_code(school, "data.school_code", problems)
    elif candidate_type == "CURRENT_STUDENT":
        problems.append(
            Problem("data.school_code", "exam.school_code.required", "data.school_code: expected for CURRENT_STUDENT, got none")
        )

    subjects = r.get("subjects")
    has_language = False
    if subjects is not None:
        distinct = set(subjects)
        has_language = "FOREIGN_LANGUAGE" in distinct
        if len(distinct) != len(subjects):
            seen: set[str] = set()
            for i, subject in enumerate(subjects):
                if subject in seen:
                    path = f"data.subjects[{i}]"
                    problems.append(Problem(path, "exam.subjects.duplicate", f"{path}: {subject} is registered twice"))
                seen.add(subject)
        if candidate_type == "GRADUATED_FOR_ADMISSION":
            if not 1 <= len(distinct) <= 4:
                problems.append(
                    Problem(
                        "data.subjects",
                        "exam.subjects.count",
                        f"data.subjects: expected 1-4 subjects for GRADUATED_FOR_ADMISSION, got {len(distinct)}",
                    )
                )
        elif candidate_type is not None and candidate_type != UNKNOWN:
            missing = [s for s in _COMPULSORY if s not in distinct]
            if missing:
                problems.append(
                    Problem(
                        "data.subjects",
                        "exam.subjects.compulsory_missing",
                        f"data.subjects: expected MATH and LITERATURE, missing {' and '.join(missing)}",
                    )
                )
            electives = len(distinct) - (2 - len(missing))
            if electives != 2:
                problems.append(
                    Problem(
                        "data.subjects",
                        "exam.subjects.elective_count",
                        f"data.subjects: expected exactly 2 distinct electives besides MATH and LITERATURE, got {electives}",
                    )
                )
        language = r.get("foreign_language")
        if has_language and language is None:
            problems.append(
                Problem(
                    "data.foreign_language",
                    "exam.foreign_language.required",
                    "data.foreign_language: expected N1-N7 because FOREIGN_LANGUAGE is registered, got none",
                )
            )
        elif not has_language and language is not None:
            problems.append(
                Problem(
                    "data.foreign_language",
                    "exam.foreign_language.forbidden",
                    f"data.foreign_language: expected none because FOREIGN_LANGUAGE is not registered, got {language}",
                )
            )

    year = r.get("exam_year")
    if r.get("language_exemption"):
        if subjects is not None and not has_language:
            problems.append(
                Problem(
                    "data.language_exemption",
                    "exam.exemption.requires_foreign_language",
                    "data.language_exemption: expected FOREIGN_LANGUAGE among the subjects for an exemption, got none",
                )
            )
        certificate = r.get("exemption_certificate")
        if certificate is None:
            problems.append(
                Problem(
                    "data.exemption_certificate",
                    "exam.exemption.certificate_missing",
                    "data.exemption_certificate: expected a certificate for language_exemption true, got none",
                )
            )
        else:
            expires = certificate.get("expires_on")
            if expires is not None and year is not None and expires < date(year, 6, 1):
                problems.append(
                    Problem(
                        "data.exemption_certificate.expires_on",
                        "exam.exemption.certificate_expired",
                        f"data.exemption_certificate.expires_on: expected {year}-06-01 or later, got {expires.isoformat()}",
                    )
                )

    group = r.get("priority_group")
    if group is not None and not PRIORITY_GROUP.fullmatch(group):
        problems.append(Problem("data.priority_group", "exam.priority_group", f"data.priority_group: expected 01-07, got {group!r}"))
    if born is not None and year is not None and year - born.year < EXAM_MIN_AGE:
        problems.append(
            Problem(
                "data.date_of_birth",
                "exam.candidate_age",
                f"data.date_of_birth: expected a candidate {EXAM_MIN_AGE} or older in {year},"
                f" got {year - born.year} (born {born.isoformat()})",
            )
        )


def _exam_result(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    number = r.get("candidate_number")
    if number is not None and not CANDIDATE_NUMBER.fullmatch(number):
        problems.append(
            Problem(
                "data.candidate_number",
                "exam.candidate_number.format",
                f"data.candidate_number: expected 8 digits, a council code 01-99 then 6 digits, got {number!r}",
            )
        )
    _national_id(r.get("national_id"), "data.national_id", problems, None, None)
    scores = r.get("scores")
    low = False
    if scores is not None:
        for subject, value in scores.items():
            if subject not in EXAM_SUBJECTS:
                path = f"data.scores.{subject}"
                problems.append(
                    Problem(path, "exam.result.subject_unknown", f"{path}: expected an exam subject code, got {subject!r}")
                )
            if value is None:
                continue
            if not _D0 <= value <= _D10:
                path = f"data.scores.{subject}"
                problems.append(Problem(path, "exam.result.score_range", f"{path}: expected 0-10, got {value}"))
            if value <= _D1:
                low = True
    if r.get("passed"):
        graduation = r.get("graduation_score")
        if low:
            problems.append(
                Problem(
                    "data.passed",
                    "exam.result.passed_inconsistent",
                    "data.passed: expected false because a subject score is 1.0 or lower (điểm liệt), got true",
                )
            )
        elif graduation is None or graduation < _D5:
            problems.append(
                Problem(
                    "data.passed",
                    "exam.result.passed_inconsistent",
                    f"data.passed: expected false because graduation_score is {graduation} (5.0 or more needed), got true",
                )
            )


CHECKS: dict[str, Check] = {
    "school.school": _school,
    "school.student": _student,
    "school.class": _class,
    "school.teacher": _teacher,
    "school.score": _score,
    "school.term_result": _term_result,
    "enrollment.application": _application,
    "enrollment.result": _enrollment_result,
    "exam.registration": _registration,
    "exam.result": _exam_result,
}


def apply_rules(entity: str, record: dict, context: RuleContext = RuleContext()) -> list[Problem]:
    """Check `record` (canonical datum of `entity`) against the sector rules; returns the problems.
    Rewrites values to their canonical form in place where the contract says so
    (Vietnamese mobile phones → +84XXXXXXXXX)."""
    problems: list[Problem] = []
    check = CHECKS.get(entity)
    if check is not None:
        check(record, context, problems)
    return problems

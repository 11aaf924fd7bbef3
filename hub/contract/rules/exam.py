"""Rules of the exam domain: graduation exam registrations and exam results."""

from __future__ import annotations

import re
from decimal import Decimal

from hub.contract.envelope import Problem
from hub.contract.rules.common import (
    UNKNOWN,
    Check,
    RuleContext,
    check_enums,
    check_national_id,
    check_person_name,
    check_school_code,
)

RULES: dict[str, str] = {
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

EXAM_SUBJECTS = frozenset(
    "MATH LITERATURE PHYSICS CHEMISTRY BIOLOGY HISTORY GEOGRAPHY ECONOMICS_LAW INFORMATICS"
    " TECH_INDUSTRIAL TECH_AGRICULTURAL FOREIGN_LANGUAGE".split()
)
EXAM_MIN_AGE = 16
_COMPULSORY = ("MATH", "LITERATURE")

_D0 = Decimal(0)
_D1 = Decimal(1)
_D5 = Decimal(5)
_D10 = Decimal(10)

# re.ASCII: \d and friends must not match Arabic-Indic or full-width digits.
_A = re.ASCII
COUNCIL_CODE = re.compile(r"[0-9]{2}", _A)
CANDIDATE_NUMBER = re.compile(r"(?!00)[0-9]{8}", _A)
PRIORITY_GROUP = re.compile(r"0[1-7]", _A)

# Enum-valued fields per entity: (scalar fields, array fields), for the UNKNOWN check.
ENUM_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "exam.registration": (("gender", "candidate_type", "foreign_language", "priority_area", "status"), ("subjects",)),
    "exam.result": ((), ()),
}


def _registration(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["exam.registration"], problems)
    council = r.get("council_code")
    if council is not None:
        if not COUNCIL_CODE.fullmatch(council):
            problems.append(Problem.at("data.council_code", "exam.council_code.format", f"expected 2 digits, got {council!r}"))
        elif council != ctx.council_code:
            problems.append(
                Problem.at(
                    "data.council_code",
                    "exam.council_code.mismatch",
                    f"expected this hub's exam council {ctx.council_code}, got {council}",
                )
            )
    born = r.get("date_of_birth")
    check_national_id(r.get("national_id"), "data.national_id", problems, born, r.get("gender"))
    check_person_name(r.get("full_name"), "data.full_name", problems)
    candidate_type = r.get("candidate_type")
    school = r.get("school_code")
    if school is not None:
        check_school_code(school, "data.school_code", problems)
    elif candidate_type == "CURRENT_STUDENT":
        problems.append(Problem.at("data.school_code", "exam.school_code.required", "expected for CURRENT_STUDENT, got none"))

    subjects = r.get("subjects")
    has_language = False
    if subjects is not None:
        distinct = set(subjects)
        has_language = "FOREIGN_LANGUAGE" in distinct
        if len(distinct) != len(subjects):
            seen: set[str] = set()
            for i, subject in enumerate(subjects):
                if subject in seen:
                    problems.append(
                        Problem.at(f"data.subjects[{i}]", "exam.subjects.duplicate", f"{subject} is registered twice")
                    )
                seen.add(subject)
        if candidate_type == "GRADUATED_FOR_ADMISSION":
            if not 1 <= len(distinct) <= 4:
                problems.append(
                    Problem.at(
                        "data.subjects",
                        "exam.subjects.count",
                        f"expected 1-4 subjects for GRADUATED_FOR_ADMISSION, got {len(distinct)}",
                    )
                )
        elif candidate_type is not None and candidate_type != UNKNOWN:
            missing = [s for s in _COMPULSORY if s not in distinct]
            if missing:
                problems.append(
                    Problem.at(
                        "data.subjects",
                        "exam.subjects.compulsory_missing",
                        f"expected MATH and LITERATURE, missing {' and '.join(missing)}",
                    )
                )
            electives = len(distinct) - (2 - len(missing))
            if electives != 2:
                problems.append(
                    Problem.at(
                        "data.subjects",
                        "exam.subjects.elective_count",
                        f"expected exactly 2 distinct electives besides MATH and LITERATURE, got {electives}",
                    )
                )
        language = r.get("foreign_language")
        if has_language and language is None:
            problems.append(
                Problem.at(
                    "data.foreign_language",
                    "exam.foreign_language.required",
                    "expected N1-N7 because FOREIGN_LANGUAGE is registered, got none",
                )
            )
        elif not has_language and language is not None:
            problems.append(
                Problem.at(
                    "data.foreign_language",
                    "exam.foreign_language.forbidden",
                    f"expected none because FOREIGN_LANGUAGE is not registered, got {language}",
                )
            )

    year = r.get("exam_year")
    if r.get("language_exemption"):
        if subjects is not None and not has_language:
            problems.append(
                Problem.at(
                    "data.language_exemption",
                    "exam.exemption.requires_foreign_language",
                    "expected FOREIGN_LANGUAGE among the subjects for an exemption, got none",
                )
            )
        certificate = r.get("exemption_certificate")
        if certificate is None:
            problems.append(
                Problem.at(
                    "data.exemption_certificate",
                    "exam.exemption.certificate_missing",
                    "expected a certificate for language_exemption true, got none",
                )
            )
        else:
            expires = certificate.get("expires_on")
            # Compared as (year, month, day): date(year, 6, 1) raises for a year outside 1–9999, and an
            # int exam_year may hold any of them (the age rule refuses such a year).
            if expires is not None and year is not None and (expires.year, expires.month, expires.day) < (year, 6, 1):
                problems.append(
                    Problem.at(
                        "data.exemption_certificate.expires_on",
                        "exam.exemption.certificate_expired",
                        f"expected {year}-06-01 or later, got {expires.isoformat()}",
                    )
                )

    group = r.get("priority_group")
    if group is not None and not PRIORITY_GROUP.fullmatch(group):
        problems.append(Problem.at("data.priority_group", "exam.priority_group", f"expected 01-07, got {group!r}"))
    if born is not None and year is not None and year - born.year < EXAM_MIN_AGE:
        problems.append(
            Problem.at(
                "data.date_of_birth",
                "exam.candidate_age",
                f"expected a candidate {EXAM_MIN_AGE} or older in {year},"
                f" got {year - born.year} (born {born.isoformat()})",
            )
        )


def _exam_result(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    number = r.get("candidate_number")
    if number is not None and not CANDIDATE_NUMBER.fullmatch(number):
        problems.append(
            Problem.at(
                "data.candidate_number",
                "exam.candidate_number.format",
                f"expected 8 digits, a council code 01-99 then 6 digits, got {number!r}",
            )
        )
    check_national_id(r.get("national_id"), "data.national_id", problems, None, None)
    scores = r.get("scores")
    low = False
    if scores is not None:
        for subject, value in scores.items():
            if subject not in EXAM_SUBJECTS:
                problems.append(
                    Problem.at(
                        f"data.scores.{subject}", "exam.result.subject_unknown", f"expected an exam subject code, got {subject!r}"
                    )
                )
            if value is None:
                continue
            if not _D0 <= value <= _D10:
                problems.append(Problem.at(f"data.scores.{subject}", "exam.result.score_range", f"expected 0-10, got {value}"))
            if value <= _D1:
                low = True
    if r.get("passed"):
        graduation = r.get("graduation_score")
        if low:
            problems.append(
                Problem.at(
                    "data.passed",
                    "exam.result.passed_inconsistent",
                    "expected false because a subject score is 1.0 or lower (điểm liệt), got true",
                )
            )
        elif graduation is None or graduation < _D5:
            problems.append(
                Problem.at(
                    "data.passed",
                    "exam.result.passed_inconsistent",
                    f"expected false because graduation_score is {graduation} (5.0 or more needed), got true",
                )
            )


CHECKS: dict[str, Check] = {
    "exam.registration": _registration,
    "exam.result": _exam_result,
}

"""Rules of the school domain: school, student, class, teacher, score and term_result."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from hub.contract.envelope import Problem
from hub.contract.rules.common import (
    UNKNOWN,
    Check,
    RuleContext,
    age_years,
    check_email,
    check_enums,
    check_ethnicity,
    check_national_id,
    check_nationality,
    check_person_name,
    check_phone,
    check_province_ward,
    check_school_code,
    check_school_year,
)

RULES: dict[str, str] = {
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
}

SCHOOL_SUBJECTS = frozenset(
    "MATH LITERATURE ENGLISH PHYSICS CHEMISTRY BIOLOGY HISTORY GEOGRAPHY ECONOMICS_LAW INFORMATICS"
    " TECHNOLOGY NATURAL_SCIENCE HISTORY_GEOGRAPHY CIVICS PE ARTS MUSIC FINE_ARTS EXPERIENTIAL LOCAL_EDU"
    " DEFENSE_EDU VIETNAMESE ETHICS NATURE_SOCIETY".split()
)
COMMENT_GRADED = frozenset(("PE", "ARTS", "MUSIC", "FINE_ARTS", "EXPERIENTIAL", "LOCAL_EDU"))
TEACHER_MIN_AGE = 18

_D0 = Decimal(0)
_D10 = Decimal(10)
_CENT = Decimal("0.01")
_TENTH = Decimal("0.1")

# re.ASCII: \d and friends must not match Arabic-Indic or full-width digits.
CLASS_NAME = re.compile(r"([1-9]|1[0-2])[A-Z][A-Z0-9]{0,5}", re.ASCII)

# Enum-valued fields per entity: (scalar fields, array fields), for the UNKNOWN check.
ENUM_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "school.school": (("ownership", "status"), ("levels",)),
    "school.student": (("gender", "status"), ()),
    "school.class": ((), ()),
    "school.teacher": (("gender", "status"), ("subjects",)),
    "school.score": (("subject", "kind", "pass_result"), ()),
    "school.term_result": (("learning_rating", "conduct_rating"), ()),
}


def _grade(value: Any, path: str, problems: list[Problem]) -> bool:
    if value is None:
        return False
    if 1 <= value <= 12:
        return True
    problems.append(Problem.at(path, "grade.range", f"expected 1-12, got {value}"))
    return False


def _class_name(value: Any, grade: Any, path: str, rule: str, problems: list[Problem]) -> None:
    if value is None:
        return
    m = CLASS_NAME.fullmatch(value)
    if m is None:
        problems.append(
            Problem.at(path, rule, f"expected the grade number then a letter and up to 5 letters/digits (10A1), got {value!r}")
        )
    elif grade is not None and int(m.group(1)) != grade:
        problems.append(Problem.at(path, rule, f"class {value!r} is not in grade {grade}"))


def _decimal_places_ok(value: Decimal, quantum: Decimal) -> bool:
    return value == value.quantize(quantum)


def _school(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["school.school"], problems)
    check_school_code(r.get("school_code"), "data.school_code", problems)
    levels = r.get("levels")
    if levels is not None:
        if not levels:
            problems.append(Problem.at("data.levels", "school.levels", "expected at least one level, got none"))
        elif len(set(levels)) != len(levels):
            problems.append(Problem.at("data.levels", "school.levels", f"expected no repeats, got {levels}"))
    province = check_province_ward(r, "data.", problems)
    if province is not None and province != ctx.home_province:
        problems.append(
            Problem.at(
                "data.province_code",
                "school.home_province",
                f"expected the hub's home province {ctx.home_province}, got {province}",
            )
        )
    check_phone(r, "phone", problems)


def _student(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["school.student"], problems)
    born = r.get("date_of_birth")
    check_national_id(r.get("student_id"), "data.student_id", problems, born, r.get("gender"))
    check_person_name(r.get("full_name"), "data.full_name", problems)
    check_ethnicity(r.get("ethnicity_code"), "data.ethnicity_code", problems)
    check_nationality(r.get("nationality"), "data.nationality", problems)
    check_school_code(r.get("school_code"), "data.school_code", problems)
    grade = r.get("grade")
    grade_ok = _grade(grade, "data.grade", problems)
    _class_name(r.get("class_name"), grade if grade_ok else None, "data.class_name", "student.class_name", problems)
    first = check_school_year(r.get("school_year"), "data.school_year", problems)
    if grade_ok and first is not None and born is not None:
        age = first - born.year
        if not grade + 4 <= age <= grade + 9:
            problems.append(
                Problem.at(
                    "data.date_of_birth",
                    "student.age_for_grade",
                    f"expected age {grade + 4}-{grade + 9} in {first} for grade {grade},"
                    f" got {age} (born {born.isoformat()})",
                )
            )
    address = r.get("address")
    if address is not None:
        check_province_ward(address, "data.address.", problems)
    check_phone(r, "guardian_phone", problems)


def _class(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    school_code = r.get("school_code")
    check_school_code(school_code, "data.school_code", problems)
    school_year = r.get("school_year")
    check_school_year(school_year, "data.school_year", problems)
    grade = r.get("grade")
    grade_ok = _grade(grade, "data.grade", problems)
    name = r.get("name")
    _class_name(name, grade if grade_ok else None, "data.name", "class.name", problems)
    class_id = r.get("class_id")
    expected = f"{school_code}-{school_year}-{name}"
    if class_id != expected:
        problems.append(Problem.at("data.class_id", "class.id_mismatch", f"expected {expected!r}, got {class_id!r}"))
    size = r.get("size")
    if size is not None and not 0 <= size <= 60:
        problems.append(Problem.at("data.size", "class.size_range", f"expected 0-60, got {size}"))


def _teacher(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["school.teacher"], problems)
    born = r.get("date_of_birth")
    check_national_id(r.get("national_id"), "data.national_id", problems, born, r.get("gender"))
    check_person_name(r.get("full_name"), "data.full_name", problems)
    if born is not None:
        today = ctx.today or date.today()
        age = age_years(born, today)
        if age < TEACHER_MIN_AGE:
            problems.append(
                Problem.at(
                    "data.date_of_birth",
                    "teacher.age",
                    f"expected a teacher at least {TEACHER_MIN_AGE} on {today.isoformat()},"
                    f" got age {age} (born {born.isoformat()})",
                )
            )
    check_school_code(r.get("school_code"), "data.school_code", problems)
    subjects = r.get("subjects")
    if subjects is not None:
        if not subjects:
            problems.append(Problem.at("data.subjects", "teacher.subjects", "expected at least one subject, got none"))
        seen: set[str] = set()
        for i, subject in enumerate(subjects):
            if subject in seen:
                problems.append(Problem.at(f"data.subjects[{i}]", "teacher.subjects", f"{subject} is listed twice"))
            seen.add(subject)
            if subject not in SCHOOL_SUBJECTS and subject != UNKNOWN:
                problems.append(
                    Problem.at(f"data.subjects[{i}]", "subject.unknown", f"expected a school subject code, got {subject!r}")
                )
    check_phone(r, "phone", problems)
    check_email(r.get("email"), "data.email", problems)


def _score(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["school.score"], problems)
    check_national_id(r.get("student_id"), "data.student_id", problems, None, None)
    check_school_code(r.get("school_code"), "data.school_code", problems)
    check_school_year(r.get("school_year"), "data.school_year", problems)
    term = r.get("term")
    if term is not None and term != 1 and term != 2:
        problems.append(Problem.at("data.term", "score.term", f"expected 1 or 2, got {term}"))
    subject = r.get("subject")
    if subject is not None and subject != UNKNOWN and subject not in SCHOOL_SUBJECTS:
        problems.append(Problem.at("data.subject", "subject.unknown", f"expected a school subject code, got {subject!r}"))
    seq = r.get("seq")
    kind = r.get("kind")
    if seq is not None:
        if seq < 1:
            problems.append(Problem.at("data.seq", "score.seq", f"expected 1 or more, got {seq}"))
        elif seq != 1 and kind is not None and kind != "REGULAR":
            problems.append(Problem.at("data.seq", "score.seq", f"expected 1 for a {kind} mark, got {seq}"))
    score = r.get("score")
    passed = r.get("pass_result")
    if subject is not None and subject != UNKNOWN:
        if subject in COMMENT_GRADED:
            if score is not None:
                problems.append(
                    Problem.at("data.score", "score.grading_mode", f"{subject} is graded by comment, expected no score, got {score}")
                )
            if passed is None:
                problems.append(
                    Problem.at("data.pass_result", "score.grading_mode", f"{subject} is graded by comment, expected PASS or FAIL, got none")
                )
        else:
            if passed is not None:
                problems.append(
                    Problem.at("data.pass_result", "score.grading_mode", f"{subject} is graded by score, expected no pass_result, got {passed}")
                )
            if score is None:
                problems.append(
                    Problem.at("data.score", "score.grading_mode", f"{subject} is graded by score, expected a score 0-10, got none")
                )
    if score is not None and not (_D0 <= score <= _D10 and _decimal_places_ok(Decimal(score), _CENT)):
        problems.append(Problem.at("data.score", "score.range", f"expected 0-10 with at most 2 decimal places, got {score}"))


def _term_result(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["school.term_result"], problems)
    check_national_id(r.get("student_id"), "data.student_id", problems, None, None)
    check_school_code(r.get("school_code"), "data.school_code", problems)
    check_school_year(r.get("school_year"), "data.school_year", problems)
    term = r.get("term")
    if term is not None and term != "1" and term != "2" and term != "YEAR":
        problems.append(Problem.at("data.term", "term_result.term", f"expected 1, 2 or YEAR, got {term!r}"))
    average = r.get("average_score")
    if average is not None and not (_D0 <= average <= _D10 and _decimal_places_ok(Decimal(average), _TENTH)):
        problems.append(
            Problem.at(
                "data.average_score",
                "term_result.average_range",
                f"expected 0-10 with at most 1 decimal place, got {average}",
            )
        )


CHECKS: dict[str, Check] = {
    "school.school": _school,
    "school.student": _student,
    "school.class": _class,
    "school.teacher": _teacher,
    "school.score": _score,
    "school.term_result": _term_result,
}

"""Rules of the enrollment domain: admission applications and their results."""

from __future__ import annotations

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
}

PRIORITY_POINTS = frozenset((Decimal(0), Decimal("1.0"), Decimal("1.5"), Decimal("2.0")))
# Admission preferences and ages per level: (min count, max count), (min age, max age).
PREFERENCE_COUNT = {"GRADE_1": (1, 1), "GRADE_6": (1, 1), "GRADE_10": (1, 2)}
AGE_FOR_LEVEL = {"GRADE_1": (6, 6), "GRADE_6": (11, 14), "GRADE_10": (15, 20)}

_D0 = Decimal(0)
_D1_5 = Decimal("1.5")

# Enum-valued fields per entity: (scalar fields, array fields), for the UNKNOWN check.
ENUM_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "enrollment.application": (("level", "gender", "status"), ()),
    "enrollment.result": (("outcome",), ()),
}


def _application(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["enrollment.application"], problems)
    born = r.get("date_of_birth")
    check_national_id(r.get("applicant_id"), "data.applicant_id", problems, born, r.get("gender"))
    check_person_name(r.get("full_name"), "data.full_name", problems)
    check_school_code(r.get("current_school_code"), "data.current_school_code", problems)
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
                    problems.append(
                        Problem.at(
                            f"data.preferences[{i}].rank",
                            "application.preference_ranks",
                            f"expected ranks 1..{n} each once, got {rank}" + (" again" if rank in seen_ranks else ""),
                        )
                    )
                seen_ranks.add(rank)
            code = pref.get("school_code")
            if code is not None:
                path = f"data.preferences[{i}].school_code"
                check_school_code(code, path, problems)
                if code in seen_schools:
                    problems.append(
                        Problem.at(path, "application.preference_duplicate_school", f"school {code} is already a preference")
                    )
                seen_schools.add(code)
        bounds = PREFERENCE_COUNT.get(level)
        if bounds is not None and not bounds[0] <= n <= bounds[1]:
            expected = f"exactly {bounds[0]}" if bounds[0] == bounds[1] else f"{bounds[0]}-{bounds[1]}"
            problems.append(
                Problem.at("data.preferences", "application.preference_count", f"expected {expected} for {level}, got {n}")
            )
    specialized = r.get("specialized_choice")
    if specialized is not None:
        check_school_code(specialized.get("school_code"), "data.specialized_choice.school_code", problems)
        if level is not None and level != "GRADE_10" and level != UNKNOWN:
            problems.append(
                Problem.at(
                    "data.specialized_choice",
                    "application.specialized_choice_level",
                    f"expected only for GRADE_10, got it for {level}",
                )
            )
    priority = r.get("priority_points")
    if priority is not None and priority not in PRIORITY_POINTS:
        problems.append(
            Problem.at("data.priority_points", "application.priority_points", f"expected 0, 1.0, 1.5 or 2.0, got {priority}")
        )
    encouragement = r.get("encouragement_points")
    if encouragement is not None and not _D0 <= encouragement <= _D1_5:
        problems.append(
            Problem.at(
                "data.encouragement_points", "application.encouragement_points", f"expected 0-1.5, got {encouragement}"
            )
        )
    ages = AGE_FOR_LEVEL.get(level)
    year = r.get("admission_year")
    if ages is not None and born is not None and year is not None:
        age = year - born.year
        if not ages[0] <= age <= ages[1]:
            expected = str(ages[0]) if ages[0] == ages[1] else f"{ages[0]}-{ages[1]}"
            problems.append(
                Problem.at(
                    "data.date_of_birth",
                    "application.age_for_level",
                    f"expected age {expected} in {year} for {level}, got {age} (born {born.isoformat()})",
                )
            )


def _enrollment_result(r: dict, ctx: RuleContext, problems: list[Problem]) -> None:
    check_enums(r, ENUM_FIELDS["enrollment.result"], problems)
    outcome = r.get("outcome")
    school = r.get("admitted_school_code")
    rank = r.get("matched_rank")
    check_school_code(school, "data.admitted_school_code", problems)
    if outcome == "ADMITTED":
        if school is None:
            problems.append(
                Problem.at("data.admitted_school_code", "result.admission_fields", "expected for ADMITTED, got none")
            )
        if rank is None:
            problems.append(Problem.at("data.matched_rank", "result.admission_fields", "expected for ADMITTED, got none"))
    elif outcome is not None and outcome != UNKNOWN:
        if school is not None:
            problems.append(
                Problem.at(
                    "data.admitted_school_code", "result.admission_fields", f"expected none for {outcome}, got {school!r}"
                )
            )
        if rank is not None:
            problems.append(
                Problem.at("data.matched_rank", "result.admission_fields", f"expected none for {outcome}, got {rank}")
            )
    if rank is not None and rank < 1:
        problems.append(Problem.at("data.matched_rank", "result.matched_rank", f"expected 1 or more, got {rank}"))
    total = r.get("total_score")
    if total is not None and total < _D0:
        problems.append(Problem.at("data.total_score", "result.total_score", f"expected 0 or more, got {total}"))


CHECKS: dict[str, Check] = {
    "enrollment.application": _application,
    "enrollment.result": _enrollment_result,
}

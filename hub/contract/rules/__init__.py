"""Sector rules that Avro cannot express (data dictionary §2 and each entity's Rules), each with a stable id."""

from __future__ import annotations

from hub.contract.envelope import Problem
from hub.contract.rules import enrollment, exam, school
from hub.contract.rules.common import RULES as COMMON_RULES
from hub.contract.rules.common import Check, RuleContext

# The checks live by domain (school, enrollment, exam) over the shared ones in `common`; this module
# joins their rule ids and sends a record to its entity's checks.
__all__ = ["CHECKS", "DECISIONS", "RULES", "RuleContext", "apply_rules"]

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

# Every rule id with what it checks; schemas/README.md lists them.
RULES: dict[str, str] = {**COMMON_RULES, **school.RULES, **enrollment.RULES, **exam.RULES}

CHECKS: dict[str, Check] = {**school.CHECKS, **enrollment.CHECKS, **exam.CHECKS}


def apply_rules(entity: str, record: dict, context: RuleContext = RuleContext()) -> list[Problem]:
    """Check `record` (canonical datum of `entity`) against the sector rules; returns the problems.
    Rewrites values to their canonical form in place where the contract says so
    (Vietnamese mobile phones → +84XXXXXXXXX)."""
    problems: list[Problem] = []
    check = CHECKS.get(entity)
    if check is not None:
        check(record, context, problems)
    return problems

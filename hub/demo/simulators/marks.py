"""The school year of upper-secondary schools: subjects, elective groups, the term calendar, marks and ratings."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

SCHOOL_YEAR = "2025-2026"

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
# Marks per term and subject in the seeded cohort (Thông tư 22/2021): term 1 is complete,
# term 2 has begun.
TERM_1_MARKS = (("REGULAR", 1), ("REGULAR", 2), ("MIDTERM", 1), ("FINAL", 1))
TERM_2_MARKS = (("REGULAR", 1),)
REGULAR_PER_TERM = 3

_CENT = Decimal("0.01")
_TENTH = Decimal("0.1")


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

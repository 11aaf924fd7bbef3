"""The exam registration system's ingest envelopes (`ExamRegistrationSimulator`), valid or broken in one way."""

from __future__ import annotations

import copy
import random
import re
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hub.demo.simulators.people import (BIRTH_PROVINCES, HAIPHONG_SCHOOLS, SOURCE_ID, VN_TZ, _rfc3339, _weighted,
                                        person_id, vietnamese_name)

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

    def reserve(self, registration_ids) -> None:
        """Never hand out these registration numbers (a database kept from an earlier run holds them)."""
        self._used_ids.update(registration_ids)

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

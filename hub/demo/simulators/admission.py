"""The online admission portal (tuyển sinh trực tuyến): applications and results, as signed JSON over HTTP."""

from __future__ import annotations

import copy
import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

# The hub's own scheme, so the portal signs exactly as the HTTP connector verifies.
from hub.contract.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, sign
from hub.demo.simulators.marks import _CENT
from hub.demo.simulators.people import (BIRTH_PROVINCES, HAIPHONG_SCHOOLS, SOURCE_ID, VN_TZ, _birth, _exported_name,
                                        _rfc3339, _weighted, person_id, vietnamese_name)

if TYPE_CHECKING:  # httpx is only needed by AdmissionPortal.post, which receives a client
    import httpx

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

"""The exam registration system writing its registrations through a transactional outbox (Debezium's outbox columns)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from hub.demo.simulators.exam import ENTITY, ExamRegistrationSimulator
from hub.demo.simulators.people import _Clock, _vn_wall


def outbox_metadata() -> sa.MetaData:
    """The exam registration system's own `registrations` table and its `outbox` table."""
    md = sa.MetaData()
    sa.Table(
        "registrations", md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("registration_id", sa.String(20), nullable=False, unique=True),
        sa.Column("exam_year", sa.Integer(), nullable=False),
        sa.Column("council_code", sa.String(2), nullable=False),
        sa.Column("national_id", sa.String(12), nullable=False),
        sa.Column("full_name", sa.String(120), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(6), nullable=False),
        sa.Column("candidate_type", sa.String(30), nullable=False),
        sa.Column("school_code", sa.String(12)),
        sa.Column("subjects", sa.Text(), nullable=False),  # JSON text
        sa.Column("foreign_language", sa.String(2)),
        sa.Column("language_exemption", sa.Boolean(), nullable=False),
        sa.Column("exemption_certificate", sa.Text()),  # JSON text {"kind", "expires_on"}
        sa.Column("priority_area", sa.String(6), nullable=False),
        sa.Column("priority_group", sa.String(2)),
        sa.Column("registered_at", sa.DateTime(), nullable=False),  # naive local Vietnam time
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "outbox", md,
        sa.Column("id", sa.Text(), primary_key=True),  # a UUID
        sa.Column("seq", sa.Integer(), nullable=False, unique=True),  # write order
        sa.Column("aggregatetype", sa.Text(), nullable=False),
        sa.Column("aggregateid", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True, index=True),
    )
    return md


def outbox_connector_config(url: str, source: str = "exam-reg", name: str = "exam-outbox") -> dict[str, Any]:
    """The hub.yaml `connectors:` entry (kind `outbox`) reading an `ExamRegistrationOutbox`.

    >>> outbox_connector_config("sqlite:///exam.db")["published_column"]
    'published_at'
    """
    return {
        "name": name,
        "kind": "outbox",
        "source": source,
        "url": url,
        "table": "outbox",
        "published_column": "published_at",
        "occurred_column": "created_at",
    }


class ExamRegistrationOutbox:
    """The exam registration system (đăng ký thi trực tuyến) writing through a transactional outbox.

    Each `submit`ted change writes the `registrations` row and its `outbox` row in ONE
    transaction (the outbox pattern): the outbox row carries the registration exactly in the
    dictionary's JSON form (`payload`), the entity (`aggregatetype`), its key (`aggregateid`)
    and the op (`type`); `seq` orders the rows. The data come from `ExamRegistrationSimulator`
    (creations mostly, some updates); its broken envelopes are skipped unless `include_bad`.

    >>> exam = ExamRegistrationOutbox("sqlite://", seed=2)
    >>> exam.create_schema()
    >>> changes = exam.submit(3)
    >>> len(changes), exam.count("outbox"), exam.count("registrations") == sum(op == "c" for _, op in changes)
    (3, 3, True)
    """

    connector_config = staticmethod(outbox_connector_config)

    def __init__(self, url: str, seed: int | None = None, council_code: str = "03", exam_year: int = 2026,
                 bad_ratio: float = 0.0) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.metadata = outbox_metadata()
        self.tables: dict[str, sa.Table] = dict(self.metadata.tables)
        self.simulator = ExamRegistrationSimulator(seed=seed, council_code=council_code, exam_year=exam_year,
                                                   bad_ratio=bad_ratio)
        self._clock = _Clock()
        self._reserved = False

    def create_schema(self) -> None:
        """Create `registrations` and `outbox` (existing tables are kept)."""
        self.metadata.create_all(self.engine)

    def count(self, table: str) -> int:
        if table not in self.tables:
            raise ValueError(f"unknown table {table!r}; one of {', '.join(self.tables)}")
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.tables[table])).scalar_one())

    def submit(self, n: int, include_bad: bool = False) -> list[tuple[str, str]]:
        """Write `n` registration changes, each in one transaction with its outbox row.
        Returns (registration_id, op) per change."""
        if self.simulator.bad_ratio >= 1.0 and not include_bad:
            raise ValueError("with bad_ratio 1.0 every registration is broken: pass include_bad=True")
        if not self._reserved:  # the demo database outlives a run: never create a registration it holds
            with self.engine.connect() as conn:
                reg = self.tables["registrations"]
                self.simulator.reserve(conn.execute(sa.select(reg.c.registration_id)).scalars())
            self._reserved = True
        done: list[tuple[str, str]] = []
        while len(done) < n:
            envelope = self.simulator.envelope(datetime.now(UTC))
            if self.simulator.last_bad_kind is not None and not include_bad:
                continue
            op = self._write(envelope["op"], envelope["key"], envelope["data"], envelope["event_id"])
            done.append((envelope["key"], op))
        return done

    def _write(self, op: str, key: str, data: dict[str, Any], outbox_id: str) -> str:
        """Write the registration and its outbox row in one transaction; returns the op written."""
        reg, outbox = self.tables["registrations"], self.tables["outbox"]
        now = self._clock()
        with self.engine.begin() as conn:
            values = self._registration_columns(data)
            if op != "c":
                updated = conn.execute(reg.update().where(reg.c.registration_id == key)
                                       .values(**values, updated_at=now)).rowcount
                if not updated:  # the creation was a skipped bad envelope: this is the first write
                    op = "c"
            if op == "c":
                conn.execute(reg.insert().values(**values, created_at=now, updated_at=now))
            seq = (conn.execute(sa.select(sa.func.max(outbox.c.seq))).scalar_one() or 0) + 1
            conn.execute(outbox.insert().values(
                id=outbox_id, seq=seq, aggregatetype=ENTITY, aggregateid=key, type=op,
                payload=json.dumps(data, ensure_ascii=False), created_at=now, published_at=None,
            ))
        return op

    def publish_results(self, n: int) -> list[str]:
        """Publish exam results (exam.result) of `n` registered candidates through the same outbox.

        Scores are realistic (a few weak candidates fail); `passed` follows the rule of the
        dictionary: every score above 1.0 and a graduation score of at least 5.0. Returns the keys.
        """
        rng = self.simulator.rng
        reg, outbox = self.tables["registrations"], self.tables["outbox"]
        keys: list[str] = []
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(reg.c.national_id, reg.c.subjects, reg.c.exam_year)
                                .order_by(sa.func.random()).limit(n)).all()
            seq = conn.execute(sa.select(sa.func.max(outbox.c.seq))).scalar_one() or 0
            now = self._clock()
            for national_id, subjects, exam_year in rows:
                ability = rng.uniform(3.0, 9.5)
                scores = {s: round(min(10.0, max(0.0, rng.gauss(ability, 1.2))) * 4) / 4 for s in json.loads(subjects)}
                graduation = round(sum(scores.values()) / len(scores), 2)
                candidate = f"{self.simulator.council_code}{rng.randrange(10**6):06d}"
                key = f"{exam_year}|{candidate}"
                payload = {"exam_year": exam_year, "candidate_number": candidate, "national_id": national_id,
                           "scores": {s: f"{v:.2f}" for s, v in scores.items()},
                           "graduation_score": f"{graduation:.2f}",
                           "passed": all(v > 1.0 for v in scores.values()) and graduation >= 5.0}
                seq += 1
                conn.execute(outbox.insert().values(
                    id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), seq=seq, aggregatetype="exam.result",
                    aggregateid=key, type="c", payload=json.dumps(payload), created_at=now, published_at=None))
                keys.append(key)
        return keys

    @staticmethod
    def _registration_columns(data: dict[str, Any]) -> dict[str, Any]:
        values = dict(data)
        values["date_of_birth"] = date.fromisoformat(data["date_of_birth"])
        values["registered_at"] = _vn_wall(datetime.fromisoformat(data["registered_at"]))
        values["subjects"] = json.dumps(data["subjects"])
        certificate = data.get("exemption_certificate")
        values["exemption_certificate"] = json.dumps(certificate) if certificate is not None else None
        return values

"""The school-management system (SMAS-like): seeding a cohort, a school day of changes and rows the hub must reject."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from hub.demo.simulators.marks import (_CENT, COMMENT_GRADED_SUBJECTS, CORE_SCHOOL_SUBJECTS, ELECTIVE_GROUPS,
                                       REGULAR_PER_TERM, SCHOOL_YEAR, _mark, _school_year_first)
from hub.demo.simulators.people import HAIPHONG_SCHOOLS, _Clock
from hub.demo.simulators.smas_rows import HOME_PROVINCE, _CohortRows, _wards
from hub.demo.simulators.smas_schema import SMAS_BAD_KINDS, SMAS_TABLES, smas_connector_configs, smas_metadata


class SchoolManagementDatabase(_CohortRows):
    """The school-management system (SMAS-like) of a cluster of Hải Phòng upper-secondary schools.

    `seed` fills the six tables with a realistic cohort; `step` makes the changes of a school
    day (new marks mostly, corrections, a transfer, a mark deleted by mistake); `bad_rows`
    inserts rows the hub must reject (`SMAS_BAD_KINDS`). Rows keep `created_at`/`updated_at`
    in naive local Vietnam time and are soft-deleted through `deleted_at`, which is what the
    `sql` connector reads (`smas_connector_configs`). Row contents are deterministic for a
    seed; the timestamps are the real time of writing.

    >>> smas = SchoolManagementDatabase("sqlite://", seed=1)
    >>> smas.create_schema()
    >>> smas.seed(schools=1, classes_per_school=3, students_per_class=5, teachers_per_school=4)["students"]
    15
    >>> changes = smas.step(5)
    >>> len(changes), all(table in SMAS_TABLES for table, op in changes)
    (5, True)
    """

    connector_configs = staticmethod(smas_connector_configs)

    def __init__(self, url: str, seed: int | None = None, school_year: str = SCHOOL_YEAR) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.school_year = school_year
        self.first_year = _school_year_first(school_year)
        self.engine = sa.create_engine(url)
        self.metadata = smas_metadata()
        self.tables: dict[str, sa.Table] = dict(self.metadata.tables)
        self._clock = _Clock()
        self._used_ids: set[str] | None = None
        self._bad_done = 0

    # -- schema and counts ------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the six tables (existing ones are kept)."""
        self.metadata.create_all(self.engine)

    def count(self, table: str, include_deleted: bool = True) -> int:
        """Rows in `table`; soft-deleted ones too unless `include_deleted` is false."""
        t = self._table(table)
        query = sa.select(sa.func.count()).select_from(t)
        if not include_deleted:
            query = query.where(t.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _table(self, name: str) -> sa.Table:
        try:
            return self.tables[name]
        except KeyError:
            raise ValueError(f"unknown table {name!r}; one of {', '.join(self.tables)}") from None

    # -- the cohort --------------------------------------------------------------------------

    def seed(self, schools: int = 5, classes_per_school: int = 4, students_per_class: int = 30,
             teachers_per_school: int = 8) -> dict[str, int]:
        """Insert a cohort: schools from `HAIPHONG_SCHOOLS`, their teachers, classes 10A1..12An,
        students of the right age, marks of term 1 (and the first of term 2) and term-1 results.
        Returns the rows inserted per table."""
        if not 1 <= schools <= len(HAIPHONG_SCHOOLS):
            raise ValueError(f"schools must be 1-{len(HAIPHONG_SCHOOLS)}, got {schools}")
        if classes_per_school < 1 or teachers_per_school < 1:
            raise ValueError("classes_per_school and teachers_per_school must be at least 1")
        if not 0 <= students_per_class <= 60:
            raise ValueError(f"students_per_class must be 0-60 (the class size rule), got {students_per_class}")
        self.create_schema()
        if self.count("schools"):
            raise RuntimeError("the database is already seeded; use step() for further changes")
        rng = self.rng
        now = self._clock()
        stamps = {"created_at": now, "updated_at": now, "deleted_at": None}
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in SMAS_TABLES}
        with self.engine.begin() as conn:
            for code in sorted(rng.sample(sorted(HAIPHONG_SCHOOLS), schools)):
                rows["schools"].append({**self._school_row(code), **stamps})
                teachers = [self._teacher_row(conn, code, i) for i in range(teachers_per_school)]
                rows["teachers"].extend({**t, **stamps} for t in teachers)
                for i in range(classes_per_school):
                    grade, number = 10 + i % 3, i // 3 + 1
                    name = f"{grade}A{number}"
                    rows["classes"].append({
                        "class_id": f"{code}-{self.school_year}-{name}",
                        "school_code": code,
                        "school_year": self.school_year,
                        "grade": grade,
                        "name": name,
                        "homeroom_teacher_id": teachers[i % len(teachers)]["teacher_id"],
                        "size": students_per_class,
                        **stamps,
                    })
                    group = ELECTIVE_GROUPS[(number + grade) % len(ELECTIVE_GROUPS)]
                    subjects = (*CORE_SCHOOL_SUBJECTS, group[0], "PE")
                    for _ in range(students_per_class):
                        student = self._student_row(conn, code, grade, name)
                        rows["students"].append({**student, **stamps})
                        scores, result = self._student_marks(student, subjects, teachers, now)
                        rows["scores"].extend({**s, **stamps} for s in scores)
                        rows["term_results"].append({**result, **stamps})
            for table, table_rows in rows.items():
                if table_rows:
                    conn.execute(self.tables[table].insert(), table_rows)
        return {table: len(table_rows) for table, table_rows in rows.items()}

    # -- a school day of changes -------------------------------------------------------------

    def step(self, n: int = 10) -> list[tuple[str, str]]:
        """Make `n` changes, each in its own transaction, with `updated_at` set to now.

        Mostly new marks, some corrected marks, now and then a student transferring to another
        school (status TRANSFERRED) and rarely a mark soft-deleted (entered by mistake).
        Returns (table, op) per change, op being c, u or d (a soft delete).
        """
        if not self.count("students"):
            raise RuntimeError("nothing to change: seed() the database first")
        changes = []
        for _ in range(n):
            change = self.rng.choices(("new_score", "update_score", "transfer", "delete_score"),
                                      weights=(68, 20, 7, 5))[0]
            with self.engine.begin() as conn:
                done = getattr(self, "_" + change)(conn)
                if done is None:  # nothing to transfer or correct any more: a new mark instead
                    done = self._new_score(conn)
            changes.append(done)
        return changes

    def _studying(self, conn: sa.Connection) -> list[Any]:
        st = self.tables["students"]
        return list(conn.execute(
            sa.select(st.c.id, st.c.student_id, st.c.school_code, st.c.grade, st.c.class_name)
            .where(st.c.deleted_at.is_(None), st.c.status == "STUDYING").order_by(st.c.id)
        ))

    def _next_seq(self, conn: sa.Connection, student_id: str, term: int, subject: str, kind: str) -> int:
        sc = self.tables["scores"]
        top = conn.execute(
            sa.select(sa.func.max(sc.c.seq)).where(
                sc.c.student_id == student_id, sc.c.school_year == self.school_year, sc.c.term == term,
                sc.c.subject == subject, sc.c.kind == kind)
        ).scalar_one()
        return (top or 0) + 1

    def _new_score(self, conn: sa.Connection) -> tuple[str, str]:
        rng = self.rng
        sc, te = self.tables["scores"], self.tables["teachers"]
        studying = self._studying(conn)
        if not studying:
            raise RuntimeError("no student is studying any more: nothing to mark")
        student = rng.choice(studying)
        previous = list(conn.execute(
            sa.select(sc.c.subject, sc.c.term, sc.c.kind, sc.c.score)
            .where(sc.c.student_id == student.student_id, sc.c.school_year == self.school_year)
            .order_by(sc.c.id)
        ))
        subjects = sorted({p.subject for p in previous}) or list(CORE_SCHOOL_SUBJECTS)
        subject = rng.choice(subjects)
        term = 2
        kinds = [p.kind for p in previous if p.term == term and p.subject == subject]
        if kinds.count("REGULAR") < REGULAR_PER_TERM:
            kind = "REGULAR"
        elif "MIDTERM" not in kinds:
            kind = "MIDTERM"
        elif "FINAL" not in kinds:
            kind = "FINAL"
        else:
            kind = "REGULAR"
        seq = self._next_seq(conn, student.student_id, term, subject, kind) if kind == "REGULAR" else 1
        marks = [float(p.score) for p in previous if p.score is not None]
        ability = sum(marks) / len(marks) if marks else 6.9
        teacher = None
        for row in conn.execute(sa.select(te.c.teacher_id, te.c.subjects)
                                .where(te.c.school_code == student.school_code, te.c.deleted_at.is_(None))
                                .order_by(te.c.id)):
            if subject in json.loads(row.subjects):
                teacher = row.teacher_id
                break
        now = self._clock()
        comment = subject in COMMENT_GRADED_SUBJECTS
        conn.execute(sc.insert().values(
            student_id=student.student_id, school_code=student.school_code, school_year=self.school_year,
            term=term, subject=subject, kind=kind, seq=seq,
            score=None if comment else self._num(_mark(rng, ability, kind)),
            pass_result=("PASS" if rng.random() < 0.97 else "FAIL") if comment else None,
            teacher_id=teacher, recorded_at=now, created_at=now, updated_at=now, deleted_at=None,
        ))
        return ("scores", "c")

    def _live_score_ids(self, conn: sa.Connection) -> list[int]:
        sc = self.tables["scores"]
        return list(conn.execute(sa.select(sc.c.id).where(sc.c.deleted_at.is_(None)).order_by(sc.c.id)).scalars())

    def _update_score(self, conn: sa.Connection) -> tuple[str, str] | None:
        rng = self.rng
        sc = self.tables["scores"]
        ids = self._live_score_ids(conn)
        if not ids:
            return None
        row = conn.execute(sa.select(sc).where(sc.c.id == rng.choice(ids))).one()
        now = self._clock()
        if row.score is not None:
            # A correction: a mark mistyped or re-marked after an appeal, by a quarter to one point.
            delta = Decimal(rng.choice(("-1", "-0.5", "-0.25", "0.25", "0.5", "1")))
            new = min(Decimal(10), max(Decimal(0), Decimal(str(row.score)) + delta)).quantize(_CENT)
            if new == Decimal(str(row.score)).quantize(_CENT):
                new = (new - delta).quantize(_CENT)
            values: dict[str, Any] = {"score": self._num(new)}
        else:
            values = {"pass_result": "FAIL" if row.pass_result == "PASS" else "PASS"}
        conn.execute(sc.update().where(sc.c.id == row.id).values(**values, recorded_at=now, updated_at=now))
        return ("scores", "u")

    def _transfer(self, conn: sa.Connection) -> tuple[str, str] | None:
        st = self.tables["students"]
        studying = self._studying(conn)
        everyone = conn.execute(sa.select(sa.func.count()).select_from(st).where(st.c.deleted_at.is_(None))).scalar()
        # Transfers stop at half the cohort: a long-running demo must keep students to mark.
        if len(studying) <= (everyone or 0) // 2:
            return None
        student = self.rng.choice(studying)
        conn.execute(st.update().where(st.c.id == student.id).values(status="TRANSFERRED", updated_at=self._clock()))
        return ("students", "u")

    def _delete_score(self, conn: sa.Connection) -> tuple[str, str] | None:
        sc = self.tables["scores"]
        ids = self._live_score_ids(conn)
        if not ids:
            return None
        now = self._clock()
        conn.execute(sc.update().where(sc.c.id == self.rng.choice(ids)).values(deleted_at=now, updated_at=now))
        return ("scores", "d")

    # -- rows the hub must reject ------------------------------------------------------------

    def bad_rows(self, n: int, kinds: Sequence[str] | None = None) -> list[tuple[str, int, str]]:
        """Insert `n` invalid rows, each breaking exactly one rule; kinds cycle through
        `SMAS_BAD_KINDS` (or `kinds`). Returns (table, row id, rule id the hub reports)."""
        chosen = list(kinds) if kinds is not None else list(SMAS_BAD_KINDS)
        for kind in chosen:
            if kind not in SMAS_BAD_KINDS:
                raise ValueError(f"unknown bad kind {kind!r}; one of {', '.join(SMAS_BAD_KINDS)}")
        if not self.count("students"):
            raise RuntimeError("seed() the database first: bad rows refer to its schools and students")
        out = []
        for _ in range(n):
            kind = chosen[self._bad_done % len(chosen)]
            self._bad_done += 1
            table, rule = SMAS_BAD_KINDS[kind]
            with self.engine.begin() as conn:
                row = self._bad_row(conn, kind)
                now = self._clock()
                row.update(created_at=now, updated_at=now, deleted_at=None)
                row_id = conn.execute(self.tables[table].insert().values(**row)).inserted_primary_key[0]
            out.append((table, int(row_id), rule))
        return out

    def _bad_row(self, conn: sa.Connection, kind: str) -> dict[str, Any]:
        rng = self.rng
        cl = self.tables["classes"]
        if kind in ("score_over_10", "score_for_comment_subject", "midterm_seq_2"):
            student = rng.choice(self._studying(conn))
            subject = "PE" if kind == "score_for_comment_subject" else "MATH"
            item = "MIDTERM" if kind == "midterm_seq_2" else "REGULAR"
            seq = self._next_seq(conn, student.student_id, 2, subject, item)
            return {
                "student_id": student.student_id, "school_code": student.school_code,
                "school_year": self.school_year, "term": 2, "subject": subject, "kind": item,
                "seq": max(seq, 2) if item == "MIDTERM" else seq,
                "score": self._num(Decimal("11.5") if kind == "score_over_10" else Decimal("8")),
                "pass_result": None, "teacher_id": None, "recorded_at": self._clock(),
            }
        if kind == "average_over_10":
            tr = self.tables["term_results"]
            taken = {(r.student_id, r.term) for r in conn.execute(sa.select(tr.c.student_id, tr.c.term))}
            studying = self._studying(conn)
            for student in rng.sample(studying, k=len(studying)):
                for term in ("2", "YEAR"):
                    if (student.student_id, term) not in taken:
                        return {
                            "student_id": student.student_id, "school_code": student.school_code,
                            "school_year": self.school_year, "term": term, "learning_rating": "TOT",
                            "conduct_rating": "TOT", "average_score": self._num(Decimal("10.5")),
                        }
            raise RuntimeError("every studying student has all term results: no room for a bad one")
        klass = rng.choice(list(conn.execute(sa.select(cl).where(cl.c.deleted_at.is_(None)).order_by(cl.c.id))))
        if kind == "class_over_60":
            names = set(conn.execute(sa.select(cl.c.name).where(cl.c.school_code == klass.school_code)).scalars())
            number = next(k for k in range(1, 100) if f"{klass.grade}A{k}" not in names)
            name = f"{klass.grade}A{number}"
            return {
                "class_id": f"{klass.school_code}-{self.school_year}-{name}", "school_code": klass.school_code,
                "school_year": self.school_year, "grade": klass.grade, "name": name,
                "homeroom_teacher_id": None, "size": rng.randint(61, 68),
            }
        if kind == "teacher_subject_twice":
            te = self.tables["teachers"]
            ids = set(conn.execute(sa.select(te.c.teacher_id).where(te.c.school_code == klass.school_code)).scalars())
            number = next(k for k in range(1, 10_000) if f"{klass.school_code}GV{k:03d}" not in ids)
            row = self._teacher_row(conn, klass.school_code, number - 1)
            main = json.loads(row["subjects"])[0]
            row["subjects"] = json.dumps([main, main])
            return row
        # The student kinds: a new learner of an existing class, wrong in one way.
        if kind == "student_too_old_for_grade":
            row = self._student_row(conn, klass.school_code, klass.grade, klass.name,
                                    birth_year=self.first_year - klass.grade - rng.randint(10, 12))
        else:
            row = self._student_row(conn, klass.school_code, klass.grade, klass.name)
        if kind == "student_id_gender_digit":
            pid = row["student_id"]
            row["student_id"] = f"{pid[:3]}{int(pid[3]) ^ 1}{pid[4:]}"
        elif kind == "class_name_other_grade":
            other = rng.choice([g for g in (10, 11, 12) if g != klass.grade])
            row["class_name"] = f"{other}A{rng.randint(1, 4)}"
        elif kind == "ward_outside_province":
            row["address_province_code"] = HOME_PROVINCE
            row["address_ward_code"] = rng.choice(_wards("22"))[0]  # Quảng Ninh
        elif kind == "guardian_landline":
            row["guardian_phone"] = f"02253{rng.randrange(1_000_000):06d}"
        return row

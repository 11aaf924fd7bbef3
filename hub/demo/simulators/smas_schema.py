"""The school-management database's tables (SQLAlchemy Core), its rejected-row kinds and its `sql` connector configs."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

# Table → entity it holds, in the order rows are inserted (references first).
SMAS_TABLES: dict[str, str] = {
    "schools": "school.school",
    "teachers": "school.teacher",
    "classes": "school.class",
    "students": "school.student",
    "scores": "school.score",
    "term_results": "school.term_result",
}
# Entity fields stored under another column name (nested records are flattened).
SMAS_COLUMNS: dict[str, dict[str, str]] = {
    "students": {
        "address.province_code": "address_province_code",
        "address.ward_code": "address_ward_code",
        "address.street": "address_street",
    },
}
# Array fields, stored as JSON text in a TEXT column of the same name.
SMAS_JSON_COLUMNS: dict[str, list[str]] = {"schools": ["levels"], "teachers": ["subjects"]}

# What `SchoolManagementDatabase.bad_rows` inserts: kind → (table, the hub's rule it breaks).
SMAS_BAD_KINDS: dict[str, tuple[str, str]] = {
    "score_over_10": ("scores", "score.range"),  # 11.5, a typo for 1.5
    "score_for_comment_subject": ("scores", "score.grading_mode"),  # PE marked 8 instead of Đạt
    "midterm_seq_2": ("scores", "score.seq"),  # a second midterm mark
    "student_id_gender_digit": ("students", "national_id.gender_mismatch"),
    "student_too_old_for_grade": ("students", "student.age_for_grade"),
    "class_name_other_grade": ("students", "student.class_name"),  # grade 11 in class 10A1
    "ward_outside_province": ("students", "ward_code.province_mismatch"),  # Quảng Ninh ward, province 31
    "guardian_landline": ("students", "phone.format"),  # 0225 3xxx xxx, a Hải Phòng landline
    "teacher_subject_twice": ("teachers", "teacher.subjects"),
    "class_over_60": ("classes", "class.size_range"),
    "average_over_10": ("term_results", "term_result.average_range"),
}


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False, index=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
    ]


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def smas_metadata() -> sa.MetaData:
    """The school-management tables (SQLAlchemy Core), one per entity of §3, for SQLite and PostgreSQL.

    Columns are the entity's fields, except the student's address (three `address_*` columns)
    and arrays (JSON text). Every table also has `id` (autoincrement), `created_at`,
    `updated_at` (naive local Vietnam time) and `deleted_at` (soft delete).
    """
    md = sa.MetaData()
    opts = {"sqlite_autoincrement": True}  # SQLite never reuses an id: incrementing readers rely on it
    sa.Table(
        "schools", md, _id(),
        sa.Column("school_code", sa.String(12), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("levels", sa.Text(), nullable=False),
        sa.Column("ownership", sa.String(10), nullable=False),
        sa.Column("province_code", sa.String(2), nullable=False),
        sa.Column("ward_code", sa.String(5), nullable=False),
        sa.Column("phone", sa.String(20)),
        sa.Column("status", sa.String(10), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "teachers", md, _id(),
        sa.Column("teacher_id", sa.String(30), nullable=False, unique=True),
        sa.Column("national_id", sa.String(12), nullable=False),
        sa.Column("full_name", sa.String(120), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(6), nullable=False),
        sa.Column("school_code", sa.String(12), nullable=False, index=True),
        sa.Column("subjects", sa.Text(), nullable=False),
        sa.Column("phone", sa.String(20)),
        sa.Column("email", sa.String(254)),
        sa.Column("status", sa.String(12), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "classes", md, _id(),
        sa.Column("class_id", sa.String(40), nullable=False, unique=True),
        sa.Column("school_code", sa.String(12), nullable=False, index=True),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(10), nullable=False),
        sa.Column("homeroom_teacher_id", sa.String(30)),
        sa.Column("size", sa.Integer(), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "students", md, _id(),
        sa.Column("student_id", sa.String(12), nullable=False, unique=True),
        sa.Column("full_name", sa.String(120), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("gender", sa.String(6), nullable=False),
        sa.Column("ethnicity_code", sa.String(2), nullable=False),
        sa.Column("nationality", sa.String(2), nullable=False),
        sa.Column("school_code", sa.String(12), nullable=False, index=True),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(10), nullable=False),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("address_province_code", sa.String(2), nullable=False),
        sa.Column("address_ward_code", sa.String(5), nullable=False),
        sa.Column("address_street", sa.String(200)),
        sa.Column("guardian_phone", sa.String(20)),
        sa.Column("status", sa.String(12), nullable=False),
        *_stamps(), **opts,
    )
    sa.Table(
        "scores", md, _id(),
        sa.Column("student_id", sa.String(12), nullable=False, index=True),
        sa.Column("school_code", sa.String(12), nullable=False),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("score", sa.Numeric(5, 2)),
        sa.Column("pass_result", sa.String(4)),
        sa.Column("teacher_id", sa.String(30)),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        *_stamps(),
        sa.UniqueConstraint("student_id", "school_year", "term", "subject", "kind", "seq", name="scores_key"),
        **opts,
    )
    sa.Table(
        "term_results", md, _id(),
        sa.Column("student_id", sa.String(12), nullable=False, index=True),
        sa.Column("school_code", sa.String(12), nullable=False),
        sa.Column("school_year", sa.String(9), nullable=False),
        sa.Column("term", sa.String(4), nullable=False),
        sa.Column("learning_rating", sa.String(8), nullable=False),
        sa.Column("conduct_rating", sa.String(8), nullable=False),
        # One decimal place, as the entity: a NUMERIC(5,2) would hand 7.30 to the hub, which
        # rejects more than one decimal place for average_score.
        sa.Column("average_score", sa.Numeric(4, 1)),
        *_stamps(),
        sa.UniqueConstraint("student_id", "school_year", "term", name="term_results_key"),
        **opts,
    )
    return md


def smas_connector_configs(url: str, source: str = "smas") -> list[dict[str, Any]]:
    """The hub.yaml `connectors:` entries (kind `sql`) reading a `SchoolManagementDatabase`, one per table.

    >>> configs = smas_connector_configs("sqlite:///smas.db")
    >>> [c["name"] for c in configs][-2:], configs[3]["columns"]["address.ward_code"]
    (['smas-scores', 'smas-term-results'], 'address_ward_code')
    """
    return [
        {
            "name": f"{source}-{table.replace('_', '-')}",
            "kind": "sql",
            "source": source,
            "url": url,
            "table": table,
            "entity": entity,
            "timestamp_column": "updated_at",
            "incrementing_column": "id",
            "created_column": "created_at",
            "soft_delete_column": "deleted_at",
            "columns": dict(SMAS_COLUMNS.get(table, {})),
            "json_columns": list(SMAS_JSON_COLUMNS.get(table, [])),
        }
        for table, entity in SMAS_TABLES.items()
    ]

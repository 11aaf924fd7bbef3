"""The row-mapping model the connectors share: field specs, nesting and null rules, keys, table rows, values."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from connectors.database import rfc3339, to_json
from connectors.rows import FieldSpec, assemble, catalogue, check_fields, field_specs, key_of
from connectors.sql import SqlConnector, SqlConnectorConfig
from connectors.table_rows import RowMapper
from hub.contract.rules.common import geography
from hub.contract.schemas import Catalogue
from hub.demo.simulators import person_id
from hub.stages.validate import Valid, Validator

SOURCE = "smas"
VN = ZoneInfo("Asia/Ho_Chi_Minh")


def run(coro):
    return asyncio.run(coro)


def hai_phong_ward() -> str:
    return min(code for code, (province, _) in geography().wards.items() if province == "31")


# --- the fields of an entity ---------------------------------------------------------------------


def test_field_specs_list_records_before_their_fields() -> None:
    specs = field_specs("school.student")
    paths = list(specs)
    assert paths.index("address") < paths.index("address.province_code")
    assert specs["address"] == FieldSpec("address", "record", False, False,
                                         ("address.province_code", "address.ward_code", "address.street"))
    assert specs["address.street"].name == "street" and specs["address.street"].optional
    assert (specs["nationality"].nullable, specs["nationality"].has_default) == (False, True)
    assert specs["date_of_birth"].kind == "date"


def test_unknown_fields_are_named_in_either_wording() -> None:
    with pytest.raises(ValueError, match=r"^'diem' is not a field of school.score \(fields: "):
        check_fields("school.score", ["diem"])
    with pytest.raises(ValueError, match=r"^'a', 'b' are not fields of school.score"):
        check_fields("school.score", ["a", "b"])
    with pytest.raises(ValueError, match=r"^columns: 'diem' not fields of school.score \(fields: "):
        check_fields("school.score", {"diem": "Điểm"}, "columns")
    check_fields("school.pupil", ["diem"])  # an unknown entity is reported by the entity's own check
    check_fields("school.student", ["address.ward_code", "full_name"], "columns")


# --- values by path → data ------------------------------------------------------------------------


def test_assemble_nests_by_path_and_applies_the_null_rules() -> None:
    data = assemble("school.student", {"address.province_code": "31", "address.ward_code": "31001",
                                       "nationality": None, "_row_error": "x"})
    assert data == {"address": {"province_code": "31", "ward_code": "31001"}, "_row_error": "x"}
    # A nullable record whose leaves are all null is null; with `omit_nulls` an empty required cell goes.
    assert assemble("exam.registration", {"exemption_certificate.kind": None,
                                          "exemption_certificate.expires_on": None}) == {"exemption_certificate": None}
    assert assemble("school.student", {"full_name": None}) == {"full_name": None}
    assert assemble("school.student", {"full_name": None}, omit_nulls=True) == {}
    # Leaves given as well as their record's own column win over it.
    assert assemble("school.student", {"address.street": "b", "address": "{}"}) == {"address": {"street": "b"}}


def test_key_of_normalises_text_as_the_hub_does() -> None:
    key_fields = catalogue()["school.score"].key_fields
    data = {name: f" {name}  x " for name in key_fields}
    assert key_of("school.score", data) == "|".join(f"{name} x" for name in key_fields)
    assert key_of("school.score", None) == "|" * (len(key_fields) - 1)


# --- a table row -----------------------------------------------------------------------------------


def test_a_table_row_keeps_a_null_that_assemble_leaves_to_the_default() -> None:
    """Where the two assemblies differ: a NULL column of a non-nullable field that has a default."""
    columns = [path.replace(".", "_") for path, spec in field_specs("school.student").items() if spec.kind != "record"]
    mapper = RowMapper(catalogue()["school.student"], {}, [], VN)
    mapper.bind(columns, "hoc_sinh", "test")
    data = mapper.data(dict.fromkeys(columns))
    assert data["nationality"] is None  # published as null: the hub says it must not be null
    assert data["address"] == {"province_code": None, "ward_code": None, "street": None}
    assert "nationality" not in assemble("school.student", {"nationality": None})  # the default VN applies


def test_nested_record_from_dotted_fields(tmp_path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'smas.db'}"
    engine = sa.create_engine(sqlite_url)
    student_id = person_id(random.Random(7), date(2010, 3, 15), "FEMALE", "031")
    ward = hai_phong_ward()
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE hoc_sinh (id INTEGER PRIMARY KEY, ma_dinh_danh TEXT, full_name TEXT, date_of_birth DATE, "
            "gender TEXT, ethnicity_code TEXT, school_code TEXT, grade INTEGER, class_name TEXT, school_year TEXT, "
            "address_province_code TEXT, ma_xa TEXT, so_nha TEXT, guardian_phone TEXT, status TEXT, "
            "created_at TIMESTAMP, updated_at TIMESTAMP)"))
        conn.execute(sa.text(
            "INSERT INTO hoc_sinh VALUES (1, :sid, 'Nguyễn Thị Thu Hà', '2010-03-15', 'FEMALE', '01', '31THPT001', "
            "10, '10A1', '2025-2026', '31', :ward, 'Số 5 Lạch Tray', NULL, 'STUDYING', "
            "'2026-05-01 08:00:00', '2026-05-01 08:00:00')"), {"sid": student_id, "ward": ward})
    config = SqlConnectorConfig(
        name="smas-students", kind="sql", source=SOURCE, url=sqlite_url, table="hoc_sinh", entity="school.student",
        columns={"student_id": "ma_dinh_danh", "address.ward_code": "ma_xa", "address.street": "so_nha"})
    c = SqlConnector(config)
    run(c.start(None))
    [record] = run(c.poll())
    data = record.envelope["data"]
    assert data["address"] == {"province_code": "31", "ward_code": ward, "street": "Số 5 Lạch Tray"}
    assert data["date_of_birth"] == "2010-03-15"
    assert "nationality" not in data  # no column: the schema's default VN applies
    assert "id" not in data and "created_at" not in data
    assert record.envelope["key"] == student_id
    result = Validator(Catalogue.load(), sources={SOURCE}).validate(json.dumps(record.envelope).encode())
    assert isinstance(result, Valid), (record.envelope, getattr(result, "problems", None))
    run(c.stop())
    engine.dispose()


def test_row_values_as_json() -> None:
    assert to_json(Decimal("8.50"), VN) == "8.50"
    assert to_json(date(2026, 5, 1), VN) == "2026-05-01"
    assert to_json(datetime(2026, 5, 1, 8, 0), VN) == "2026-05-01T08:00:00+07:00"
    assert to_json(datetime(2026, 5, 1, 1, 0, tzinfo=timezone.utc), VN) == "2026-05-01T08:00:00+07:00"
    assert to_json([True, 3, None], VN) == [True, 3, None]
    assert rfc3339(datetime(2026, 5, 1, 8, 0), ZoneInfo("UTC")) == "2026-05-01T08:00:00+00:00"
    with pytest.raises(TypeError, match="bytes"):
        to_json(b"\x00", VN)

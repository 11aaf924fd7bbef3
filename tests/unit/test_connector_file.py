"""The file connector: schools' CSV/XLSX exports become one envelope per row, each file once."""

from __future__ import annotations

import asyncio
import csv
import os
import time
import unicodedata
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest
from pydantic import ValidationError

from connectors.base import KINDS, event_id_for
from connectors.file import DONE_KEEP, FileConnector, FileConnectorConfig
from hub.contract.schemas import Catalogue
from tests.hub_check import hub_problems  # noqa: E402

CATALOGUE = Catalogue.load()
WARD_LE_CHAN = "11383"  # phường Lê Chân, Hải Phòng

SCORE_COLUMNS = {
    "student_id": "Mã định danh",
    "school_code": "Mã trường",
    "school_year": "Năm học",
    "term": "Học kỳ",
    "subject": "Môn học",
    "kind": "Loại điểm",
    "seq": "Đầu điểm",
    "score": "Điểm",
    "pass_result": "Đánh giá",
    "teacher_id": "Mã giáo viên",
    "recorded_at": "Thời điểm nhập",
}
SCORE_HEADER = list(SCORE_COLUMNS.values())
STUDENT_COLUMNS = {
    "student_id": "Mã định danh",
    "full_name": "Họ và tên",
    "date_of_birth": "Ngày sinh",
    "gender": "Giới tính",
    "ethnicity_code": "Mã dân tộc",
    "school_code": "Mã trường",
    "grade": "Khối",
    "class_name": "Lớp",
    "school_year": "Năm học",
    "address.province_code": "Mã tỉnh",
    "address.ward_code": "Mã phường/xã",
    "address.street": "Địa chỉ",
    "guardian_phone": "SĐT phụ huynh",
    "status": "Trạng thái",
}


def score_row(student_id: str = "031309001234", subject: str = "MATH", kind: str = "REGULAR", seq: str = "1",
              score: str = "8.5", term: str = "1", result: str = "") -> list[str]:
    return [student_id, "31THPT001", "2025-2026", term, subject, kind, seq, score, result, "GV031-0007",
            "2026-03-10T08:00:00+07:00"]


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, delimiter: str = ",", age_s: float = 0) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # UTF-8 with BOM, CRLF: as Excel writes
        csv.writer(handle, delimiter=delimiter).writerows([header, *rows])
    if age_s:
        moment = time.time() - age_s
        os.utime(path, (moment, moment))
    return path


def make(tmp_path: Path, entity: str = "school.score", columns: dict | None = None, **keys) -> FileConnector:
    config = FileConnectorConfig(name="truong-files", kind="file", source="truong-thpt", folder=tmp_path / "inbox",
                                 entity=entity, columns=SCORE_COLUMNS if columns is None else columns,
                                 settle_s=0, **keys)
    return FileConnector(config)


def run(coro):
    return asyncio.run(coro)


def poll_all(connector: FileConnector) -> list:
    records = []
    while batch := run(connector.poll()):
        records.extend(batch)
    return records


def test_registered_with_its_config_model():
    assert KINDS["file"] is FileConnector
    assert FileConnector.config_model is FileConnectorConfig
    for name, field in FileConnectorConfig.model_fields.items():
        assert field.description, f"{name} has no description"


def test_config_defaults_and_checks(tmp_path):
    config = FileConnectorConfig(name="truong-files", kind="file", source="truong-thpt", folder=tmp_path,
                                 entity="school.score")
    assert config.done_folder == tmp_path / "done"
    assert config.patterns == ["*.csv", "*.xlsx"]
    assert (config.op, config.csv_encoding, config.csv_delimiter) == ("c", "utf-8-sig", ",")
    with pytest.raises(ValidationError, match="unknown entity"):
        FileConnectorConfig(name="truong-files", kind="file", source="truong-thpt", folder=tmp_path,
                            entity="school.pupil")
    with pytest.raises(ValidationError, match="diem"):
        FileConnectorConfig(name="truong-files", kind="file", source="truong-thpt", folder=tmp_path,
                            entity="school.score", columns={"diem": "Điểm"})
    with pytest.raises(ValidationError):
        FileConnectorConfig(name="truong-files", kind="file", source="truong-thpt", folder=tmp_path,
                            entity="school.score", types={"score": "money"})


def test_csv_rows_become_typed_envelopes(tmp_path):
    connector = make(tmp_path)
    run(connector.start(None))
    rows = [score_row(seq="1", score="8.5"), score_row(seq="2", score="7"),
            score_row(subject="PE", kind="FINAL", score="", result="PASS", term="2")]
    path = write_csv(tmp_path / "inbox" / "diem-10A1.csv", SCORE_HEADER, rows)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")

    records = run(connector.poll())
    assert len(records) == 3
    envelopes = [r.envelope for r in records]
    first = envelopes[0]
    assert first["source"] == "truong-thpt" and first["entity"] == "school.score" and first["op"] == "c"
    assert first["key"] == "031309001234|2025-2026|1|MATH|REGULAR|1"
    assert first["data"] == {
        "student_id": "031309001234", "school_code": "31THPT001", "school_year": "2025-2026", "term": 1,
        "subject": "MATH", "kind": "REGULAR", "seq": 1, "score": "8.5", "pass_result": None,
        "teacher_id": "GV031-0007", "recorded_at": "2026-03-10T08:00:00+07:00",
    }
    assert envelopes[1]["data"]["score"] == "7" and envelopes[1]["key"].endswith("|REGULAR|2")
    assert envelopes[2]["data"]["score"] is None and envelopes[2]["data"]["pass_result"] == "PASS"
    assert envelopes[2]["key"] == "031309001234|2025-2026|2|PE|FINAL|1"
    mtime = datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    occurred = datetime.fromisoformat(first["occurred_at"])
    assert first["occurred_at"].endswith("+07:00") and abs((occurred - mtime).total_seconds()) < 1
    checksum = records[0].offset["file"]
    assert [e["event_id"] for e in envelopes] == [event_id_for("truong-thpt", checksum, n) for n in (2, 3, 4)]
    for envelope in envelopes:
        assert hub_problems(envelope) == []
    # offsets: the row reached, and the file counted done with its last row
    assert [r.offset["row"] for r in records] == [2, 3, 4]
    assert checksum not in records[1].offset["done"] and records[2].offset["done"] == [checksum]
    assert run(connector.poll()) == []


def test_xlsx_with_date_cells_text_dates_and_nested_address(tmp_path):
    connector = make(tmp_path, entity="school.student", columns=STUDENT_COLUMNS,
                     values={"gender": {"Nam": "MALE", "Nữ": "FEMALE"}, "status": {"Đang học": "STUDYING"}})
    run(connector.start(None))
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(list(STUDENT_COLUMNS.values()))
    sheet.append(["031309001234", "Nguyễn Thị Thu Hà", datetime(2009, 3, 15), "Nữ", "01", "31THPT001", 10,
                  "10A1", "2025-2026", "31", WARD_LE_CHAN, "Số 12 phố Lạch Tray", "0912345678", "Đang học"])
    sheet.append([None] * len(STUDENT_COLUMNS))  # an empty row in the middle: skipped
    sheet.append(["031208004321", "Trần Văn Minh", "05/11/2008", "Nam", "01", "31THPT001", "11", "11A2",
                  "2025-2026", "31", WARD_LE_CHAN, None, None, "Đang học"])
    workbook.save(tmp_path / "inbox" / "hoc-sinh.xlsx")

    records = run(connector.poll())
    assert [r.offset["row"] for r in records] == [2, 4]
    first, second = (r.envelope for r in records)
    assert first["key"] == "031309001234"
    assert first["data"]["date_of_birth"] == "2009-03-15"
    assert first["data"]["grade"] == 10 and first["data"]["gender"] == "FEMALE"
    assert first["data"]["address"] == {"province_code": "31", "ward_code": WARD_LE_CHAN,
                                        "street": "Số 12 phố Lạch Tray"}
    assert "nationality" not in first["data"]  # no column: the schema's default VN applies
    assert second["data"]["date_of_birth"] == "2008-11-05"  # DD/MM/YYYY text
    assert second["data"]["grade"] == 11 and second["data"]["gender"] == "MALE"
    assert second["data"]["address"] == {"province_code": "31", "ward_code": WARD_LE_CHAN, "street": None}
    assert second["data"]["guardian_phone"] is None
    for envelope in (first, second):
        assert hub_problems(envelope) == []


def test_a_malformed_row_still_yields_an_envelope_and_the_rest_are_published(tmp_path):
    connector = make(tmp_path)
    run(connector.start(None))
    rows = [
        score_row(seq="1"),
        score_row(seq="2", term="một"),  # not a number: kept as text
        score_row(seq="3", score="8,25"),  # a decimal comma: fine
        score_row(seq="4") + ["thừa"],  # one cell too many
        score_row(seq="5")[:6],  # cells missing
        score_row(seq="6", score="tám"),
        [""] * len(SCORE_HEADER),  # empty row: skipped
        score_row(seq="7"),
    ]
    write_csv(tmp_path / "inbox" / "diem.csv", SCORE_HEADER, rows)
    envelopes = [r.envelope for r in run(connector.poll())]
    assert len(envelopes) == 7
    by_row = {int(e["key"].rsplit("|", 1)[1]) if e["key"].rsplit("|", 1)[1] else None: e for e in envelopes}
    assert by_row[2]["data"]["term"] == "một"
    assert {p.rule for p in hub_problems(by_row[2])} == {"schema.type"}
    assert by_row[3]["data"]["score"] == "8.25" and hub_problems(by_row[3]) == []
    assert "_row_error" in by_row[4]["data"]
    assert any(p.field == "data._row_error" for p in hub_problems(by_row[4]))
    short = next(e for e in envelopes if "_row_error" in e["data"] and e is not by_row[4])
    assert "has 6 cells, the header has 11" in short["data"]["_row_error"]
    assert hub_problems(short)
    assert by_row[6]["data"]["score"] == "tám"
    assert [p.field for p in hub_problems(by_row[6])] == ["data.score"]
    for seq in (1, 7):
        assert hub_problems(by_row[seq]) == []


def test_the_same_file_again_publishes_nothing_and_is_moved_aside(tmp_path):
    connector = make(tmp_path)
    run(connector.start(None))
    inbox, done = tmp_path / "inbox", tmp_path / "inbox" / "done"
    write_csv(inbox / "diem.csv", SCORE_HEADER, [score_row(seq="1"), score_row(seq="2")], age_s=10)
    records = run(connector.poll())
    assert len(records) == 2
    run(connector.committed(records))
    assert (done / "diem.csv").exists()

    write_csv(inbox / "diem-gui-lai.csv", SCORE_HEADER, [score_row(seq="1"), score_row(seq="2")])
    assert run(connector.poll()) == []
    assert not (inbox / "diem-gui-lai.csv").exists() and (done / "diem-gui-lai.csv").exists()

    # after a restart from the stored offset it is still known
    write_csv(inbox / "diem.csv", SCORE_HEADER, [score_row(seq="1"), score_row(seq="2")])
    restarted = make(tmp_path)
    run(restarted.start(records[-1].offset))
    assert run(restarted.poll()) == []
    assert not (inbox / "diem.csv").exists()
    assert len(list(done.iterdir())) == 3  # the same name got a distinct name in done/


def test_a_file_is_moved_only_after_its_rows_are_committed(tmp_path):
    connector = make(tmp_path, batch_size=2)
    run(connector.start(None))
    inbox, done = tmp_path / "inbox", tmp_path / "inbox" / "done"
    write_csv(inbox / "a.csv", SCORE_HEADER, [score_row(seq=str(n)) for n in range(1, 4)], age_s=20)
    write_csv(inbox / "b.csv", SCORE_HEADER, [score_row(seq=str(n), term="2") for n in range(1, 3)], age_s=10)

    first = run(connector.poll())
    assert [r.offset["row"] for r in first] == [2, 3]
    run(connector.committed(first))
    assert (inbox / "a.csv").exists()
    second = run(connector.poll())  # the last row of a.csv and the first of b.csv
    assert [(r.offset["row"], r.envelope["data"]["term"]) for r in second] == [(4, 1), (2, 2)]
    assert (inbox / "a.csv").exists(), "not moved before committed()"
    third = run(connector.poll())
    assert [r.offset["row"] for r in third] == [3]
    run(connector.committed(second))
    assert not (inbox / "a.csv").exists() and (done / "a.csv").exists()
    assert (inbox / "b.csv").exists()
    run(connector.committed(third))
    assert (done / "b.csv").exists()
    assert third[-1].offset["done"] == [first[0].offset["file"], third[0].offset["file"]]
    assert run(connector.poll()) == []


def test_restart_from_a_mid_file_offset_resumes_at_the_next_row_with_the_same_event_ids(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_csv(inbox / "diem.csv", SCORE_HEADER, [score_row(seq=str(n)) for n in range(1, 6)])
    connector = make(tmp_path)
    run(connector.start(None))
    everything = poll_all(connector)
    assert len(everything) == 5

    first = make(tmp_path, batch_size=2)
    run(first.start(None))
    batch = run(first.poll())
    assert [r.offset["row"] for r in batch] == [2, 3]
    run(first.stop())  # a crash: nothing committed, the file stays

    resumed = make(tmp_path)
    run(resumed.start(batch[-1].offset))
    rest = poll_all(resumed)
    assert [r.offset["row"] for r in rest] == [4, 5, 6]
    assert [r.envelope["event_id"] for r in rest] == [r.envelope["event_id"] for r in everything[2:]]
    assert [r.envelope for r in rest] == [r.envelope for r in everything[2:]]
    run(resumed.committed(rest))
    assert (tmp_path / "inbox" / "done" / "diem.csv").exists()


def test_nfd_headers_semicolons_and_type_overrides(tmp_path):
    # macOS Excel writes NFD; Vietnamese-locale Excel separates cells with ';'
    header = [unicodedata.normalize("NFD", h).upper() + " " for h in SCORE_HEADER]
    connector = make(tmp_path, csv_delimiter=";", types={"teacher_id": "string"})
    run(connector.start(None))
    write_csv(tmp_path / "inbox" / "diem.csv", header, [score_row(score="9,75")], delimiter=";")
    (envelope,) = [r.envelope for r in run(connector.poll())]
    assert envelope["data"]["score"] == "9.75" and envelope["data"]["term"] == 1
    assert hub_problems(envelope) == []


def test_unreadable_file_becomes_one_dead_letter_and_is_not_retried(tmp_path):
    connector = make(tmp_path)
    run(connector.start(None))
    (tmp_path / "inbox" / "hong.xlsx").write_bytes(b"not a zip file")
    (tmp_path / "inbox" / "~$dang-mo.xlsx").write_bytes(b"excel lock file")
    records = run(connector.poll())
    assert len(records) == 1
    assert "_file_error" in records[0].envelope["data"] and hub_problems(records[0].envelope)
    run(connector.committed(records))
    assert (tmp_path / "inbox" / "done" / "hong.xlsx").exists()
    assert (tmp_path / "inbox" / "~$dang-mo.xlsx").exists()
    assert run(connector.poll()) == []


def test_files_still_being_written_wait(tmp_path):
    config = FileConnectorConfig(name="truong-files", kind="file", source="truong-thpt", folder=tmp_path / "inbox",
                                 entity="school.score", columns=SCORE_COLUMNS, settle_s=60)
    connector = FileConnector(config)
    run(connector.start(None))
    write_csv(tmp_path / "inbox" / "diem.csv", SCORE_HEADER, [score_row()])
    assert run(connector.poll()) == []
    write_csv(tmp_path / "inbox" / "diem.csv", SCORE_HEADER, [score_row()], age_s=120)
    assert len(run(connector.poll())) == 1


def test_start_creates_the_folders_and_offsets_keep_the_last_checksums(tmp_path):
    connector = make(tmp_path)
    old = [f"{n:064x}" for n in range(DONE_KEEP)]
    run(connector.start({"file": old[-1], "row": 7, "done": old}))
    assert (tmp_path / "inbox").is_dir() and (tmp_path / "inbox" / "done").is_dir()
    write_csv(tmp_path / "inbox" / "diem.csv", SCORE_HEADER, [score_row()])
    (record,) = run(connector.poll())
    assert len(record.offset["done"]) == DONE_KEEP
    assert record.offset["done"][-1] == record.offset["file"] and record.offset["done"][0] == old[1]


def test_delete_op_carries_the_key_only(tmp_path):
    connector = make(tmp_path, op="d")
    run(connector.start(None))
    write_csv(tmp_path / "inbox" / "xoa.csv", SCORE_HEADER, [score_row()])
    (record,) = run(connector.poll())
    assert record.envelope["op"] == "d" and record.envelope["data"] is None
    assert record.envelope["key"] == "031309001234|2025-2026|1|MATH|REGULAR|1"


def test_xlsx_numbers_as_excel_shows_them(tmp_path):
    connector = make(tmp_path)
    run(connector.start(None))
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(SCORE_HEADER)
    row = score_row()
    row[3], row[6], row[7] = 1, 2.0, 6.699999999999999  # a formula's float noise
    row[10] = datetime(2026, 3, 10, 8, 0)  # a local date-time cell
    sheet.append(row)
    workbook.save(tmp_path / "inbox" / "diem.xlsx")
    (record,) = run(connector.poll())
    data = record.envelope["data"]
    assert (data["term"], data["seq"], data["score"]) == (1, 2, "6.7")
    assert data["recorded_at"] == "2026-03-10T08:00:00+07:00"
    assert hub_problems(record.envelope) == []
    assert date.fromisoformat(record.envelope["occurred_at"][:10])


def test_an_empty_required_cell_is_left_out_so_the_hub_says_required(tmp_path):
    connector = make(tmp_path)
    run(connector.start(None))
    write_csv(tmp_path / "inbox" / "diem.csv", SCORE_HEADER, [score_row(student_id="")])
    (record,) = run(connector.poll())
    assert "student_id" not in record.envelope["data"]
    assert [(p.field, p.rule) for p in hub_problems(record.envelope)] == [("data.student_id", "schema.required")]


def test_a_file_overwritten_before_commit_is_read_again_not_moved(tmp_path):
    connector = make(tmp_path)
    run(connector.start(None))
    path = write_csv(tmp_path / "inbox" / "diem.csv", SCORE_HEADER, [score_row(score="5")], age_s=10)
    first = run(connector.poll())
    write_csv(path, SCORE_HEADER, [score_row(score="6")], age_s=5)  # the school sends a correction
    run(connector.committed(first))
    assert path.exists()
    (again,) = run(connector.poll())
    assert again.envelope["data"]["score"] == "6" and again.envelope["event_id"] != first[0].envelope["event_id"]
    run(connector.committed([again]))
    assert not path.exists()


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_the_simulated_school_exports_are_read_as_the_simulator_means(tmp_path, fmt):
    from hub.demo.simulators import SPREADSHEET_BAD_KINDS, SchoolSpreadsheets, file_connector_config

    sheets = SchoolSpreadsheets(tmp_path / "inbox", seed=7)
    path = (sheets.write_scores_csv if fmt == "csv" else sheets.write_scores_xlsx)(40, bad_rows=4)
    old = time.time() - 10
    os.utime(path, (old, old))
    config = FileConnectorConfig.model_validate(file_connector_config(tmp_path / "inbox", source="truong-thpt"))
    connector = FileConnector(config)
    run(connector.start(None))
    records = poll_all(connector)
    assert len(records) == 40
    for index, record in enumerate(records):
        rules = {p.rule for p in hub_problems(record.envelope)}
        if index in sheets.last_bad:
            assert SPREADSHEET_BAD_KINDS[sheets.last_bad[index]] in rules, (index, record.envelope["data"], rules)
        else:
            assert rules == set(), (index, record.envelope["data"], rules)

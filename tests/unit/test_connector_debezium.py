"""The Debezium connector: change records (before/after/op/source) of an existing topic become envelopes."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import date, datetime, timezone

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from connectors.base import KINDS, event_id_for
from connectors.debezium import DebeziumConnector, DebeziumConnectorConfig, to_envelope
from hub.contract.schemas import Catalogue
from tests.hub_check import hub_problems  # noqa: E402

CATALOGUE = Catalogue.load()
TOPIC = "smas.public.hoc_sinh"
WARD_LE_CHAN = "11383"
COLUMNS = {
    "student_id": "ma_dinh_danh",
    "full_name": "ho_ten",
    "date_of_birth": "ngay_sinh",
    "gender": "gioi_tinh",
    "ethnicity_code": "ma_dan_toc",
    "school_code": "ma_truong",
    "grade": "khoi",
    "class_name": "lop",
    "school_year": "nam_hoc",
    "address.province_code": "ma_tinh",
    "address.ward_code": "ma_phuong_xa",
    "address.street": "dia_chi",
    "guardian_phone": "sdt_phu_huynh",
    "status": "trang_thai",
}
COMMIT_MS = 1_773_104_400_000  # 2026-03-10T08:00:00+07:00


def config(**keys) -> DebeziumConnectorConfig:
    values = {"name": "smas-hoc-sinh", "kind": "debezium", "source": "smas", "topic": TOPIC,
              "entity": "school.student", "columns": COLUMNS}
    values.update(keys)
    return DebeziumConnectorConfig(**values)


def row(**overrides) -> dict:
    values = {
        "id": 17, "ma_dinh_danh": "031309001234", "ho_ten": "Nguyễn Thị Thu Hà",
        "ngay_sinh": (date(2009, 3, 15) - date(1970, 1, 1)).days,  # io.debezium.time.Date
        "gioi_tinh": "FEMALE", "ma_dan_toc": "01", "ma_truong": "31THPT001", "khoi": 10, "lop": "10A1",
        "nam_hoc": "2025-2026", "ma_tinh": "31", "ma_phuong_xa": WARD_LE_CHAN, "dia_chi": "Số 12 phố Lạch Tray",
        "sdt_phu_huynh": "0912345678", "trang_thai": "STUDYING", "cap_nhat_luc": 1_773_104_400_000_000,
    }
    values.update(overrides)
    return values


def change(op: str, before: dict | None, after: dict | None, *, ts_ms: int = COMMIT_MS) -> dict:
    return {"before": before, "after": after, "op": op, "ts_ms": ts_ms + 150,
            "source": {"connector": "postgresql", "name": "smas", "db": "smas", "schema": "public",
                       "table": "hoc_sinh", "ts_ms": ts_ms, "snapshot": "false", "lsn": 123456}}


def with_schema(payload: dict, after_fields: list[dict]) -> dict:
    struct = {"type": "struct", "optional": True, "fields": after_fields}
    return {"schema": {"type": "struct", "name": "smas.public.hoc_sinh.Envelope",
                       "fields": [{**struct, "field": "before"}, {**struct, "field": "after"},
                                  {"type": "string", "field": "op"}]},
            "payload": payload}


def encode(document) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


def test_registered_with_its_config_model():
    assert KINDS["debezium"] is DebeziumConnector
    assert DebeziumConnector.config_model is DebeziumConnectorConfig
    for name, field in DebeziumConnectorConfig.model_fields.items():
        assert field.description, f"{name} has no description"


def test_config_checks():
    assert config().timezone == "Asia/Ho_Chi_Minh" and config().bootstrap_servers is None
    with pytest.raises(ValidationError, match="unknown entity"):
        config(entity="school.hoc_sinh")
    with pytest.raises(ValidationError, match="ho_ten"):
        config(columns={"ho_ten": "ho_ten"})
    with pytest.raises(ValidationError, match="time zone"):
        config(timezone="Asia/Hai_Phong")


def test_create_without_schema_wrapper():
    envelope = to_envelope(config(), encode(change("c", None, row())), TOPIC, 2, 41)
    assert envelope == {
        "event_id": event_id_for("smas", TOPIC, 2, 41), "source": "smas", "entity": "school.student", "op": "c",
        "key": "031309001234", "occurred_at": "2026-03-10T08:00:00+07:00",
        "data": {"student_id": "031309001234", "full_name": "Nguyễn Thị Thu Hà", "date_of_birth": "2009-03-15",
                 "gender": "FEMALE", "ethnicity_code": "01", "school_code": "31THPT001", "grade": 10,
                 "class_name": "10A1", "school_year": "2025-2026",
                 "address": {"province_code": "31", "ward_code": WARD_LE_CHAN, "street": "Số 12 phố Lạch Tray"},
                 "guardian_phone": "0912345678", "status": "STUDYING"},
    }
    assert hub_problems(envelope) == []
    assert to_envelope(config(), encode(change("c", None, row())), TOPIC, 2, 41) == envelope  # deterministic
    assert to_envelope(config(), encode(change("c", None, row())), TOPIC, 2, 42)["event_id"] != envelope["event_id"]


def test_update_with_schema_wrapper_and_snapshot_read():
    payload = change("u", row(lop="10A2"), row(lop="10A3"))
    envelope = to_envelope(config(), encode(with_schema(payload, [])), TOPIC, 0, 7)
    assert envelope["op"] == "u" and envelope["data"]["class_name"] == "10A3"
    assert hub_problems(envelope) == []
    snapshot = to_envelope(config(), encode(with_schema(change("r", None, row()), [])), TOPIC, 0, 0)
    assert snapshot["op"] == "r" and hub_problems(snapshot) == []


def test_delete_takes_the_key_from_before_and_tombstones_are_skipped():
    envelope = to_envelope(config(), encode(change("d", row(), None)), TOPIC, 1, 9)
    assert envelope["op"] == "d" and envelope["data"] is None and envelope["key"] == "031309001234"
    assert hub_problems(envelope) == []
    # PostgreSQL's default replica identity: `before` holds the primary key only; the message key has it too
    only_pk = {column: None for column in row()} | {"ma_dinh_danh": "031309001234"}
    envelope = to_envelope(config(), encode(change("d", only_pk, None)), TOPIC, 1, 9)
    assert envelope["key"] == "031309001234"
    envelope = to_envelope(config(), encode(change("d", {"id": 17}, None)), TOPIC, 1, 9,
                           message_key=encode({"ma_dinh_danh": "031309001234"}))
    assert envelope["key"] == "031309001234"
    assert to_envelope(config(), None, TOPIC, 1, 10) is None
    assert to_envelope(config(), b"null", TOPIC, 1, 10) is None


def test_temporal_values():
    cfg = config(entity="school.score", columns={"student_id": "ma_hs", "term": "hoc_ky", "seq": "dau_diem",
                                                 "score": "diem", "recorded_at": "nhap_luc"})
    base = {"ma_hs": "031309001234", "school_code": "31THPT001", "school_year": "2025-2026", "hoc_ky": 1,
            "subject": "MATH", "kind": "REGULAR", "dau_diem": 1, "diem": "8.50", "teacher_id": None}
    # timestamp without time zone: Debezium sends the wall clock as if it were UTC
    wall_clock_ms = int(datetime(2026, 3, 10, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)
    for value in (wall_clock_ms, wall_clock_ms * 1000, wall_clock_ms * 1_000_000, "2026-03-10T08:00:00"):
        envelope = to_envelope(cfg, encode(change("c", None, {**base, "nhap_luc": value})), TOPIC, 0, 1)
        assert envelope["data"]["recorded_at"] == "2026-03-10T08:00:00+07:00", value
        assert envelope["key"] == "031309001234|2025-2026|1|MATH|REGULAR|1"
        assert hub_problems(envelope) == []
    zoned = to_envelope(cfg, encode(change("c", None, {**base, "nhap_luc": "2026-03-10T01:00:00.123Z"})), TOPIC, 0, 1)
    assert zoned["data"]["recorded_at"] == "2026-03-10T01:00:00.123Z"
    micro = to_envelope(cfg, encode(change("c", None, {**base, "nhap_luc": wall_clock_ms * 1000 + 250_000})),
                        TOPIC, 0, 1)
    assert micro["data"]["recorded_at"] == "2026-03-10T08:00:00.250+07:00"
    # decimal.handling.mode=double, and precise (base64 of the unscaled value, scale from the schema)
    double = to_envelope(cfg, encode(change("c", None, {**base, "diem": 7.25, "nhap_luc": wall_clock_ms})), TOPIC, 0, 1)
    assert double["data"]["score"] == "7.25" and hub_problems(double) == []
    precise = base64.b64encode((825).to_bytes(2, "big", signed=True)).decode()
    schema_fields = [{"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal",
                      "parameters": {"scale": "2"}, "field": "diem"},
                     {"type": "int64", "optional": False, "name": "io.debezium.time.MicroTimestamp",
                      "field": "nhap_luc"}]
    wrapped = with_schema(change("c", None, {**base, "diem": precise, "nhap_luc": wall_clock_ms * 1000}), schema_fields)
    envelope = to_envelope(cfg, encode(wrapped), TOPIC, 0, 1)
    assert envelope["data"]["score"] == "8.25"
    assert envelope["data"]["recorded_at"] == "2026-03-10T08:00:00+07:00"
    assert hub_problems(envelope) == []
    # ISO date strings pass as they are
    iso = to_envelope(config(), encode(change("c", None, row(ngay_sinh="2009-03-15"))), TOPIC, 0, 1)
    assert iso["data"]["date_of_birth"] == "2009-03-15"


def test_json_columns_nested_records_and_occurred_at_fallbacks():
    cfg = config(columns={**{k: v for k, v in COLUMNS.items() if not k.startswith("address.")},
                          "address": "dia_chi_json"}, json_columns=["address"])
    address = {"province_code": "31", "ward_code": WARD_LE_CHAN, "street": None}
    after = row(dia_chi_json=json.dumps(address))
    payload = change("c", None, after)
    del payload["source"]
    envelope = to_envelope(cfg, encode(payload), TOPIC, 0, 3)
    assert envelope["data"]["address"] == address
    assert envelope["occurred_at"] == "2026-03-10T08:00:00.150+07:00"  # the payload's ts_ms
    assert hub_problems(envelope) == []
    del payload["ts_ms"]
    envelope = to_envelope(cfg, encode(payload), TOPIC, 0, 3, timestamp_ms=COMMIT_MS)
    assert envelope["occurred_at"] == "2026-03-10T08:00:00+07:00"  # the Kafka record's time


def test_what_is_not_a_change():
    assert to_envelope(config(), encode({**change("t", None, None)}), TOPIC, 0, 5) is None
    broken = to_envelope(config(), b"{not json", TOPIC, 0, 6)
    assert broken["event_id"] == event_id_for("smas", TOPIC, 0, 6)
    assert "_debezium_error" in broken["data"] and hub_problems(broken)
    no_after = to_envelope(config(), encode(change("c", None, None)), TOPIC, 0, 7)
    assert "_debezium_error" in no_after["data"] and hub_problems(no_after)


# --- end to end on the real broker -------------------------------------------------------------

async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from hub.kafka.admin import ensure_topics
    from hub.kafka.clients import KafkaClients

    await ensure_topics(KafkaClients.plain(bootstrap), [(topic, partitions)], 1)


async def _produce(bootstrap: str, topic: str, messages: list[tuple[int, bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for partition, key, value in messages:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def _poll_until(connector: DebeziumConnector, count: int, bound_s: float = 30.0) -> list:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    records: list = []
    while len(records) < count and loop.time() < deadline:
        records.extend(await connector.poll())
    return records


@pytest.mark.integration
def test_end_to_end_on_a_real_broker(local_stack):
    bootstrap = local_stack.bootstrap_servers
    topic = f"smas.public.hoc_sinh.{uuid.uuid4().hex[:8]}"
    cfg = config(topic=topic, bootstrap_servers=bootstrap, poll_interval_s=0.2)
    ids = ["031309001234", "031309005678", "030309004321"]
    key = lambda student_id: encode({"ma_dinh_danh": student_id})  # noqa: E731
    messages = [
        (0, key(ids[0]), encode(with_schema(change("r", None, row(ma_dinh_danh=ids[0])), []))),
        (1, key(ids[1]), encode(change("c", None, row(ma_dinh_danh=ids[1])))),
        (0, key(ids[0]), encode(change("u", row(ma_dinh_danh=ids[0]), row(ma_dinh_danh=ids[0], lop="10A2")))),
        (1, key(ids[1]), encode(change("d", row(ma_dinh_danh=ids[1]), None))),
        (1, key(ids[1]), None),  # the tombstone after the delete
        (0, key(ids[2]), encode(change("c", None, row(ma_dinh_danh=ids[2])))),
    ]

    async def scenario():
        await _create_topic(bootstrap, topic, 2)
        await _produce(bootstrap, topic, messages)
        connector = DebeziumConnector(cfg)
        await connector.start(None)
        try:
            records = await _poll_until(connector, 5)
            await asyncio.sleep(0.5)
            records.extend(await connector.poll())  # nothing more: the tombstone is skipped
        finally:
            await connector.stop()
        by_partition = {p: [r for r in records if r.envelope["event_id"] in {
            event_id_for("smas", topic, p, o) for o in range(10)}] for p in (0, 1)}
        assert len(records) == 5
        assert [(r.envelope["op"], r.envelope["key"]) for r in by_partition[0]] == [
            ("r", ids[0]), ("u", ids[0]), ("c", ids[2])]
        assert [(r.envelope["op"], r.envelope["key"]) for r in by_partition[1]] == [("c", ids[1]), ("d", ids[1])]
        assert by_partition[0][1].envelope["data"]["class_name"] == "10A2"
        assert by_partition[1][1].envelope["data"] is None
        for r in records:
            assert hub_problems(r.envelope) == []
        assert [r.offset["partitions"]["0"] for r in by_partition[0]] == [1, 2, 3]
        assert by_partition[1][0].offset["partitions"]["1"] == 1
        last = records[-1].offset
        assert last["partitions"]["0"] == 3 and last["partitions"]["1"] in (2, 3)

        # restart from the last offset: nothing new (the tombstone at most is read and skipped)
        again = DebeziumConnector(cfg)
        await again.start(last)
        try:
            assert await _poll_until(again, 1, bound_s=2.0) == []
            # a new change after the restart is read, with the offset continuing
            await _produce(bootstrap, topic, [(1, key(ids[1]), encode(change("c", None, row(ma_dinh_danh=ids[1]))))])
            (fresh,) = await _poll_until(again, 1)
        finally:
            await again.stop()
        assert fresh.envelope["event_id"] == event_id_for("smas", topic, 1, 3)
        assert fresh.offset["partitions"] == {"0": 3, "1": 4}

        # restart from an offset in the middle of partition 0: the same event ids again
        middle = DebeziumConnector(cfg)
        await middle.start({"partitions": {"0": 1, "1": 4}})
        try:
            replay = await _poll_until(middle, 2)
        finally:
            await middle.stop()
        assert [r.envelope for r in replay] == [r.envelope for r in by_partition[0][1:]]

    asyncio.run(scenario())

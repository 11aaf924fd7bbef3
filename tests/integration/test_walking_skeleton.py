"""One entity end to end on the real broker and registry: canonical topic, DLQ, metrics, local down."""

from __future__ import annotations

import io
import json
import os

import avro.io
import avro.schema
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.core.config import LocalConfig
from hub.demo.local import LocalStack
from tests.kafka_helpers import encode, header, produce_raw, read_topic, registration_envelope, wait_until

pytestmark = pytest.mark.integration


def stock_avro_decode(registry_url: str, value: bytes) -> dict:
    """Decode Confluent wire format with Apache Avro's own reader and the schema fetched by id."""
    assert value[0] == 0, "magic byte"
    schema_id = int.from_bytes(value[1:5], "big")
    schema_text = httpx.get(f"{registry_url}/schemas/ids/{schema_id}", timeout=10).json()["schema"]
    reader = avro.io.DatumReader(avro.schema.parse(schema_text))
    return reader.read(avro.io.BinaryDecoder(io.BytesIO(value[5:])))


def test_valid_envelope_reaches_canonical_topic_and_decodes_with_stock_avro(local_stack, start_worker, unique_source):
    worker = start_worker([unique_source])
    envelope = registration_envelope(unique_source, trace_id="trace-42")
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(envelope["key"].encode(), encode(envelope))])

    def mine(records):
        return [r for r in records if header(r, "eduhub.event_id") == envelope["event_id"]]

    records = mine(read_topic(local_stack.bootstrap_servers, "edu.exam.registration", lambda rs: bool(mine(rs))))
    assert len(records) == 1
    record = records[0]
    assert record.key == envelope["key"].encode()
    assert header(record, "eduhub.trace_id") == "trace-42"
    assert header(record, "eduhub.op") == "c"
    decoded = stock_avro_decode(local_stack.registry_url, record.value)
    data = envelope["data"]
    assert decoded["registration_id"] == data["registration_id"]
    assert decoded["full_name"] == data["full_name"]
    assert decoded["date_of_birth"].isoformat() == data["date_of_birth"]
    assert decoded["subjects"] == data["subjects"]
    assert decoded["foreign_language"] == "N1"
    assert decoded["registered_at"].timestamp() == pytest.approx(
        __import__("datetime").datetime.fromisoformat(data["registered_at"]).timestamp())
    assert {k: v for k, v in decoded.items() if k not in ("date_of_birth", "registered_at")} == {
        k: v for k, v in data.items() if k not in ("date_of_birth", "registered_at")}
    worker.stop()


def test_invalid_envelope_goes_to_dlq_and_the_next_valid_one_still_comes_through(
        local_stack, start_worker, unique_source):
    start_worker([unique_source])
    bad = registration_envelope(unique_source)
    bad["data"]["gender"] = "UNKNOWN"
    bad_bytes = encode(bad)
    not_json = b'{"event_id": "oops", this is not json'
    good = registration_envelope(unique_source)
    # Same key for all three, so they share a partition and the good one comes after the bad ones.
    key = good["key"].encode()
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}",
                [(key, bad_bytes), (key, not_json), (key, encode(good))])

    dead = read_topic(local_stack.bootstrap_servers, f"hub.dlq.{unique_source}", lambda rs: len(rs) >= 2)
    assert [r.value for r in dead] == [bad_bytes, not_json]  # original bytes, in order
    first, second = dead
    assert header(first, "eduhub.errors.rule") == "schema.enum"
    assert header(first, "eduhub.errors.field") == "data.gender"
    assert header(first, "eduhub.errors.stage") == "validate"
    assert header(first, "eduhub.errors.topic") == f"ingest.{unique_source}"
    assert header(first, "eduhub.errors.event_id") == bad["event_id"]
    assert json.loads(header(first, "eduhub.errors.reasons"))[0]["rule"] == "schema.enum"
    assert header(second, "eduhub.errors.rule") == "envelope.not_json"
    assert int(header(second, "eduhub.errors.offset")) == int(header(first, "eduhub.errors.offset")) + 1

    def mine(records):
        return [r for r in records if header(r, "eduhub.event_id") == good["event_id"]]

    assert len(mine(read_topic(local_stack.bootstrap_servers, "edu.exam.registration",
                               lambda rs: bool(mine(rs))))) == 1


def test_metrics_count_ingested_valid_and_invalid_per_source_and_entity(local_stack, start_worker, unique_source):
    worker = start_worker([unique_source])
    envelopes = [registration_envelope(unique_source) for _ in range(3)]
    broken = registration_envelope(unique_source)
    del broken["data"]["full_name"]
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}",
                [(e["key"].encode(), encode(e)) for e in [*envelopes, broken]])
    read_topic(local_stack.bootstrap_servers, f"hub.dlq.{unique_source}", lambda rs: len(rs) >= 1)

    def samples() -> dict:
        text = httpx.get(f"{worker.url}/metrics", timeout=5).text
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("source") == unique_source:
                    found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    labels = (("entity", "exam.registration"), ("source", unique_source))
    # The three valid ones may sit in another batch than the DLQ record: wait (bounded) for all four.
    wait_until(lambda: samples().get(("eduhub_events_ingested_total", labels)) == 4, bound_s=30)
    found = samples()
    assert found[("eduhub_events_ingested_total", labels)] == 4
    assert found[("eduhub_events_valid_total", labels)] == 3
    invalid = (("entity", "exam.registration"), ("rule", "schema.required"), ("source", unique_source))
    assert found[("eduhub_events_invalid_total", invalid)] == 1


def test_local_down_leaves_no_process_of_ours(tmp_path):
    """A stack of its own (other ports), so the session's shared stack keeps running."""
    stack = LocalStack(LocalConfig(state_dir=tmp_path / "own", kafka_port=27092, controller_port=27093,
                                   registry_port=27081))
    try:
        parts = stack.up(echo=lambda line: None)
        pids = [p.pid for p in parts.values()]
        assert len(pids) == 2 and all(stack.status()[n]["running"] for n in ("kafka", "registry"))
        # `up` twice is harmless: same processes.
        assert [p.pid for p in stack.up(echo=lambda line: None).values()] == pids
    finally:
        stopped = stack.down(echo=lambda line: None)
    assert sorted(stopped) == sorted(pids)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert stack.status() == {}

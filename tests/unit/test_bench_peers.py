"""The benchmark peers' pure parts: the spec, the missing-extra error, the validate stage's work, the result line."""

from __future__ import annotations

import json
import sys

import pytest

from hub.contract import dlq
from hub.contract.envelope import HEADER_EVENT_ID, header_value
from hub.contract.schemas import Catalogue, split_wire
from hub.demo.simulators import ExamRegistrationSimulator
from hub.ops import bench_peers
from hub.ops.bench_peers import INSTALL_HINT, MissingExtraError, Record, Spec, Tally, Work

SOURCE = "exam-reg"
CATALOGUE = Catalogue.load()
SCHEMA_IDS = {name: 100 + n for n, name in enumerate(sorted(CATALOGUE.names))}
SPEC = {"bootstrap": "127.0.0.1:9092", "input": f"ingest.{SOURCE}", "output_prefix": "bench-x.", "source": SOURCE,
        "schema_ids": SCHEMA_IDS, "group": "bench-quix-1", "count": 20_000, "state_dir": "/tmp/bench-x"}


def test_the_spec_reads_every_key_and_ignores_others():
    spec = Spec.parse(json.dumps({**SPEC, "config": "hub.yaml"}))
    assert spec == Spec(**SPEC)


@pytest.mark.parametrize("change, message", [
    ({"count": -1}, "count must be 0"),
    ({"count": "20000"}, "count must be a JSON int"),
    ({"count": True}, "count must be a JSON int"),
    ({"schema_ids": {}}, "schema_ids must map"),
    ({"schema_ids": {"exam.registration": "7"}}, "schema_ids must map"),
    ({"group": ""}, "group is empty"),
])
def test_a_wrong_spec_says_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        Spec.parse(json.dumps({**SPEC, **change}))


def test_a_spec_that_is_no_json_object_or_lacks_keys_is_refused():
    with pytest.raises(ValueError, match="not JSON"):
        Spec.parse("{bootstrap")
    with pytest.raises(ValueError, match="JSON object"):
        Spec.parse("[]")
    with pytest.raises(ValueError, match="lacks group, state_dir"):
        Spec.parse(json.dumps({k: v for k, v in SPEC.items() if k not in ("group", "state_dir")}))


def test_without_quix_streams_the_quix_peer_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "quixstreams", None)  # import quixstreams raises ImportError
    with pytest.raises(MissingExtraError, match="pip install 'eduhub\\[bench\\]'"):
        bench_peers.require_quix()
    assert bench_peers.main(["quix", "--spec", json.dumps(SPEC)]) == 2
    assert INSTALL_HINT in capsys.readouterr().err


def _records(count: int, bad_ratio: float) -> list[Record]:
    simulator = ExamRegistrationSimulator(seed=11, source=SOURCE, bad_ratio=bad_ratio)
    return [Record(f"ingest.{SOURCE}", 1, offset, str(doc.get("key", "")).encode(),
                   json.dumps(doc, ensure_ascii=False).encode(), None)
            for offset, doc in enumerate(simulator.envelopes(count))]


def test_a_valid_event_goes_to_its_canonical_topic_with_the_registry_id_and_its_event_id():
    work = Work(Spec(**SPEC), CATALOGUE)
    record = _records(1, 0.0)[0]
    topic, key, value, headers = work(record)
    doc = json.loads(record.value)
    assert topic == "bench-x.edu.exam.registration"
    assert key == record.key == doc["key"].encode()
    assert split_wire(value)[0] == SCHEMA_IDS["exam.registration"]
    assert header_value(headers, HEADER_EVENT_ID) == doc["event_id"]


def test_an_invalid_event_is_a_dead_letter_in_the_sources_dlq_carrying_its_event_id():
    work = Work(Spec(**SPEC), CATALOGUE)
    for record in _records(20, 1.0):
        topic, key, value, headers = work(record)
        assert topic == "bench-x.hub.dlq.exam-reg"
        assert (key, value) == (record.key, record.value)
        assert header_value(headers, dlq.STAGE) == "validate"
        assert header_value(headers, dlq.OFFSET) == str(record.offset)
        assert header_value(headers, HEADER_EVENT_ID) == header_value(headers, dlq.EVENT_ID)
    _, _, value, headers = work(Record(f"ingest.{SOURCE}", 0, 5, b"k", b"not json", None))
    assert value == b"not json" and header_value(headers, dlq.RULE) == "envelope.not_json"
    assert header_value(headers, HEADER_EVENT_ID) is None  # no event id to carry


def test_the_result_line_is_printed_once_with_the_figures():
    lines = []
    tally = Tally("faust", 2, lines.append)
    tally.first = 0.0
    assert not tally.add()
    assert tally.add()  # the count-th record
    tally.last = tally.first + 0.5
    tally.print_once()
    tally.print_once()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert (result["row"], result["events"], result["seconds"]) == ("faust", 2, 0.5)
    assert set(result) == {"row", "events", "seconds", "rss_kb", "rss_peak_kb"}

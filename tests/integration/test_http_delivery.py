"""HTTP delivery against a real receiver, broker and registry: retries, per-key order, an outage,
dead letters after N refusals, and the audit of each outcome."""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter

import httpx
import pytest

from tests.kafka_helpers import encode, header, produce_raw, read_to_end, wait_until
from tests.receiver import Receiver
from tests.unit.test_contract import examples

pytestmark = pytest.mark.integration
KEY = "integration-test-master-key-0123456789"
SECRET = "delivery-test-secret-abcdef"


def students(source: str, keys: int, versions: int) -> list[dict]:
    """`versions` successive changes of `keys` learners, interleaved as a source would send them."""
    base = next(e for e in examples() if e["entity"] == "school.student")
    sent = []
    for version in range(versions):
        for k in range(keys):
            envelope = copy.deepcopy(base)
            student_id = f"0313090{k:05d}"
            envelope.update(source=source, event_id=str(uuid.uuid4()), key=student_id)
            envelope["data"].update(student_id=student_id, class_name=f"10A{version + 1}")
            sent.append(envelope)
    return sent


def subscription(subscriber: str, url: str, **delivery) -> list[dict]:
    return [{"id": subscriber, "entities": ["school.student"], "pii_default": "keep",
             "delivery": {"kind": "http", "url": url, "secret_env": "EDUHUB_TEST_SUB_SECRET",
                          "backoff_initial_s": 0.05, "backoff_max_s": 0.5, **delivery}}]


def order_by_key(bodies: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for body in bodies:
        out.setdefault(body["key"], []).append(body["event_id"])
    return out


def ours(receiver: Receiver, source: str) -> tuple[list[dict], list[dict]]:
    """This test's bodies: the route stage also routes what other tests' workers left unrouted."""
    accepted, requests = receiver.snapshot()
    return [b for b in accepted if b["source"] == source], [b for b in requests if b["source"] == source]


def audit_outcomes(local_stack, subscriber: str, sent: list[dict]) -> Counter:
    ids = {e["event_id"] for e in sent}
    entries = [json.loads(r.value) for r in read_to_end(local_stack.bootstrap_servers, "hub.audit")]
    return Counter(e["outcome"] for e in entries if e["subscriber"] == subscriber and e["event_id"] in ids)


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(port: int, answer=lambda body: 200) -> Receiver:
        receiver = Receiver(port, SECRET.encode(), answer).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("EDUHUB_TEST_SUB_SECRET", SECRET)


def test_a_receiver_failing_three_times_gets_each_event_once_in_key_order(local_stack, start_worker, unique_source,
                                                                          receivers):
    sent = students(unique_source, keys=3, versions=3)
    flaky = sent[0]["event_id"]  # the first change of the first learner
    calls: Counter = Counter()

    def answer(body: dict) -> int:
        calls[body["event_id"]] += 1
        return 500 if body["event_id"] == flaky and calls[flaky] <= 3 else 200

    receiver = receivers(27101, answer)
    subscriber = f"hook-{unique_source}"
    start_worker([unique_source], subscriptions=subscription(subscriber, receiver.url, max_attempts=5))
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in sent])

    wait_until(lambda: len(ours(receiver, unique_source)[0]) >= len(sent), bound_s=120, interval_s=0.5)
    accepted, requests = ours(receiver, unique_source)
    assert Counter(b["event_id"] for b in accepted) == Counter(e["event_id"] for e in sent)  # each exactly once
    assert order_by_key(accepted) == order_by_key([{"key": e["key"], "event_id": e["event_id"]} for e in sent])
    assert calls[flaky] == 4 and receiver.bad_signatures == 0
    body = next(b for b in accepted if b["event_id"] == flaky)
    assert body["subscriber"] == subscriber and body["entity"] == "school.student" and body["op"] == sent[0]["op"]
    assert body["record"]["student_id"] == sent[0]["key"] and body["source"] == unique_source
    wait_until(lambda: audit_outcomes(local_stack, subscriber, sent)["delivered"] == len(sent), bound_s=30)
    assert audit_outcomes(local_stack, subscriber, sent) == Counter({"delivered": len(sent)})


def test_a_receiver_down_for_the_run_gets_everything_in_order_once_it_is_up(local_stack, start_worker,
                                                                            unique_source, receivers):
    port = 27102  # nothing listens here until the receiver starts
    subscriber = f"down-{unique_source}"
    worker = start_worker([unique_source], subscriptions=subscription(
        subscriber, f"http://127.0.0.1:{port}/hub/events", breaker_failures=3, breaker_open_s=1, max_attempts=2))
    sent = students(unique_source, keys=2, versions=3)
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in sent])

    def breaker_open() -> bool:
        text = httpx.get(f"{worker.url}/metrics", timeout=10).text
        return f'eduhub_delivery_circuit_open{{subscriber="{subscriber}"}} 1.0' in text

    assert wait_until(breaker_open, bound_s=120)  # it tried, failed, and stopped hammering the endpoint
    receiver = receivers(port)
    wait_until(lambda: len(ours(receiver, unique_source)[0]) >= len(sent), bound_s=120, interval_s=0.5)
    accepted, _ = ours(receiver, unique_source)
    assert Counter(b["event_id"] for b in accepted) == Counter(e["event_id"] for e in sent)
    assert order_by_key(accepted) == order_by_key([{"key": e["key"], "event_id": e["event_id"]} for e in sent])
    # Connection refusals never use up attempts: with max_attempts 2, nothing was dead-lettered.
    try:
        assert read_to_end(local_stack.bootstrap_servers, f"hub.dlq.sub.{subscriber}") == []
    except LookupError:
        pass


def test_an_event_refused_n_times_goes_to_the_subscriber_dlq_and_its_key_goes_on(local_stack, start_worker,
                                                                                 unique_source, receivers):
    sent = students(unique_source, keys=2, versions=3)
    refused = sent[2]["event_id"]  # the second change of the first learner
    receiver = receivers(27103, lambda body: 422 if body["event_id"] == refused else 200)
    subscriber = f"dlq-{unique_source}"
    start_worker([unique_source], subscriptions=subscription(subscriber, receiver.url, max_attempts=3))
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in sent])

    wait_until(lambda: len(ours(receiver, unique_source)[0]) >= len(sent) - 1, bound_s=120, interval_s=0.5)
    accepted, requests = ours(receiver, unique_source)
    expected = [e for e in sent if e["event_id"] != refused]
    assert order_by_key(accepted) == order_by_key([{"key": e["key"], "event_id": e["event_id"]} for e in expected])
    assert sum(1 for b in requests if b["event_id"] == refused) == 3

    dlq_topic = f"hub.dlq.sub.{subscriber}"
    wait_until(lambda: len(read_to_end(local_stack.bootstrap_servers, dlq_topic)) == 1, bound_s=30)
    (letter,) = read_to_end(local_stack.bootstrap_servers, dlq_topic)
    assert header(letter, "eduhub.errors.rule") == "delivery.rejected"
    assert header(letter, "eduhub.errors.event_id") == refused
    assert header(letter, "eduhub.errors.stage") == "deliver"
    assert "HTTP 422" in header(letter, "eduhub.errors.message")
    assert letter.value[0] == 0  # the subscriber's Avro record, as it was queued
    wait_until(lambda: audit_outcomes(local_stack, subscriber, sent)["dead_lettered"] == 1, bound_s=30)
    assert audit_outcomes(local_stack, subscriber, sent) == Counter({"delivered": len(sent) - 1, "dead_lettered": 1})


def test_a_retrying_key_does_not_hold_back_keys_fetched_after_it(local_stack, start_worker, unique_source,
                                                                receivers):
    slow = students(unique_source, keys=1, versions=2)  # one learner, two changes; the first fails 8 times
    failures = Counter()

    def answer(body: dict) -> int:
        if body["event_id"] == slow[0]["event_id"] and failures["slow"] < 8:
            failures["slow"] += 1
            return 500
        return 200

    receiver = receivers(27104, answer)
    subscriber = f"keys-{unique_source}"
    start_worker([unique_source], subscriptions=subscription(
        subscriber, receiver.url, max_attempts=10, backoff_initial_s=1.0, backoff_max_s=2.0, breaker_failures=100))
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in slow])
    wait_until(lambda: failures["slow"] >= 1, bound_s=120, interval_s=0.2)  # the first change is retrying now
    others = [e for e in students(unique_source, keys=4, versions=1) if e["key"] != slow[0]["key"]]
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(e["key"].encode(), encode(e)) for e in others])

    sent = slow + others
    wait_until(lambda: len(ours(receiver, unique_source)[0]) >= len(sent), bound_s=120, interval_s=0.5)
    accepted = [b["event_id"] for b in ours(receiver, unique_source)[0]]
    assert sorted(accepted) == sorted(e["event_id"] for e in sent)
    # Read after the slow key started retrying, the other learners were delivered while it waited...
    assert accepted.index(slow[0]["event_id"]) > max(accepted.index(e["event_id"]) for e in others)
    # ...and the slow learner's second change still came after its first.
    assert accepted.index(slow[1]["event_id"]) == accepted.index(slow[0]["event_id"]) + 1

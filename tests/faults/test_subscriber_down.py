"""An HTTP subscriber down for the whole run, then up: its events wait in its queue topic, then every one is
delivered (at-least-once: repeats are counted, never missing), and per key the first arrivals keep the
produced order."""

from __future__ import annotations

import socket
import uuid
from collections import Counter, defaultdict

import httpx
import pytest

from tests.conftest import PORT_OFFSET
from tests.faults.poison import Raw, log_excerpt, produce, read_all, text_header
from tests.faults.report import ScenarioResult, record
from tests.kafka_helpers import encode, registration_envelope, wait_until
from tests.receiver import Receiver

pytestmark = [pytest.mark.faults, pytest.mark.integration]
KEY = "faults-test-master-key-0123456789abcdef"
SECRET = "faults-subscriber-secret-0123456789"
RECEIVER_PORT = 27302 + PORT_OFFSET  # nothing listens here until the receiver starts
KEYS = 600
VERSIONS = 5  # changes per key, in sequence: 3,000 events


def test_http_subscriber_down_for_the_run_then_up_gets_everything_once_per_event_in_key_order(
        local_stack, start_worker, unique_source, monkeypatch):
    bootstrap = local_stack.bootstrap_servers
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("EDUHUB_FAULTS_SUB_SECRET", SECRET)
    subscriber = f"down-{unique_source}"
    worker = start_worker([unique_source], subscriptions=[{
        "id": subscriber, "entities": ["exam.registration"], "pii_default": "keep",
        "delivery": {"kind": "http", "url": f"http://127.0.0.1:{RECEIVER_PORT}/hub/events",
                     "secret_env": "EDUHUB_FAULTS_SUB_SECRET", "backoff_initial_s": 0.05, "backoff_max_s": 0.5,
                     "breaker_failures": 3, "breaker_open_s": 1, "max_attempts": 2}}])

    with socket.socket() as probe:  # the subscriber is really down: nothing listens on its port
        assert probe.connect_ex(("127.0.0.1", RECEIVER_PORT)) != 0, f"port {RECEIVER_PORT} is in use"
    keys = [f"2026{uuid.uuid4().int % 10**8:08d}" for _ in range(KEYS)]
    statuses = ["SUBMITTED", "CONFIRMED", "SUBMITTED", "CONFIRMED", "CANCELLED"]
    sent = [registration_envelope(unique_source, registration_id=key, op="c" if version == 0 else "u",
                                  data={"status": statuses[version % len(statuses)]})
            for version in range(VERSIONS) for key in keys]
    produce(bootstrap, f"ingest.{unique_source}", [Raw(e["key"].encode(), encode(e)) for e in sent])
    sent_ids = {e["event_id"] for e in sent}
    queue = f"sub.{subscriber}.exam.registration"

    def queued() -> list:
        return [r for r in read_all(bootstrap, queue) if text_header(r, "eduhub.source") == unique_source]

    # Down for the whole run: every event reaches the subscriber's queue topic, none is lost or refused.
    assert wait_until(lambda: len(queued()) >= len(sent), bound_s=60, interval_s=1), \
        f"{len(queued())} of {len(sent)} events in {queue}\n{log_excerpt(worker.log_path)}"
    subscriber_dlq = f"hub.dlq.sub.{subscriber}"
    dead_while_down = len(read_all(bootstrap, subscriber_dlq))

    def breaker_open() -> bool:  # it tried, was refused, and stopped hammering the endpoint
        try:
            text = httpx.get(f"{worker.url}/metrics", timeout=10).text
        except httpx.HTTPError:
            return False
        return f'eduhub_delivery_circuit_open{{subscriber="{subscriber}"}} 1.0' in text

    opened = wait_until(breaker_open, bound_s=20, interval_s=0.5)

    receiver = Receiver(RECEIVER_PORT, SECRET.encode()).start()
    try:
        def delivered() -> set[str]:
            accepted, _ = receiver.snapshot()
            return {b["event_id"] for b in accepted if b["source"] == unique_source}

        wait_until(lambda: len(delivered()) >= len(sent), bound_s=90, interval_s=0.5)
        accepted, requests = receiver.snapshot()
    finally:
        receiver.stop()

    mine = [b for b in accepted if b["source"] == unique_source]
    arrivals = Counter(b["event_id"] for b in mine)
    lost = sent_ids - set(arrivals)
    unexpected = set(arrivals) - sent_ids
    first_order: dict[str, list[str]] = defaultdict(list)
    for body in mine:
        if body["event_id"] not in first_order[body["key"]]:
            first_order[body["key"]].append(body["event_id"])
    produced_order: dict[str, list[str]] = defaultdict(list)
    for e in sent:
        produced_order[e["key"]].append(e["event_id"])
    order_kept = all(first_order.get(k, []) == ids for k, ids in produced_order.items())

    canonical = [r for r in read_all(bootstrap, "edu.exam.registration")
                 if text_header(r, "eduhub.source") == unique_source]
    in_queue = queued()
    kafka_repeats = (sum(n - 1 for n in Counter(text_header(r, "eduhub.event_id") for r in canonical).values())
                     + sum(n - 1 for n in Counter(text_header(r, "eduhub.event_id") for r in in_queue).values()))
    dead = read_all(bootstrap, subscriber_dlq) + read_all(bootstrap, f"hub.dlq.{unique_source}")
    raw_repeats = sum(n - 1 for n in arrivals.values())
    notes = [f"HTTP at-least-once: {raw_repeats} raw repeats of {len(mine)} accepted POSTs "
             f"({len([b for b in requests if b['source'] == unique_source])} requests, "
             f"{receiver.bad_signatures} bad signatures)",
             f"dead letters while the subscriber was down: {dead_while_down}; circuit breaker seen open: {opened}"]
    record(ScenarioResult(
        scenario="HTTP subscriber down for the run, then up", ingested=len(sent), canonical=len(canonical),
        dlq=len(dead), sub=len(in_queue), lost=len(lost), duplicated=kafka_repeats + len(unexpected),
        order_kept=order_kept, notes=notes))

    detail = "\n".join(notes) + f"\nlost {len(lost)}, unexpected {len(unexpected)}\n" + log_excerpt(worker.log_path)
    assert not lost and not unexpected, detail
    assert kafka_repeats == 0 and not dead, detail
    assert order_kept, detail
    assert receiver.bad_signatures == 0

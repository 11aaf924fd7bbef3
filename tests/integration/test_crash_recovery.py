"""Nothing is lost and nothing doubles when a worker is killed with SIGKILL mid-stream."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from tests.kafka_helpers import (encode, header, produce_raw, read_to_end, read_topic, registration_envelope,
                                 wait_until)

pytestmark = pytest.mark.integration


def envelopes(source: str, count: int, every_bad: int = 10) -> list[dict]:
    out = []
    for i in range(count):
        envelope = registration_envelope(source)
        if i % every_bad == 0:
            envelope["data"]["gender"] = "?"  # a dead letter
        out.append(envelope)
    return out


def test_kill_9_and_restart_every_event_in_exactly_one_output(local_stack, start_worker, unique_source):
    bootstrap = local_stack.bootstrap_servers
    ingest = f"ingest.{unique_source}"
    first = start_worker([unique_source], instance_id=f"crash-{unique_source}")

    chunks = [envelopes(unique_source, 20_000), envelopes(unique_source, 5_000), envelopes(unique_source, 5_000)]
    expected = {e["event_id"] for chunk in chunks for e in chunk}
    produce_raw(bootstrap, ingest, [(e["key"].encode(), encode(e)) for e in chunks[0]])
    # Kill as soon as output appears: the worker is then mid-stream, between transactions or in one.
    read_topic(bootstrap, "edu.exam.registration",
               lambda rs: any(header(r, "eduhub.source") == unique_source for r in rs), bound_s=60)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    produce_raw(bootstrap, ingest, [(e["key"].encode(), encode(e)) for e in chunks[1]])  # while no worker runs
    start_worker([unique_source], instance_id=f"crash-{unique_source}")
    produce_raw(bootstrap, ingest, [(e["key"].encode(), encode(e)) for e in chunks[2]])

    def event_ids() -> Counter:
        seen: Counter = Counter()
        for record in read_to_end(bootstrap, "edu.exam.registration"):
            if header(record, "eduhub.source") == unique_source:
                seen[header(record, "eduhub.event_id")] += 1
        for record in read_to_end(bootstrap, f"hub.dlq.{unique_source}"):
            seen[json.loads(record.value)["event_id"]] += 1
        return seen

    # Bounded wait for the restarted worker to catch up, then one final snapshot of both topics.
    wait_until(lambda: set(event_ids()) >= expected, bound_s=180, interval_s=2)
    seen = event_ids()
    assert set(seen) == expected, f"missing {len(expected - set(seen))}, unexpected {len(set(seen) - expected)}"
    duplicates = {event_id: n for event_id, n in seen.items() if n > 1}
    assert duplicates == {}

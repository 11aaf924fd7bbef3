"""HTTP delivery across partition hand-overs: workers share an HTTP subscriber's queue topics (consumer group
`eduhub-deliver-<subscriber>`) while the stream flows; a second worker joins, then the first leaves with
SIGTERM; and, in a second scenario, one of two workers is killed -9.

A real receiver (tests/receiver.py) records every POST. Each scenario proves from what it received: every
valid event of the stream arrived at least once (0 lost), nothing arrived that was not a valid event of the
stream, and per key the FIRST arrivals keep the produced order. Repeats by `event_id` are allowed (HTTP
delivery is at-least-once: a hand-over re-sends what was in flight) and are counted in the row's notes.
The Kafka side (canonical, source DLQ, the subscriber's queue topic: exactly once) is checked as well.

The stream is shorter than the other scenarios' (at most `MAX_EVENTS`): one POST per event is slower than
writing to a topic.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import PORT_OFFSET
from tests.faults.harness import (Feeder, FaultWorker, Scenario, Stream, Tally, events_count, say, wait_accounted)
from tests.faults.poison import log_excerpt, read_all, text_header
from tests.faults.report import ScenarioResult, record
from tests.kafka_helpers import wait_until
from tests.receiver import Receiver

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SECRET_ENV = "EDUHUB_FAULTS_HANDOVER_SECRET"
SECRET = "faults-handover-secret-0123456789abcdef"
# 2731x: no other test listens there (27101-27104, 27110, 27201, 27301, 27302 are taken).
SIGTERM_RECEIVER_PORT = 27311 + PORT_OFFSET
KILL_RECEIVER_PORT = 27312 + PORT_OFFSET
MAX_EVENTS = 5000
PACE_S = 20.0          # the stream is produced over about this long
CHUNK = 100            # the feeder's chunk: where pause() can hold the stream
BOUND_S = 300.0        # generous bounds: a CI run may share the machine


def http_subscription(sub_id: str, url: str) -> list[dict]:
    """The scenario's subscriber, delivered by HTTP (the route stage still writes its queue topic sub.<id>.*)."""
    return [{"id": sub_id, "entities": ["exam.registration"], "pii_default": "keep",
             "delivery": {"kind": "http", "url": url, "secret_env": SECRET_ENV,
                          "backoff_initial_s": 0.05, "backoff_max_s": 1.0}}]


def http_worker(scenario: Scenario, url: str, *, ready: bool = True) -> FaultWorker:
    """`Scenario.worker()` with the HTTP subscription instead of the Kafka one (same ports, same cleanup)."""
    return scenario.worker(ready=ready, bound_s=BOUND_S, subscriptions=http_subscription(scenario.sub_id, url))


def metric(worker: FaultWorker, name: str, labels: dict[str, str]) -> float | None:
    """One sample of the worker's /metrics (None when it does not answer or has no such sample)."""
    try:
        text = httpx.get(f"{worker.url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return None


def delivering(worker: FaultWorker, sub_id: str) -> tuple[float, float]:
    """(records this worker's HTTP delivery had accepted, partitions of the subscriber's queue it holds now)."""
    delivered = metric(worker, "eduhub_events_delivered_total", {"subscriber": sub_id})
    assigned = metric(worker, "eduhub_assigned_partitions", {"stage": f"deliver:{sub_id}"})
    return delivered or 0.0, assigned or 0.0


def start_receiver(port: int) -> Receiver:
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is in use"
    return Receiver(port, SECRET.encode()).start()


def feeder(scenario: Scenario, stream: Stream) -> Feeder:
    """`scenario.feeder()` with small chunks, so that pause() holds the stream close to where it is."""
    made = Feeder(scenario.bootstrap, stream, duration_s=PACE_S, chunk=CHUNK)
    scenario.feeders.append(made)
    return made


def hold_until(scenario: Scenario, feed: Feeder, condition, hold_at: int, what: str) -> None:
    """Let the stream flow until `condition()`; if it reaches `hold_at` events first, pause it there (so the
    next fault still lands mid-stream), then resume. Bounded."""
    deadline = time.monotonic() + BOUND_S
    held = False
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {BOUND_S:.0f} s"
        if not held and feed.produced >= hold_at:
            feed.pause()
            held = True
        time.sleep(0.2)
    feed.resume()
    if held:
        scenario.note(f"stream held at {feed.produced} events until {what}")


@dataclass
class Received:
    """What the receiver got for one stream, compared with the stream."""

    stream: Stream
    bodies: list[dict]                               # accepted POSTs of this source, in arrival order
    requests: int
    bad_signatures: int
    marks: list[tuple[str, int]]                     # (fault, accepted POSTs of this source when it happened)
    arrivals: Counter = field(init=False)            # event_id → accepted POSTs
    lost: list[str] = field(init=False)              # valid ids never received
    unexpected: list[str] = field(init=False)        # ids received that are not valid ids of the stream
    order_broken: list[str] = field(init=False)      # keys whose first arrivals differ from the produced order
    # Repeats that came after a later event of the same key had arrived: expected after a kill (the new
    # owner re-sends from the last commit), and why a receiver must drop repeats by event_id.
    late_repeats: int = field(init=False)

    def __post_init__(self) -> None:
        self.arrivals = Counter(b["event_id"] for b in self.bodies)
        self.lost = sorted(self.stream.valid - set(self.arrivals))
        self.unexpected = sorted(set(self.arrivals) - self.stream.valid)
        first: dict[str, list[str]] = defaultdict(list)
        seen: set[str] = set()
        last_first: dict[str, str] = {}
        self.late_repeats = 0
        for body in self.bodies:
            event_id = body["event_id"]
            key = self.stream.key_of.get(event_id)
            if key is None or event_id not in self.stream.valid:
                continue
            if event_id in seen:
                if last_first.get(key) != event_id:
                    self.late_repeats += 1
                continue
            seen.add(event_id)
            first[key].append(event_id)
            last_first[key] = event_id
        order = self.stream.valid_order()
        # Compared on the ids that arrived: a missing one counts as lost, not also as out of order.
        self.order_broken = sorted(key for key, ids in first.items()
                                   if ids != [i for i in order[key] if i in seen])

    def repeats_by_phase(self) -> str:
        """Where the repeats arrived: before the first fault, between faults, after the last."""
        bounds = sorted(self.marks, key=lambda mark: mark[1])
        names = [f"before {bounds[0][0]}" if bounds else "whole run"]
        names += [f"after {name}" for name, _ in bounds]
        counts = [0] * len(names)
        seen: set[str] = set()
        for index, body in enumerate(self.bodies):
            if body["event_id"] in seen:
                counts[sum(1 for _, at in bounds if at <= index)] += 1
            seen.add(body["event_id"])
        return ", ".join(f"{n} {name}" for n, name in zip(counts, names))

    @property
    def distinct(self) -> int:
        return len(self.arrivals)

    @property
    def repeats(self) -> int:
        return sum(n - 1 for n in self.arrivals.values())

    def summary(self) -> str:
        sample = lambda ids: ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")  # noqa: E731
        lines = [f"HTTP: {len(self.stream.valid)} valid events, {self.distinct} distinct received, "
                 f"{len(self.bodies)} accepted POSTs ({self.repeats} repeats: {self.repeats_by_phase()}; "
                 f"{self.late_repeats} after a later event of their key), {self.requests} requests, "
                 f"{self.bad_signatures} bad signatures"]
        for name in ("lost", "unexpected", "order_broken"):
            ids = getattr(self, name)
            if ids:
                lines.append(f"{name}: {len(ids)} (e.g. {sample(ids)})")
        return "\n".join(lines)


def received(receiver: Receiver, source: str) -> list[dict]:
    accepted, _ = receiver.snapshot()
    return [b for b in accepted if b.get("source") == source]


def accepted_count(receiver: Receiver, source: str) -> int:
    return len(received(receiver, source))


def distinct_received(receiver: Receiver, source: str) -> int:
    return len({b["event_id"] for b in received(receiver, source)})


def finish_http(scenario: Scenario, stream: Stream, receiver: Receiver, label: str,
                marks: list[tuple[str, int]]) -> tuple[Received, Tally]:
    """Wait (bounded) until every valid event reached the receiver and every event is accounted for in Kafka,
    record the row and assert: 0 lost, nothing unexpected, first arrivals in produced order per key."""
    say(f"{stream.source}: waiting until the receiver has every valid event")
    began = time.monotonic()
    done = wait_until(lambda: stream.valid <= {b["event_id"] for b in received(receiver, stream.source)},
                      bound_s=BOUND_S, interval_s=1.0)
    say(f"{stream.source}: {'all' if done else 'NOT all'} valid events received "
        f"{time.monotonic() - began:.1f} s after the stream ended")
    kafka = wait_accounted(scenario.bootstrap, stream, scenario.sub_topic, scenario.starts, BOUND_S)
    time.sleep(2)  # POSTs still in flight land, so the repeat count is the run's
    accepted, requests = receiver.snapshot()
    got = Received(stream, [b for b in accepted if b.get("source") == stream.source],
                   requests=len([b for b in requests if b.get("source") == stream.source]),
                   bad_signatures=receiver.bad_signatures, marks=marks)
    sub_dlq = len(read_all(scenario.bootstrap, f"hub.dlq.sub.{scenario.sub_id}"))
    route_dlq = len([r for r in read_all(scenario.bootstrap, "hub.dlq.route")
                     if text_header(r, "eduhub.source") == stream.source])

    notes = list(scenario.notes)
    notes.append(f"HTTP at-least-once: {got.repeats} raw repeats by event_id over {len(got.bodies)} accepted POSTs "
                 f"({got.distinct} distinct; {got.late_repeats} of the repeats re-sent after a later event of their key; "
                 f"repeats arrived {got.repeats_by_phase()})")
    notes.append(f"Kafka side: canonical {kafka.canonical}, dlq {kafka.dlq}, queue topic {kafka.sub}, "
                 f"lost {kafka.lost}, duplicated {kafka.duplicated}, order {'kept' if kafka.order_kept else 'BROKEN'}; "
                 f"subscriber DLQ {sub_dlq}, route DLQ {route_dlq}")
    if got.lost:
        notes.append(f"HTTP lost: {len(got.lost)} valid events never received")
    if got.unexpected:
        notes.append(f"HTTP unexpected: {len(got.unexpected)} ids that are not valid events of the stream")
    if got.order_broken:
        notes.append(f"HTTP first-arrival order broken for {len(got.order_broken)} keys")
    record(ScenarioResult(
        scenario=label, ingested=len(stream.envelopes), canonical=kafka.canonical, dlq=kafka.dlq,
        sub=got.distinct, lost=len(got.lost), duplicated=len(got.unexpected), order_kept=not got.order_broken,
        notes=notes))
    say(f"{scenario.name}: {got.summary()}\n{kafka.summary()}")

    failed = got.lost or got.unexpected or got.order_broken or got.bad_signatures or sub_dlq or route_dlq
    if failed or not kafka.accounted or kafka.duplicated or not kafka.order_kept:
        for worker in scenario.workers:
            print(f"--- worker pid {worker.process.pid if worker.process else '-'} log {worker.log_path} ---\n"
                  f"{log_excerpt(worker.log_path)}", flush=True)
    detail = got.summary() + "\n" + "\n".join(notes)
    assert not got.lost, detail
    assert not got.unexpected, detail
    assert not got.order_broken, detail
    assert got.bad_signatures == 0 and sub_dlq == 0 and route_dlq == 0, detail
    kafka.check()  # the queue topic itself: every valid event once, in order
    return got, kafka


def test_http_delivery_worker_joins_then_first_leaves_with_sigterm(scenario, monkeypatch):
    """One worker delivers with the stream flowing; a second joins mid-stream and takes part of the queue's
    partitions; then the first leaves with SIGTERM mid-stream and the second takes the rest."""
    monkeypatch.setenv(SECRET_ENV, SECRET)  # the workers inherit it
    stream = scenario.stream(min(events_count(), MAX_EVENTS))
    total, valid = len(stream.envelopes), len(stream.valid)
    receiver = start_receiver(SIGTERM_RECEIVER_PORT)
    try:
        first = http_worker(scenario, receiver.url)
        with feeder(scenario, stream) as feed:
            feed.wait_produced(int(0.25 * total), bound_s=BOUND_S)
            marks = [("the second worker started", accepted_count(receiver, stream.source))]
            second = http_worker(scenario, receiver.url, ready=False)
            # The stream flows while the second starts and its delivery joins the group: the first hands it
            # partitions, then it delivers from them. Held at 50 % / 60 % if either takes longer (a held
            # stream gives a new owner nothing to deliver: the second wait needs it flowing again), so the
            # SIGTERM below still lands mid-stream.
            hold_until(scenario, feed, lambda: delivering(second, scenario.sub_id)[1] > 0,
                       int(0.5 * total), f"pid {second.pid} holds queue partitions")
            hold_until(scenario, feed, lambda: delivering(second, scenario.sub_id)[0] > 0,
                       int(0.6 * total), f"pid {second.pid} delivers")
            scenario.note(f"pid {second.pid} joined and delivers (holds {delivering(second, scenario.sub_id)[1]:.0f} "
                          f"queue partitions) at {feed.produced}/{total} produced, "
                          f"{distinct_received(receiver, stream.source)}/{valid} received")
            feed.wait_produced(int(0.65 * total), bound_s=BOUND_S)
            by_first, held_by_first = delivering(first, scenario.sub_id)
            by_second, _ = delivering(second, scenario.sub_id)
            produced, got = feed.produced, distinct_received(receiver, stream.source)
            marks.append(("SIGTERM", accepted_count(receiver, stream.source)))
            first.process.send_signal(signal.SIGTERM)
            code = first.process.wait(timeout=120)
            scenario.note(f"pid {first.pid} left with SIGTERM (exit {code}) at {produced}/{total} produced, "
                          f"{got}/{valid} received; it had delivered {by_first:.0f} and held {held_by_first:.0f} "
                          f"queue partitions, pid {second.pid} had delivered {by_second:.0f}")
        assert produced < total and got < valid, "the SIGTERM did not land mid-stream"
        assert by_first > 0 and held_by_first > 0, "the first worker was not delivering when it left"
        assert by_second > 0, "the second worker had not delivered before the first left"
        finish_http(scenario, stream, receiver, "HTTP: worker joins, first leaves with SIGTERM", marks)
        assert second.alive, f"the second worker exited:\n{second.log_tail()}"
        assert delivering(second, scenario.sub_id)[1] > 0, "the second worker does not hold the queue's partitions"
    finally:
        receiver.stop()


def test_http_delivery_worker_killed_9_while_another_runs(scenario, monkeypatch):
    """Two workers deliver with the stream flowing; one is killed -9 mid-stream; the other takes its
    partitions (after the group's session timeout) and re-sends what the killed one had not committed."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    stream = scenario.stream(min(events_count(), MAX_EVENTS))
    total, valid = len(stream.envelopes), len(stream.valid)
    receiver = start_receiver(KILL_RECEIVER_PORT)
    try:
        workers = [http_worker(scenario, receiver.url), http_worker(scenario, receiver.url)]
        victim = workers[scenario.rng.randrange(2)]
        survivor = workers[1] if victim is workers[0] else workers[0]
        with feeder(scenario, stream) as feed:
            # Both hold part of the queue, then both deliver, before the kill; held at 35 % / 45 % if either
            # takes longer (a held stream gives a new owner nothing to deliver: the second wait needs it flowing).
            hold_until(scenario, feed, lambda: all(delivering(w, scenario.sub_id)[1] > 0 for w in workers),
                       int(0.35 * total), "both workers hold queue partitions")
            hold_until(scenario, feed, lambda: all(delivering(w, scenario.sub_id)[0] > 0 for w in workers),
                       int(0.45 * total), "both workers deliver")
            feed.wait_produced(int(0.5 * total), bound_s=BOUND_S)
            by_victim, held_by_victim = delivering(victim, scenario.sub_id)
            produced, got = feed.produced, distinct_received(receiver, stream.source)
            marks = [("kill -9", accepted_count(receiver, stream.source))]
            code = victim.kill9()
            scenario.note(f"pid {victim.pid} killed (exit {code}) at {produced}/{total} produced, {got}/{valid} "
                          f"received; it had delivered {by_victim:.0f} and held {held_by_victim:.0f} queue "
                          f"partitions; pid {survivor.pid} runs on")
        assert code == -signal.SIGKILL
        assert produced < total and got < valid, "the kill did not land mid-stream"
        assert by_victim > 0 and held_by_victim > 0, "the killed worker was not delivering"
        finish_http(scenario, stream, receiver, "HTTP: kill -9 of a worker while another runs", marks)
        assert survivor.alive, f"the surviving worker exited:\n{survivor.log_tail()}"
    finally:
        receiver.stop()

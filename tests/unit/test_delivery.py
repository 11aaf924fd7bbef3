"""HTTP delivery's policies without a network: the circuit breaker, backoff with jitter, the body."""

from __future__ import annotations

import asyncio
import json

from hub.delivery import CircuitBreaker, HttpDeliverer, backoff_s
from hub.metrics import HubMetrics
from hub.schemas import Catalogue
from hub.signing import sign
from hub.subscriptions import SubscriptionConfig, SubscriptionPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_and_probes_once_when_half_open():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_s=30, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() == (True, 0.0)
    breaker.failure()
    assert breaker.state == "open" and breaker.allow() == (False, 30)
    clock.now += 30
    assert breaker.allow() == (True, 0.0)  # the probe
    assert breaker.allow()[0] is False  # only one probe at a time
    breaker.failure()  # the probe failed: open again at once
    assert breaker.state == "open"
    clock.now += 30
    assert breaker.allow() == (True, 0.0)
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() == (True, 0.0)


def test_a_success_resets_the_consecutive_count():
    breaker = CircuitBreaker(failures=2, open_s=1, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    upper = lambda low, high: high  # noqa: E731 - the top of the jitter range
    assert [backoff_s(n, 0.5, 4, upper) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]
    assert backoff_s(3, 0.5, 4, lambda low, high: low) == 0


class Message:
    topic = "sub.parent-app.school.student"
    key = b"031309001234"
    headers = [("eduhub.event_id", b"e-1"), ("eduhub.op", b"u"), ("eduhub.source", b"smas"),
               ("eduhub.occurred_at", b"2026-09-05T08:00:00+07:00")]


def test_the_body_carries_the_event_identity_and_the_projected_record_and_is_signed():
    config = SubscriptionConfig.model_validate({
        "id": "parent-app", "entities": ["school.student"],
        "delivery": {"kind": "http", "url": "https://example.invalid/hook", "secret_env": "X"}})
    policy = SubscriptionPolicy(config, Catalogue.load(), b"k" * 32)

    async def body() -> bytes:
        deliverer = HttpDeliverer(policy, secret=b"s", bootstrap_servers="127.0.0.1:1", registry=None, metrics=HubMetrics())
        try:
            return deliverer.body(Message(), {"student_id": "031309001234"})
        finally:
            await deliverer.client.aclose()

    raw = asyncio.run(body())
    assert json.loads(raw) == {"event_id": "e-1", "subscriber": "parent-app", "entity": "school.student",
                               "key": "031309001234", "op": "u", "occurred_at": "2026-09-05T08:00:00+07:00",
                               "source": "smas", "record": {"student_id": "031309001234"}}
    assert sign(b"s", 1767225600, raw).startswith("sha256=")


def test_offsets_commit_only_up_to_the_oldest_unfinished_record():
    from hub.delivery import OffsetTracker

    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.add(offset)
    assert tracker.committable() is None
    tracker.done(11)
    tracker.done(12)  # other keys are done, but 10 still retries
    assert tracker.committable() is None
    tracker.done(10)
    assert tracker.committable() == 13
    tracker.done(13)
    assert tracker.committable() == 14

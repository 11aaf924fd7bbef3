"""A connector whose source cannot be opened at start is RETRYING and retries; it never stops the runtime."""

from __future__ import annotations

import asyncio
import json

from connectors.base import ConnectorConfig, SourceConnector, SourceRecord
from connectors.runtime import ConnectorRuntime
from hub.core.metrics import HubMetrics


class FlakySource(SourceConnector):
    """Refuses to start `refusals` times (its database is down), then yields one record."""
    kind = "flaky"

    def __init__(self, refusals: int) -> None:
        super().__init__(ConnectorConfig(name="flaky-db", kind="flaky", source="smas", poll_interval_s=0.01))
        self.refusals, self.starts, self.stops, self.sent = refusals, 0, 0, False

    async def start(self, offset):
        self.starts += 1
        if self.starts <= self.refusals:
            raise OSError("connection refused: smas-db:5432")

    async def poll(self):
        if self.sent:
            return []
        self.sent = True
        return [SourceRecord({"event_id": "e-1", "key": "k1"}, {"n": 1})]

    async def stop(self):
        self.stops += 1


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic, value, key=None):
        self.sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class Offsets:
    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}

    async def write(self, producer, name, offset):
        self.stored[name] = offset


async def until(predicate, bound_s: float = 10.0) -> None:
    for _ in range(int(bound_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_a_source_down_at_start_is_retried_then_publishes(monkeypatch):
    monkeypatch.setattr("connectors.runtime.half_jitter", lambda seconds: 0.01)  # no real backoff in a unit test

    async def scenario():
        source, producer, offsets, metrics = FlakySource(refusals=2), Producer(), Offsets(), HubMetrics()
        runtime = ConnectorRuntime(source, producer=producer, offsets=offsets, metrics=metrics)
        await runtime.start(None)  # does not raise: the runtime and its other connectors go on
        assert runtime.status.state == "RETRYING"
        assert "connection refused" in runtime.status.last_error
        await until(lambda: producer.sent)
        assert source.starts == 3 and runtime.status.state == "RUNNING"
        assert [json.loads(v)["event_id"] for _, _, v in producer.sent] == ["e-1"]
        assert offsets.stored == {"flaky-db": {"n": 1}}
        errors = metrics.connector_errors.labels("flaky-db", "smas")._value.get()
        assert errors == 2
        await runtime.stop()
        assert runtime.status.state == "STOPPED" and source.stops == 1

    asyncio.run(scenario())


def test_stopping_a_connector_that_never_started_releases_it(monkeypatch):
    monkeypatch.setattr("connectors.runtime.half_jitter", lambda seconds: 0.01)

    async def scenario():
        source = FlakySource(refusals=10**6)
        runtime = ConnectorRuntime(source, producer=Producer(), offsets=Offsets(), metrics=HubMetrics())
        await runtime.start(None)
        await until(lambda: source.starts >= 3)
        await runtime.stop()
        assert runtime.status.state == "STOPPED" and source.stops == 1 and not source.sent

    asyncio.run(scenario())

"""The HTTP push connector: signed requests in, 202 once the (fake) runtime acknowledged them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pydantic
import pytest

from connectors.base import KINDS, SourceRecord
from connectors.http import HttpConnector, HttpConnectorConfig, sign

SOURCE = "exam-portal"
SECRET = b"unit-test-hmac-key"
SECRET_ENV = "EDUHUB_TEST_HTTP_SECRET"
VN = timezone(timedelta(hours=7))
# Below 32768 (see tests/conftest.py); the next one is tried when a port is taken.
BASE_PORT = 28088


def envelope(**overrides: Any) -> dict[str, Any]:
    occurred = (datetime.now(VN) - timedelta(minutes=3)).replace(microsecond=0)
    doc = {"event_id": str(uuid.uuid4()), "source": SOURCE, "entity": "exam.registration", "op": "c",
           "key": f"REG-{uuid.uuid4().hex[:8]}", "occurred_at": occurred.isoformat(), "data": {}}
    doc.update(overrides)
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


@dataclass
class Harness:
    connector: HttpConnector
    client: httpx.AsyncClient
    polled: list[SourceRecord] = field(default_factory=list)
    fail: bool = False  # the fake runtime fails the records instead of acknowledging them

    async def post(self, body: bytes, *, ts: int | None = None, signature: str | None = None,
                   path: str = f"/ingest/{SOURCE}", headers: dict[str, str] | None = None) -> httpx.Response:
        ts = int(time.time()) if ts is None else ts
        sent = {"Content-Type": "application/json", "X-EduHub-Timestamp": str(ts),
                "X-EduHub-Signature": signature or sign(SECRET, ts, body)}
        sent.update(headers or {})
        return await self.client.post(path, content=body, headers={k: v for k, v in sent.items() if v is not None})


async def fake_runtime(h: Harness) -> None:
    """Polls like the runtime and settles each record's future, as Kafka's acknowledgement would."""
    while True:
        for record in await h.connector.poll():
            h.polled.append(record)
            if record.acknowledged.done():
                continue
            if h.fail:
                record.acknowledged.set_exception(RuntimeError("broker unavailable"))
            else:
                record.acknowledged.set_result(True)


async def start_on_free_port(connector_config: dict[str, Any]) -> HttpConnector:
    for port in range(BASE_PORT, BASE_PORT + 50):
        connector = HttpConnector(HttpConnectorConfig(**{**connector_config, "port": port}))
        try:
            await connector.start(None)
        except OSError:
            continue
        return connector
    raise RuntimeError("no free port for the HTTP connector test")


@contextlib.asynccontextmanager
async def serving(*, runtime: bool = True, **overrides: Any) -> AsyncIterator[Harness]:
    config = {"name": "exam-portal-http", "kind": "http", "source": SOURCE, "secret_env": SECRET_ENV,
              "poll_interval_s": 0.05, "ack_timeout_s": 5, **overrides}
    connector = await start_on_free_port(config)
    task = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{connector.bound_port}", trust_env=False,
                                     timeout=10) as client:
            harness = Harness(connector, client)
            if runtime:
                task = asyncio.create_task(fake_runtime(harness))
            yield harness
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await connector.stop()


async def nothing_queued(h: Harness) -> None:
    assert await h.connector.poll() == []
    assert h.polled == []


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET.decode())


# -- the contract ------------------------------------------------------------------------------


def test_registered_with_its_config_model():
    assert KINDS["http"] is HttpConnector
    assert HttpConnector.config_model is HttpConnectorConfig
    config = HttpConnectorConfig(name="portal-http", kind="http", source=SOURCE)
    assert (config.host, config.port, config.secret_env) == ("127.0.0.1", 8088, "EDUHUB_HTTP_SECRET")
    assert (config.max_body_bytes, config.max_events, config.rate_per_s, config.burst) == (1024 * 1024, 1000, 50, 100)
    assert (config.max_skew_s, config.ack_timeout_s) == (300, 30)
    for name, info in HttpConnectorConfig.model_fields.items():
        assert info.description, f"{name} has no description"
    with pytest.raises(pydantic.ValidationError):
        HttpConnectorConfig(name="portal-http", kind="http", source=SOURCE, secret="inline")  # never in hub.yaml


def test_sign_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"a": 1}'
    expected = hmac.new(SECRET, b"1767225600." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1767225600, body) == f"sha256={expected}"


def test_start_without_secret_names_the_variable(monkeypatch):
    for value in (None, ""):
        if value is None:
            monkeypatch.delenv(SECRET_ENV, raising=False)
        else:
            monkeypatch.setenv(SECRET_ENV, value)
        connector = HttpConnector(HttpConnectorConfig(name="portal-http", kind="http", source=SOURCE,
                                                      secret_env=SECRET_ENV, port=BASE_PORT))
        with pytest.raises(RuntimeError, match=SECRET_ENV):
            asyncio.run(connector.start(None))
        assert connector.bound_port is None  # nothing listening


# -- accepted ----------------------------------------------------------------------------------


def test_single_envelope_is_accepted_once_acknowledged():
    async def scenario():
        async with serving() as h:
            doc = envelope()
            response = await h.post(encode(doc))
            assert response.status_code == 202, response.text
            assert response.json() == {"accepted": 1, "event_ids": [doc["event_id"]]}
            assert [r.envelope for r in h.polled] == [doc]
            assert h.polled[0].offset == {"received": 1}
            assert h.polled[0].acknowledged.result() is True

    asyncio.run(scenario())


def test_batch_of_three_is_accepted():
    async def scenario():
        async with serving() as h:
            docs = [envelope() for _ in range(3)]
            response = await h.post(encode(docs))
            assert response.status_code == 202, response.text
            assert response.json() == {"accepted": 3, "event_ids": [d["event_id"] for d in docs]}
            assert [r.envelope for r in h.polled] == docs
            assert [r.offset["received"] for r in h.polled] == [1, 2, 3]

    asyncio.run(scenario())


def test_healthz():
    async def scenario():
        async with serving(runtime=False) as h:
            response = await h.client.get("/healthz")
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}

    asyncio.run(scenario())


# -- authentication ----------------------------------------------------------------------------


def test_bad_signature_is_403_and_nothing_queued():
    async def scenario():
        async with serving(runtime=False) as h:
            body = encode(envelope())
            ts = int(time.time())
            wrong_key = sign(b"another-key", ts, body)
            assert (await h.post(body, ts=ts, signature=wrong_key)).status_code == 403
            tampered = sign(SECRET, ts, body)  # signed, then the body changed on the way
            assert (await h.post(body + b" ", ts=ts, signature=tampered)).status_code == 403
            assert (await h.post(body, ts=ts, signature="sha256=not-hex")).status_code == 403
            assert (await h.post(body, ts=ts, signature=sign(SECRET, ts + 1, body))).status_code == 403
            await nothing_queued(h)

    asyncio.run(scenario())


def test_missing_headers_are_401():
    async def scenario():
        async with serving(runtime=False) as h:
            body = encode(envelope())
            response = await h.client.post(f"/ingest/{SOURCE}", content=body)
            assert response.status_code == 401
            assert response.json()["reason"] == "missing_headers"
            ts = int(time.time())
            only_ts = await h.client.post(f"/ingest/{SOURCE}", content=body, headers={"X-EduHub-Timestamp": str(ts)})
            assert only_ts.status_code == 401
            only_sig = await h.client.post(f"/ingest/{SOURCE}", content=body,
                                           headers={"X-EduHub-Signature": sign(SECRET, ts, body)})
            assert only_sig.status_code == 401
            not_a_number = await h.post(body, headers={"X-EduHub-Timestamp": "yesterday"})
            assert not_a_number.status_code == 401
            await nothing_queued(h)

    asyncio.run(scenario())


def test_stale_timestamp_is_401():
    async def scenario():
        async with serving(runtime=False, max_skew_s=300) as h:
            body = encode(envelope())
            old = await h.post(body, ts=int(time.time()) - 301)
            assert old.status_code == 401
            assert old.json()["reason"] == "stale"
            future = await h.post(body, ts=int(time.time()) + 400)
            assert future.status_code == 401
            assert future.json()["reason"] == "stale"
            await nothing_queued(h)

    asyncio.run(scenario())


def test_replayed_signature_is_401():
    async def scenario():
        async with serving() as h:
            body = encode(envelope())
            ts = int(time.time())
            first = await h.post(body, ts=ts)
            assert first.status_code == 202
            again = await h.post(body, ts=ts)
            assert again.status_code == 401
            assert again.json()["reason"] == "replayed"
            assert len(h.polled) == 1
            # The same events re-signed with a new timestamp are a new request (the hub drops the repeat).
            resigned = await h.post(body, ts=ts + 1)
            assert resigned.status_code == 202

    asyncio.run(scenario())


# -- limits ------------------------------------------------------------------------------------


def test_oversize_body_is_413():
    async def scenario():
        async with serving(runtime=False, max_body_bytes=1024) as h:
            body = encode([envelope(key="K" * 300) for _ in range(4)])
            assert len(body) > 1024
            response = await h.post(body)
            assert response.status_code == 413
            assert response.json()["reason"] == "too_large"

            async def chunks():  # no Content-Length: the bytes actually read count
                for i in range(0, len(body), 256):
                    yield body[i:i + 256]

            ts = int(time.time())
            streamed = await h.client.post(f"/ingest/{SOURCE}", content=chunks(), headers={
                "X-EduHub-Timestamp": str(ts), "X-EduHub-Signature": sign(SECRET, ts, body)})
            assert "content-length" not in streamed.request.headers
            assert streamed.status_code == 413
            await nothing_queued(h)

    asyncio.run(scenario())


def test_rate_limit_is_429_once_the_burst_is_spent():
    async def scenario():
        async with serving(burst=2, rate_per_s=0.01) as h:
            for _ in range(2):
                assert (await h.post(encode(envelope()))).status_code == 202
            limited = await h.post(encode(envelope()))
            assert limited.status_code == 429
            assert int(limited.headers["Retry-After"]) >= 1
            assert len(h.polled) == 2

    asyncio.run(scenario())


# -- invalid bodies ----------------------------------------------------------------------------


def test_malformed_json_is_400_with_problems():
    async def scenario():
        async with serving(runtime=False) as h:
            response = await h.post(b'{"event_id": ')
            assert response.status_code == 400
            problems = response.json()["problems"]
            assert problems and problems[0]["rule"] == "envelope.not_json"
            assert set(problems[0]) == {"index", "field", "rule", "message"}
            for body, rule in ((b"42", "ingest.not_envelope"), (b"[]", "ingest.empty")):
                response = await h.post(body)
                assert response.status_code == 400
                assert [p["rule"] for p in response.json()["problems"]] == [rule]
            await nothing_queued(h)

    asyncio.run(scenario())


def test_too_many_events_is_400():
    async def scenario():
        async with serving(runtime=False, max_events=2) as h:
            response = await h.post(encode([envelope() for _ in range(3)]))
            assert response.status_code == 400
            assert [p["rule"] for p in response.json()["problems"]] == ["ingest.too_many_events"]
            await nothing_queued(h)

    asyncio.run(scenario())


def test_one_bad_envelope_rejects_the_whole_batch():
    async def scenario():
        async with serving(runtime=False) as h:
            docs = [envelope(), envelope(event_id="row-17"), envelope(), envelope(source="smas")]
            response = await h.post(encode(docs))
            assert response.status_code == 400
            problems = response.json()["problems"]
            assert {(p["index"], p["field"], p["rule"]) for p in problems} == {
                (1, "event_id", "envelope.event_id_format"),
                (3, "source", "envelope.source_unregistered"),
            }
            await nothing_queued(h)

    asyncio.run(scenario())


def test_wrong_source_in_path_is_404():
    async def scenario():
        async with serving(runtime=False) as h:
            response = await h.post(encode(envelope(source="smas")), path="/ingest/smas")
            assert response.status_code == 404
            await nothing_queued(h)

    asyncio.run(scenario())

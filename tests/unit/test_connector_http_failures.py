"""The HTTP push connector when publishing fails or is slow: the caller hears 503 and may resend as it was."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.unit.test_connector_http import SECRET, SECRET_ENV, encode, envelope, serving


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET.decode())


# -- publishing fails --------------------------------------------------------------------------


def test_runtime_failure_is_503_and_the_identical_retry_is_accepted():
    async def scenario():
        async with serving() as h:
            h.fail = True
            body = encode([envelope(), envelope()])
            ts = int(time.time())
            failed = await h.post(body, ts=ts)
            assert failed.status_code == 503
            assert "error" in failed.json()
            h.fail = False
            retried = await h.post(body, ts=ts)  # nothing was published, so the resend is no replay
            assert retried.status_code == 202
            assert retried.json()["accepted"] == 2

    asyncio.run(scenario())


def test_no_acknowledgement_in_time_is_503():
    async def scenario():
        async with serving(runtime=False, ack_timeout_s=0.2) as h:
            response = await h.post(encode(envelope()))
            assert response.status_code == 503
            assert response.json()["reason"] == "timeout"

    asyncio.run(scenario())


def test_stop_fails_waiting_requests_and_closes_the_port():
    async def scenario():
        async with serving(runtime=False, ack_timeout_s=10) as h:
            request = asyncio.create_task(h.post(encode(envelope())))
            deadline = time.monotonic() + 5
            while h.connector._queue.empty() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            port = h.connector.bound_port
            started = time.monotonic()
            await h.connector.stop()
            response = await request
            assert response.status_code == 503
            assert time.monotonic() - started < 5
            assert await h.connector.poll() == []
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(scenario())

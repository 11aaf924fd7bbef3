"""The HTTP ingest listener under attack: nobody without the key spends the source's budget or makes the hub read
a body, slow clients are cut off, malformed signed bodies get a 400 with the reason, TLS and headers on every answer."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import time

import httpx
import pytest

from connectors.http import sign
from tests.tls_certs import make_certs
from tests.unit.test_connector_http import SECRET, SECRET_ENV, SOURCE, encode, envelope, nothing_queued, serving


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET.decode())


def head(port: int, *, ts: int | None = None, body: bytes = b"", length: int | None = None,
         signature: str | None = None, extra: str = "") -> bytes:
    ts = int(time.time()) if ts is None else ts
    return (f"POST /ingest/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-EduHub-Timestamp: {ts}\r\nX-EduHub-Signature: {signature or sign(SECRET, ts, body)}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n{extra}\r\n").encode()


async def read_until_closed(reader: asyncio.StreamReader, bound_s: float) -> bytes:
    """Everything the server sends until it closes the connection, failing after `bound_s`."""
    data = b""
    async with asyncio.timeout(bound_s):
        while chunk := await reader.read(65536):
            data += chunk
    return data


# -- the rate budget belongs to the key holder -------------------------------------------------


def test_unsigned_or_wrongly_signed_requests_do_not_spend_the_sources_budget():
    async def scenario():
        async with serving(burst=1, rate_per_s=0.01) as h:
            for _ in range(5):
                body = encode(envelope())
                assert (await h.client.post(f"/ingest/{SOURCE}", content=body)).status_code == 401
                assert (await h.post(body, signature=sign(b"not-the-key", int(time.time()), body))).status_code == 403
                assert (await h.post(body, ts=int(time.time()) - 3600)).status_code == 401
            accepted = await h.post(encode(envelope()))
            assert accepted.status_code == 202, accepted.text  # the one token was still there
            limited = await h.post(encode(envelope()))
            assert limited.status_code == 429 and limited.json()["reason"] == "rate_limited"
            assert len(h.polled) == 1

    asyncio.run(scenario())


def test_a_request_refused_by_the_rate_limit_may_be_resent_as_it_was():
    async def scenario():
        async with serving(burst=1, rate_per_s=2) as h:
            assert (await h.post(encode(envelope()))).status_code == 202
            body, ts = encode(envelope()), int(time.time())
            assert (await h.post(body, ts=ts)).status_code == 429
            await asyncio.sleep(0.6)
            assert (await h.post(body, ts=ts)).status_code == 202  # not "replayed": it was never taken

    asyncio.run(scenario())


# -- headers before the body; deadlines --------------------------------------------------------


def test_bad_headers_are_answered_before_the_body_is_sent():
    """A client announcing a body it never sends hears 401/403/415 at once: the hub did not wait to read it."""
    async def scenario():
        async with serving(runtime=False, read_timeout_s=20) as h:
            port = h.connector.bound_port
            for request, status in ((head(port, ts=int(time.time()) - 3600, length=500), 401),
                                    (head(port, signature="sha256=zz", length=500), 403),
                                    (head(port, length=500, extra="Content-Encoding: gzip\r\n"), 415)):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                await writer.drain()
                async with asyncio.timeout(3):
                    status_line = await reader.readline()
                assert status_line.split()[1] == str(status).encode(), (request, status_line)
                writer.close()
            await nothing_queued(h)

    asyncio.run(scenario())


def test_a_body_sent_one_byte_a_second_is_cut_off_with_408():
    async def scenario():
        async with serving(runtime=False, read_timeout_s=1.5) as h:
            port = h.connector.bound_port
            body = encode(envelope())
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head(port, body=body))
            started = time.monotonic()

            async def trickle():
                for byte in body:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)

            sender = asyncio.create_task(trickle())
            try:
                answer = await read_until_closed(reader, bound_s=8)
            finally:
                sender.cancel()
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"reason": "read_timeout"' in answer
            assert time.monotonic() - started < 5  # cut off and closed, not lingering on the slow body
            await nothing_queued(h)

    asyncio.run(scenario())


def test_headers_sent_one_byte_a_second_are_cut_off():
    async def scenario():
        async with serving(runtime=False, read_timeout_s=1.5) as h:
            port = h.connector.bound_port
            request = head(port, body=encode(envelope()))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()

            async def trickle():
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)

            sender = asyncio.create_task(trickle())
            try:
                await read_until_closed(reader, bound_s=8)
            finally:
                sender.cancel()
            assert time.monotonic() - started < 5
            await nothing_queued(h)

    asyncio.run(scenario())


def test_a_silent_connection_is_closed():
    async def scenario():
        async with serving(runtime=False, read_timeout_s=1) as h:
            reader, _ = await asyncio.open_connection("127.0.0.1", h.connector.bound_port)
            assert await read_until_closed(reader, bound_s=6) == b""

    asyncio.run(scenario())


# -- malformed signed bodies: 400 with the reason ----------------------------------------------


def test_signed_text_that_cannot_be_utf8_is_400_not_accepted():
    """A lone surrogate (valid JSON, not Unicode) was accepted with 202 and then failed every publish."""
    async def scenario():
        async with serving(runtime=False) as h:
            for doc, rule, where in (({**envelope(), "key": "\ud800"}, "envelope.invalid_unicode", "key"),
                                     ({**envelope(), "data": {"name": "An\udc00"}}, "schema.invalid_unicode",
                                      "data.name")):
                response = await h.post(json.dumps(doc).encode())  # ASCII escapes: valid JSON
                assert response.status_code == 400, response.text
                body = response.json()
                assert body["reason"] == "invalid"
                assert [(p["index"], p["field"], p["rule"]) for p in body["problems"]] == [(0, where, rule)]
            for body, rule in ((b"\xff\xfe{}", "envelope.encoding"), (b"{", "envelope.not_json"),
                               (b'"text"', "ingest.not_envelope"), (b"[1]", "envelope.not_object")):
                response = await h.post(body)
                assert response.status_code == 400 and response.json()["reason"] == "invalid"
                assert response.json()["problems"][0]["rule"] == rule
            await nothing_queued(h)

    asyncio.run(scenario())


def test_a_control_character_in_data_is_left_to_the_validator():
    async def scenario():
        async with serving() as h:
            response = await h.post(encode({**envelope(), "data": {"note": "a\u0001b"}}))
            assert response.status_code == 202, response.text  # dead-lettered by the worker, as any data problem

    asyncio.run(scenario())


def test_a_compressed_or_badly_framed_signed_body_is_refused_with_a_reason_not_500():
    async def scenario():
        async with serving(runtime=False, read_timeout_s=1) as h:
            for raw in (b"not gzip at all", gzip.compress(encode(envelope()))):  # 500 and 403 before
                response = await h.post(raw, headers={"Content-Encoding": "gzip"})
                assert response.status_code == 415 and response.json()["reason"] == "unsupported_encoding"
            port = h.connector.bound_port
            ts = int(time.time())
            started = (f"POST /ingest/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                       f"X-EduHub-Timestamp: {ts}\r\nX-EduHub-Signature: {sign(SECRET, ts, b'{}')}\r\n\r\n"
                       "2\r\n{}\r\n").encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(started)
            await writer.drain()
            await asyncio.sleep(0.3)  # the handler is reading the body when the framing breaks
            writer.write(b"zz\r\n")
            answer = await read_until_closed(reader, bound_s=5)
            # aiohttp stops feeding a body whose framing broke: the deadline answers it and closes the connection.
            assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 408")), answer[:300]
            assert b'"reason": "bad_body"' in answer or b'"reason": "read_timeout"' in answer
            await nothing_queued(h)

    asyncio.run(scenario())


# -- headers and TLS ---------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers():
    async def scenario():
        async with serving() as h:
            answers = [await h.post(encode(envelope())), await h.client.post(f"/ingest/{SOURCE}", content=b"{}"),
                       await h.client.get("/healthz"), await h.client.get("/nope"), await h.post(b"{")]
            assert [a.status_code for a in answers] == [202, 401, 200, 404, 400]
            for answer in answers:
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
                assert answer.headers["X-Frame-Options"] == "DENY"
                assert answer.headers["Referrer-Policy"] == "no-referrer"
                assert answer.headers["Cache-Control"] == "no-store"
                assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]

    asyncio.run(scenario())


def test_the_ingest_listener_serves_https(tmp_path):
    certs = make_certs(tmp_path / "tls")

    async def scenario():
        async with serving(tls_cert_file=str(certs.cert), tls_key_file=str(certs.key)) as h:
            port = h.connector.bound_port
            doc = envelope()
            body, ts = encode(doc), int(time.time())
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(certs.ca))) as c:
                answer = await c.post(f"https://127.0.0.1:{port}/ingest/{SOURCE}", content=body, headers={
                    "X-EduHub-Timestamp": str(ts), "X-EduHub-Signature": sign(SECRET, ts, body)})
            assert answer.status_code == 202, answer.text
            assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
            with pytest.raises(httpx.HTTPError):
                await h.client.post(f"/ingest/{SOURCE}", content=body)  # plain HTTP to the TLS port

    asyncio.run(scenario())


def test_a_tls_key_without_certificate_stops_the_connector_naming_the_key(tmp_path):
    from hub.core.config import ConfigError

    certs = make_certs(tmp_path / "tls")

    async def scenario():
        with pytest.raises(ConfigError, match=r"tls_cert_file: not set"):
            async with serving(tls_key_file=str(certs.key)):
                pass

    asyncio.run(scenario())

"""One signed ingest request, read cautiously: signature headers first, then the body under a size cap and a deadline."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp import web

from hub.contract.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP

_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^sha256=[0-9a-fA-F]{64}$")
_READ_CHUNK = 64 * 1024
_CHALLENGE = {"WWW-Authenticate": "EduHub-HMAC"}


class Rejected(Exception):
    """A request refused before its events are queued: status, machine-readable reason and JSON body."""

    def __init__(self, status: int, reason: str, error: str, *, headers: dict[str, str] | None = None,
                 problems: list[dict[str, Any]] | None = None, close: bool = False) -> None:
        super().__init__(error)
        self.status = status
        self.reason = reason
        self.error = error
        self.headers = headers or {}
        self.problems = problems
        self.close = close  # drop the connection once answered (a client too slow to be worth waiting for)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error, "reason": self.reason}
        if self.problems is not None:
            body["problems"] = self.problems
        return web.json_response(body, status=self.status, headers=self.headers)


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; a request takes one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def signature_headers(request: web.Request, max_skew_s: int, now: float) -> tuple[int, str]:
    """The timestamp and the lower-case signature, checked for presence, format and freshness before any byte of
    the body is read: 401 (missing, malformed timestamp, stale) or 403 (a signature that cannot be one)."""
    timestamp_text = request.headers.get(HEADER_TIMESTAMP)
    signature = request.headers.get(HEADER_SIGNATURE)
    if not timestamp_text or not signature:
        missing = [h for h, v in ((HEADER_TIMESTAMP, timestamp_text), (HEADER_SIGNATURE, signature)) if not v]
        raise Rejected(401, "missing_headers", f"missing header(s): {', '.join(missing)}", headers=_CHALLENGE)
    if not _TIMESTAMP.match(timestamp_text.strip()):
        raise Rejected(401, "bad_timestamp", f"{HEADER_TIMESTAMP} must be unix time in whole seconds",
                       headers=_CHALLENGE)
    timestamp = int(timestamp_text.strip())
    if abs(now - timestamp) > max_skew_s:
        raise Rejected(401, "stale", f"{HEADER_TIMESTAMP} is more than {max_skew_s} s from the hub's clock; sign "
                                     "with the current time", headers=_CHALLENGE)
    if not _SIGNATURE.match(signature.strip()):
        raise Rejected(403, "bad_signature", f"{HEADER_SIGNATURE} must be sha256= and 64 hex digits")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Rejected(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not accepted; send the body "
                                                    "as signed, uncompressed")
    return timestamp, signature.strip().lower()


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most `limit` bytes (413) and all of it within `timeout_s` (408, the connection then closed:
    a client sending a byte a second cannot hold the hub); a body the client framed wrongly is a 400."""
    too_large = Rejected(413, "too_large", f"the body is over {limit} bytes; send fewer events per request")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.read(_READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise Rejected(408, "read_timeout", f"the body did not arrive within {timeout_s:g} s", close=True) from None
    except web.RequestPayloadError as exc:
        raise Rejected(400, "bad_body", f"the body could not be read as sent ({exc.__cause__ or exc})",
                       close=True) from None  # the framing is lost: the connection cannot carry another request
    return b"".join(chunks)


async def answer(request: web.Request, rejected: Rejected) -> web.StreamResponse:
    """The refusal; for `close`, sent and then the connection dropped without waiting for the rest of the body."""
    response = rejected.response()
    if rejected.close:
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        if request.protocol is not None:
            request.protocol.force_close()
    return response

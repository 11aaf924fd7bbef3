"""One HTTP delivery attempt: the signed POST and its bounded answer; a record's key, headers and audit references."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import httpx

from hub.contract.envelope import header_value
from hub.contract.registry import RecordError
from hub.contract.signing import signed_headers
from hub.routing.audit import REFS_HEADER

NULL_KEY = "record.null_key"
INVALID_KEY = "record.invalid_key"
# Answers that say "not now" rather than "not this event": they never use up an event's attempts,
# so a subscriber that is down or overloaded for hours loses nothing (events wait in Kafka).
UNAVAILABLE_STATUSES = frozenset({408, 425, 429, 502, 503, 504})
# What is read of any answer's body: a subscriber's 150 MiB error page must not land in memory.
MAX_RESPONSE_BYTES = 4096
FAILURE_TEXT_CHARS = 200


def key_text(key: bytes | None) -> str:
    """The record's key as text; RecordError for none or non-UTF-8 (the route stage always writes a UTF-8 key)."""
    if key is None:
        raise RecordError(NULL_KEY, "the record has no key; the route stage always writes one")
    try:
        return key.decode()
    except UnicodeDecodeError as exc:
        raise RecordError(INVALID_KEY, f"the key is not UTF-8: {exc.reason} at byte {exc.start}") from None


def header_text(message: Any, name: str) -> str | None:
    """A header's text; a null value (a hostile record may carry one) reads as absent."""
    return header_value([h for h in message.headers or () if h[1] is not None], name)


def audit_refs_of(message: Any) -> dict[str, Any]:
    """The audit references the route stage put on the record; none when the header is absent or malformed."""
    try:
        refs = json.loads(header_text(message, REFS_HEADER) or "null")
    except ValueError:
        refs = None
    if isinstance(refs, dict) and set(refs) == {"key_ref", "person_refs"} and isinstance(refs["person_refs"], list):
        return refs
    return {"key_ref": None, "person_refs": []}


def describe(exc: BaseException) -> str:
    """An exception and what caused it, for a log line."""
    cause = f" (caused by {type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
    return f"{type(exc).__name__}: {exc}{cause}"


async def read_head(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """At most the first `limit` bytes of a streamed body, as sent (never decompressed: a small
    gzip body may expand a thousandfold). Closing the response afterwards drops the rest."""
    head = b""
    async with contextlib.aclosing(response.aiter_raw(limit)) as chunks:
        async for chunk in chunks:
            head += chunk[:limit - len(head)]
            if len(head) >= limit:
                break
    return head


async def post(client: httpx.AsyncClient, url: str, secret: bytes, body: bytes) -> tuple[bool, bool, str] | None:
    """POST `body`, signed with `secret`: None when accepted, else (unavailable, server-side, description)."""
    # identity: the body is read as sent, and a compressed one would be unreadable in the failure text.
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity",
               **signed_headers(secret, int(time.time()), body)}
    try:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            if 200 <= response.status_code < 300:
                # Reading a short body to its end lets the connection be reused; the status alone answers.
                with contextlib.suppress(httpx.HTTPError):
                    await read_head(response)
                return None
            head = await read_head(response)
    except httpx.HTTPError as exc:
        return True, True, f"{type(exc).__name__}: {exc}".rstrip(": ")
    text = f"HTTP {response.status_code}: {head.decode('utf-8', 'replace')[:FAILURE_TEXT_CHARS]}"
    return response.status_code in UNAVAILABLE_STATUSES, response.status_code >= 500, text

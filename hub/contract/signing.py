"""HMAC-SHA256 signatures of HTTP bodies: the scheme shared by HTTP ingest and HTTP delivery."""

from __future__ import annotations

import hashlib
import hmac

HEADER_TIMESTAMP = "X-EduHub-Timestamp"
HEADER_SIGNATURE = "X-EduHub-Signature"
SIGNATURE_PREFIX = "sha256="


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-EduHub-Signature` header value of `body` sent at `timestamp` (unix seconds):
    `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>`.

    >>> sign(b"k", 1767225600, b"{}")
    'sha256=fed6131b41a6ecb5f059cee4c80c7df319ff6fa75d64b59110157107b6b6fbed'
    """
    digest = hmac.new(secret, f"{int(timestamp)}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def signed_headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    return {HEADER_TIMESTAMP: str(int(timestamp)), HEADER_SIGNATURE: sign(secret, timestamp, body)}

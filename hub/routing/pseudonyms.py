"""The `pseudonymise` PII policy: the per-subscriber keyed pseudonym of a value, its canonical text, derived keys.

Keys derived from the master key, one domain each:

- a subscriber: `HMAC-SHA256(master_key, subscriber id)`; ids match `^[a-z0-9][a-z0-9-]{1,39}$`;
- the hub's own purposes (the audit trail): `HMAC-SHA256(master_key, "eduhub:" + purpose)`. The
  label holds a `:`, which no subscriber id can, so no subscriber ever gets a hub key.

pseudonymise: value = first 32 hex digits of
`HMAC-SHA256(key, canonical text)`; canonical text: strings as they are, dates ISO,
timestamps RFC 3339 UTC, decimals `str()`, records / arrays / maps compact JSON with sorted
keys. Stable for one subscriber (the same learner gets the same pseudonym in
`school.student`, `school.score` and `exam.result`, so the analytics warehouse can join),
different across subscribers. The projected type is `string` (`["null", "string"]` if the
field was nullable; null stays null). `master_key` must hold at least 16 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from hub.contract.schemas import to_json
from hub.routing.errors import SubscriptionError

SUBSCRIBER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
HUB_LABEL = "eduhub:"  # the prefix of every hub-internal key's label: ':' is never in a subscriber id


def _check_master(master_key: bytes) -> bytes:
    if not isinstance(master_key, (bytes, bytearray)) or len(master_key) < 16:
        raise SubscriptionError("the master key must hold at least 16 bytes", "master_key")
    return bytes(master_key)


def subscriber_key(master_key: bytes, subscriber_id: str) -> bytes:
    """The subscriber's pseudonym key, derived from the hub's master key and the subscriber id."""
    master = _check_master(master_key)
    if not SUBSCRIBER_ID.match(subscriber_id):
        raise SubscriptionError(f"{subscriber_id!r} is not a subscriber id (^[a-z0-9][a-z0-9-]{{1,39}}$)", "id")
    return hmac.new(master, subscriber_id.encode("utf-8"), hashlib.sha256).digest()


def hub_key(master_key: bytes, purpose: str) -> bytes:
    """A key for one of the hub's own purposes (e.g. "audit"), never equal to any subscriber's key."""
    return hmac.new(_check_master(master_key), (HUB_LABEL + purpose).encode("utf-8"), hashlib.sha256).digest()


def pseudonym(key: bytes, value: Any) -> str | None:
    """The pseudonym of a value under a subscriber key (None stays None)."""
    if value is None:
        return None
    text = canonical_text(value).encode("utf-8")
    return hmac.digest(key, text, "sha256").hex()[:32]  # one-shot C call: on the hot path


def canonical_text(value: Any) -> str:
    """The text a value is pseudonymised from: equal values of one type always give the same text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (datetime, date, Decimal)):
        return str(to_json(value)) if not isinstance(value, Decimal) else str(value)
    return json.dumps(to_json(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"))

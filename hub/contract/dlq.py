"""Dead letters: the headers that say why an event landed in a DLQ, and reading them back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from hub.contract.envelope import Problem

# Modelled on Kafka Connect's `__connect.errors.*` headers: the original bytes stay untouched in
# the value; everything the hub knows about the failure travels in headers.
PREFIX = "eduhub.errors."
STAGE = PREFIX + "stage"
RULE = PREFIX + "rule"
FIELD = PREFIX + "field"
MESSAGE = PREFIX + "message"
REASONS = PREFIX + "reasons"
TOPIC = PREFIX + "topic"
PARTITION = PREFIX + "partition"
OFFSET = PREFIX + "offset"
EVENT_ID = PREFIX + "event_id"
TRUNCATED = PREFIX + "truncated"  # the original value's size, when the dead letter holds only its start
# A reason quotes the value it refuses; a hostile value may be 600 kB, and a dead letter must still fit
# in one Kafka record. Longer messages are cut, and at most MAX_REASONS problems are listed.
MAX_MESSAGE = 500
MAX_REASONS = 20
# Broker and producer refuse records over about 1 MiB by default; an output record larger than this
# would make its whole batch's transaction fail, again and again.
MAX_RECORD_BYTES = 1_000_000


def _text(value: str) -> bytes:
    """UTF-8 that never fails: a lone surrogate in what a hostile record sent becomes a \\udXXX escape."""
    return value.encode("utf-8", "backslashreplace")


def _short(value: str, limit: int) -> str:
    return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"


def dead_letter_headers(
    problems: Sequence[Problem],
    *,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    event_id: str | None = None,
    original: Iterable[tuple[str, bytes]] = (),
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: the first problem in single headers, all of them as JSON in `reasons`.

    The record's original headers are kept after ours, so nothing the connector sent is lost.
    """
    first = problems[0]
    reasons = [{"field": _short(p.field, 200), "rule": p.rule, "message": _short(p.message, MAX_MESSAGE)}
               for p in problems[:MAX_REASONS]]
    headers = [
        (STAGE, stage.encode()),
        (RULE, _text(first.rule)),
        (FIELD, _text(reasons[0]["field"])),
        (MESSAGE, _text(reasons[0]["message"])),
        (REASONS, _text(json.dumps(reasons, ensure_ascii=False))),
        (TOPIC, _text(topic)),
        (PARTITION, str(partition).encode()),
        (OFFSET, str(offset).encode()),
    ]
    if event_id is not None:
        headers.append((EVENT_ID, _text(_short(event_id, 200))))
    headers.extend((k, v) for k, v in original if not k.startswith(PREFIX))
    return headers


def fit(value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> bytes | None:
    """The original value, cut if need be so that the dead letter fits in one Kafka record.

    Inputs are at most the broker's limit, but the dead letter adds headers: when the sum would be over
    MAX_RECORD_BYTES the value is cut and header `eduhub.errors.truncated` says its full size (the whole
    original stays readable on the input topic at the offset the headers name)."""
    if value is None:
        return None
    room = MAX_RECORD_BYTES - len(key or b"") - sum(len(k) + len(v or b"") for k, v in headers)
    if len(value) <= room:
        return value
    headers.append((TRUNCATED, str(len(value)).encode()))
    return value[:max(0, room - 64)]


def reasons_of(headers: Iterable[tuple[str, bytes]]) -> list[dict[str, str]]:
    """The problems a dead letter's headers carry (for tools that read the DLQ)."""
    for key, value in headers:
        if key == REASONS:
            return json.loads(value)
    return []

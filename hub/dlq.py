"""Dead letters: the headers that say why an event landed in a DLQ, and reading them back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from hub.envelope import Problem

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
    headers = [
        (STAGE, stage.encode()),
        (RULE, first.rule.encode()),
        (FIELD, first.field.encode()),
        (MESSAGE, first.message.encode()),
        (REASONS, json.dumps([p.as_dict() for p in problems], ensure_ascii=False).encode()),
        (TOPIC, topic.encode()),
        (PARTITION, str(partition).encode()),
        (OFFSET, str(offset).encode()),
    ]
    if event_id is not None:
        headers.append((EVENT_ID, event_id.encode()))
    headers.extend((k, v) for k, v in original if not k.startswith(PREFIX))
    return headers


def reasons_of(headers: Iterable[tuple[str, bytes]]) -> list[dict[str, str]]:
    """The problems a dead letter's headers carry (for tools that read the DLQ)."""
    for key, value in headers:
        if key == REASONS:
            return json.loads(value)
    return []

"""DLQ tools: find dead letters by source, rule and time, show one, and replay them idempotently."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from hub.contract import dlq
from hub.contract.envelope import header_value
from hub.kafka.io import read_to_end
from hub.contract.topics import DLQ_PREFIX, REPLAYS_TOPIC, SUBSCRIBER_DLQ_PREFIX, ingest_topic
from hub.kafka.admin import ensure_topics
from hub.kafka.clients import KafkaClients
from hub.stages.validate import Valid, Validator

REPLAY_OF = "eduhub.replay.of"


@dataclass
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """How commands name it: `topic:partition:offset`."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    @property
    def source(self) -> str:
        """The source id for a validate DLQ; `sub.<id>` for a subscriber's DLQ."""
        return self.topic.removeprefix(DLQ_PREFIX)

    @property
    def subscriber(self) -> str | None:
        return self.topic.removeprefix(SUBSCRIBER_DLQ_PREFIX) if self.topic.startswith(SUBSCRIBER_DLQ_PREFIX) else None

    @property
    def rule(self) -> str:
        return self.header(dlq.RULE) or ""

    @property
    def event_id(self) -> str | None:
        return self.header(dlq.EVENT_ID)

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, timezone.utc)

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the record had before it was dead-lettered (without ours)."""
        return [(k, v) for k, v in self.headers if not k.startswith(dlq.PREFIX) and k != REPLAY_OF]

    def summary(self) -> dict[str, Any]:
        return {"ref": self.ref, "at": self.at.isoformat(), "source": self.source, "stage": self.header(dlq.STAGE),
                "rule": self.rule, "field": self.header(dlq.FIELD), "message": self.header(dlq.MESSAGE),
                "event_id": self.event_id, "key": self.key.decode("utf-8", "replace") if self.key else None,
                "original": f"{self.header(dlq.TOPIC)}:{self.header(dlq.PARTITION)}:{self.header(dlq.OFFSET)}"}

    def details(self) -> dict[str, Any]:
        """Everything about it, the original value included (JSON if it parses, else text)."""
        value: Any = None
        if self.value is not None:
            try:
                value = json.loads(self.value)
            except ValueError:
                value = self.value.decode("utf-8", "replace")
        return {**self.summary(), "reasons": dlq.reasons_of(self.headers),
                "headers": {k: v.decode("utf-8", "replace") for k, v in self.original_headers()}, "value": value}


@dataclass
class Filters:
    sources: list[str] = field(default_factory=list)
    rule: str | None = None  # exact id, or a prefix ending in "." (e.g. "exam.")
    since: datetime | None = None
    until: datetime | None = None

    def match(self, letter: DeadLetter) -> bool:
        if self.sources and letter.source not in self.sources:
            return False
        if self.rule and not (letter.rule == self.rule or (self.rule.endswith(".") and letter.rule.startswith(self.rule))):
            return False
        if self.since and letter.at < self.since:
            return False
        return not (self.until and letter.at >= self.until)


async def dlq_topics(kafka: KafkaClients) -> list[str]:
    admin = kafka.admin()
    await kafka.start(admin)
    try:
        topics = await admin.list_topics()
    finally:
        await admin.close()
    return sorted(t for t in topics if t.startswith(DLQ_PREFIX) and t != REPLAYS_TOPIC)


async def dead_letters(kafka: KafkaClients, filters: Filters) -> list[DeadLetter]:
    """The dead letters matching `filters`, oldest first."""
    found = []
    for topic in await dlq_topics(kafka):
        if filters.sources and topic.removeprefix(DLQ_PREFIX) not in filters.sources:
            continue
        for r in await read_to_end(kafka, topic):
            letter = DeadLetter(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers or ()))
            if filters.match(letter):
                found.append(letter)
    return sorted(found, key=lambda d: (d.timestamp_ms, d.topic, d.partition, d.offset))


async def find(kafka: KafkaClients, ref: str) -> DeadLetter | None:
    """A dead letter by `topic:partition:offset` or by event_id."""
    parts = ref.rsplit(":", 2)
    if len(parts) == 3 and parts[0].startswith(DLQ_PREFIX) and parts[1].isdigit() and parts[2].isdigit():
        topic, partition, offset = parts[0], int(parts[1]), int(parts[2])
        for letter in await dead_letters(kafka, Filters(sources=[topic.removeprefix(DLQ_PREFIX)])):
            if letter.partition == partition and letter.offset == offset:
                return letter
        return None
    matches = [d for d in await dead_letters(kafka, Filters()) if d.event_id == ref]
    return matches[-1] if matches else None


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    still_invalid: list[tuple[str, str]] = field(default_factory=list)  # (ref, rule: message)

    def as_dict(self) -> dict[str, Any]:
        return {"replayed": len(self.replayed), "already_replayed": len(self.already),
                "still_invalid": [{"ref": r, "reason": why} for r, why in self.still_invalid]}


async def replay(kafka: KafkaClients, letters: Iterable[DeadLetter], validator: Validator, *,
                 dry_run: bool = False, force: bool = False, replication_factor: int = 1,
                 progress: Callable[[int], None] = lambda n: None) -> ReplayReport:
    """Send dead letters back where they failed, once each.

    A validate-stage letter is re-validated with today's rules and schemas first: one that still fails
    stays where it is (reported, not re-sent, so the DLQ does not grow); one that passes goes back to
    `ingest.<source>`, where the worker validates and routes it again. A delivery letter goes back to the
    subscriber's queue topic. Each replayed letter is recorded in `hub.dlq.replays`, and later replays
    skip it (`force` replays again); the worker's event_id dedup drops a repeat even then.
    """
    letters = list(letters)
    report = ReplayReport()
    done = set()
    if not force:
        try:
            done = {r.key.decode() for r in await read_to_end(kafka, REPLAYS_TOPIC) if r.value}
        except LookupError:
            pass
    if not dry_run:
        await ensure_topics(kafka, [(REPLAYS_TOPIC, 1)], replication_factor,
                            configs={"cleanup.policy": "compact"})
    producer = kafka.producer(enable_idempotence=True)
    await kafka.start(producer)
    try:
        for letter in letters:
            target = _target(letter, validator, report)
            if target is not None and letter.ref in done:
                report.already.append(letter.ref)
            elif target is not None:
                if not dry_run:
                    headers = [*letter.original_headers(), (REPLAY_OF, letter.ref.encode())]
                    await producer.send_and_wait(target, letter.value, key=letter.key, headers=headers)
                    await producer.send_and_wait(REPLAYS_TOPIC, json.dumps(
                        {"to": target, "event_id": letter.event_id,
                         "at": datetime.now(timezone.utc).isoformat()}).encode(), key=letter.ref.encode())
                report.replayed.append(letter.ref)
            progress(1)
    finally:
        await producer.stop()
    return report


def _target(letter: DeadLetter, validator: Validator, report: ReplayReport) -> str | None:
    """Where a letter goes back to, or None (recorded in the report) when it would fail again."""
    if letter.subscriber is not None:
        return letter.header(dlq.TOPIC)  # the subscriber's queue: delivery is tried afresh
    result = validator.validate(letter.value, topic_source=letter.source)
    if not isinstance(result, Valid):
        first = result.problems[0]
        report.still_invalid.append((letter.ref, f"{first.rule}: {first.message}"))
        return None
    return ingest_topic(letter.source)

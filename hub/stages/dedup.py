"""The dedup window: event ids accepted per ingest partition, kept in a Kafka changelog so restarts and rebalances keep it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from aiokafka import TopicPartition

from hub.kafka.writer import BatchWriter
from hub.kafka.clients import KafkaClients

log = logging.getLogger(__name__)
DEFAULT_WINDOW_S = 7 * 24 * 3600
# Event ids per changelog record: far below Kafka's 1 MiB default record limit even for 128-char ids.
CHUNK = 4000


def changelog_configs(window_s: float) -> dict[str, str]:
    # Time retention is the expiry: a record older than the window (plus a day of slack) is of no use.
    return {"cleanup.policy": "delete", "retention.ms": str(int((window_s + 86_400) * 1000))}


class DedupWindow:
    """Which event ids this stage accepted in the last `window_s` seconds, per ingest partition.

    Ingest partition p of every source maps to changelog partition p (same partition counts), with the
    ingest topic as the record key and the batch's new event ids, newline-separated, as the value; the
    record's timestamp is when they were accepted. This is a Faust table changelog in spirit, cheaper on
    the hot path: one record per partition per batch instead of one per event. Entries are written in
    the batch's transaction and enter the in-memory window only once it committed, so an aborted batch
    never hides its own events when it is re-read.
    """

    def __init__(self, topic: str, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.topic = topic
        self.window_s = window_s
        self._seen: dict[TopicPartition, dict[str, float]] = {}
        self._pending: dict[TopicPartition, dict[str, float]] = {}
        self._last_prune = time.time()

    def seen(self, tp: TopicPartition, event_id: str) -> bool:
        """True when `event_id` was accepted on `tp` within the window (or earlier in this batch)."""
        return self.checker(tp, time.time())(event_id)

    def add(self, tp: TopicPartition, event_id: str, now: float) -> None:
        self._pending.setdefault(tp, {})[event_id] = now

    def checker(self, tp: TopicPartition, now: float) -> Callable[[str], bool]:
        """A per-partition `seen` for the hot loop: True for a repeat, else records the id as pending."""
        seen = self._seen.get(tp) or {}
        pending = self._pending.setdefault(tp, {})
        cutoff = now - self.window_s

        def check(event_id: str) -> bool:
            if event_id in pending:
                return True
            at = seen.get(event_id)
            if at is not None and at >= cutoff:
                return True
            pending[event_id] = now
            return False

        return check

    def write(self, writer: BatchWriter, now_ms: int) -> None:
        """Append this batch's new ids to the changelog (inside the batch's transaction)."""
        for tp, ids in self._pending.items():
            if not ids:
                continue
            names = list(ids)
            for start in range(0, len(names), CHUNK):
                writer.append_to(self.topic, tp.partition, tp.topic.encode(),
                                 "\n".join(names[start:start + CHUNK]).encode(), now_ms)

    def committed(self) -> None:
        for tp, ids in self._pending.items():
            self._seen.setdefault(tp, {}).update(ids)
        self._pending.clear()
        if time.time() - self._last_prune > 60:
            self.prune()

    def aborted(self) -> None:
        self._pending.clear()

    def prune(self) -> int:
        """Forget ids older than the window; returns how many."""
        cutoff = time.time() - self.window_s
        dropped = 0
        for ids in self._seen.values():
            old = [i for i, at in ids.items() if at < cutoff]
            for i in old:
                del ids[i]
            dropped += len(old)
        self._last_prune = time.time()
        return dropped

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._seen.pop(tp, None)
            self._pending.pop(tp, None)

    def size(self) -> int:
        return sum(len(ids) for ids in self._seen.values())

    async def restore(self, kafka: KafkaClients, partitions: Iterable[TopicPartition]) -> int:
        """Load the window of the given ingest partitions from the changelog; returns the ids loaded."""
        wanted: dict[int, set[str]] = {}
        for tp in partitions:
            wanted.setdefault(tp.partition, set()).add(tp.topic)
            self._seen[tp] = {}
        if not wanted:
            return 0
        changelog = [TopicPartition(self.topic, p) for p in sorted(wanted)]
        consumer = kafka.consumer(group_id=None, enable_auto_commit=False, isolation_level="read_committed")
        await kafka.start(consumer)
        loaded = 0
        try:
            consumer.assign(changelog)
            since_ms = int((time.time() - self.window_s) * 1000)
            starts = await consumer.offsets_for_times({tp: since_ms for tp in changelog})
            ends = await consumer.end_offsets(changelog)  # last stable offsets under read_committed
            remaining = set()
            for tp in changelog:
                start = starts[tp]
                if start is None or start.offset >= ends[tp]:
                    continue  # nothing inside the window
                consumer.seek(tp, start.offset)
                remaining.add(tp)
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, messages in batch.items():
                    for message in messages:
                        topic = message.key.decode()
                        if topic not in wanted[tp.partition] or message.value is None:
                            continue
                        at = message.timestamp / 1000
                        ids = self._seen[TopicPartition(topic, tp.partition)]
                        for event_id in message.value.decode().split("\n"):
                            ids[event_id] = at
                            loaded += 1
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        log.info("dedup window restored: %d event ids for %d partitions", loaded, len(list(self._seen)))
        return loaded

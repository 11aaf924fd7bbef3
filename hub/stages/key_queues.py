"""HTTP delivery's per-key queues: each key's records drained in order, and the offsets that may be committed."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition

Key = tuple[TopicPartition, bytes | None]


class OffsetTracker:
    """A partition's fetched offsets, in order, and which are finished: the commit may advance only up
    to the oldest unfinished one, however many later ones (other keys) are done."""

    def __init__(self) -> None:
        self._offsets: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None

    def add(self, offset: int) -> None:
        self._offsets.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)

    def committable(self) -> int | None:
        """The offset to commit (the next to read after the finished prefix), or None if nothing new."""
        while self._offsets and self._offsets[0] in self._done:
            offset = self._offsets.popleft()
            self._done.discard(offset)
            self._next = offset + 1
        return self._next


class KeyQueues:
    """The records fetched and not yet finished, queued per (partition, key): each key's records go to
    `handle` one after the other (a key waits while its earlier event retries) in a drain task of its
    own, while every other key goes on. `drained` is called with each drain task when it ends;
    `buffered` counts the records queued (fetching pauses while too many wait)."""

    def __init__(self, handle: Callable[[Any], Awaitable[None]], drained: Callable[[asyncio.Task], None]) -> None:
        self._handle = handle
        self._drained = drained
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._queues: dict[Key, deque[Any]] = {}
        self._drains: dict[Key, asyncio.Task] = {}
        self.buffered = 0

    @property
    def partitions(self) -> list[TopicPartition]:
        """The partitions whose offsets are tracked (fetched from since they were assigned)."""
        return list(self._trackers)

    def add(self, tp: TopicPartition, messages: list[Any]) -> None:
        """Queue fetched records behind their key's earlier ones; a key with no drain running gets one."""
        tracker = self._trackers.setdefault(tp, OffsetTracker())
        for message in messages:
            tracker.add(message.offset)
            self.buffered += 1
            key = (tp, message.key)
            self._queues.setdefault(key, deque()).append(message)
            if key not in self._drains:
                self._drains[key] = task = asyncio.create_task(self._drain(key))
                task.add_done_callback(self._drained)

    async def _drain(self, key: Key) -> None:
        """Deliver one key's records in order; other keys' drains run meanwhile."""
        queue = self._queues[key]
        tracker = self._trackers[key[0]]
        try:
            while queue:
                message = queue[0]
                await self._handle(message)
                queue.popleft()
                tracker.done(message.offset)
                self.buffered -= 1
            del self._queues[key]  # no await since the queue emptied: a record fetched later starts a new drain
        finally:
            if self._drains.get(key) is asyncio.current_task():
                del self._drains[key]

    def committable(self, tp: TopicPartition) -> int | None:
        """The offset `tp` may be committed up to (see OffsetTracker), None when nothing is tracked."""
        tracker = self._trackers.get(tp)
        return tracker.committable() if tracker is not None else None

    async def cancel(self, partitions: set[TopicPartition]) -> None:
        """Stop the drains of `partitions` and wait for them to end (a record in flight stays unfinished)."""
        tasks = [t for (tp, _), t in self._drains.items() if tp in partitions]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the queued records and the offsets of `partitions`."""
        for key in [k for k in self._queues if k[0] in partitions]:
            self.buffered -= len(self._queues.pop(key))
        for tp in partitions:
            self._trackers.pop(tp, None)

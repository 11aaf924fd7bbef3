"""Keyed batch producing: records go into per-partition batches, partitioned as Java clients do."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from murmurhash2 import murmurhash2

# The Java client's default partitioner: murmur2 with this seed, sign bit cleared, modulo count.
MURMUR2_SEED = 0x9747B28C


def partition_for(key: bytes, partitions: list[int]) -> int:
    """The partition Java clients (and aiokafka) choose for a key."""
    return partitions[(murmurhash2(key, MURMUR2_SEED) & 0x7FFFFFFF) % len(partitions)]

Headers = Sequence[tuple[str, bytes]]


class RecordTooLarge(Exception):
    """A single record does not fit in an empty batch (raise max_batch_size or shrink the record)."""


class BatchWriter:
    """Appends records to per-partition batches of one producer; full batches are sent on `drain`.

    Cheaper per record than ``await producer.send(...)`` (no coroutine, future or metadata
    wait per record), which matters on the hot path. Keys map to partitions with murmur2
    exactly as the Java client's default partitioner does, so every client agrees where a key
    lives.

    Example::

        writer = BatchWriter(producer)
        await writer.prepare(["edu.exam.registration"])   # learn partition counts
        async with producer.transaction():
            writer.append("edu.exam.registration", b"key", b"value", timestamp_ms, headers)
            await writer.flush()     # send everything and wait for acks, before the commit
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], object] = {}
        self._full: list[tuple[tuple[str, int], object]] = []
        self._sent: list[asyncio.Future] = []
        self._round_robin = itertools.count()
        # (topic, partition) → the future and record count of the last batch sent there since the last flush
        self._last: dict[tuple[str, int], tuple[asyncio.Future, int]] = {}
        # After a flush: (topic, partition) → the offset after the last record it wrote there (from the acks),
        # e.g. how far a changelog holds what this transaction wrote.
        self.acked: dict[tuple[str, int], int] = {}

    async def prepare(self, topics: Iterable[str], refresh: bool = False) -> None:
        """Learn the partitions of the topics `append` will write to (from cached metadata)."""
        for topic in topics:
            if refresh or topic not in self._partitions:
                self._partitions[topic] = sorted(await self.producer.partitions_for(topic))

    def append(self, topic: str, key: bytes | None, value: bytes | None, timestamp_ms: int | None,
               headers: Headers) -> None:
        partitions = self._partitions[topic]  # KeyError: call prepare() for the topic first
        if key is None:
            partition = partitions[next(self._round_robin) % len(partitions)]
        else:
            partition = partition_for(key, partitions)
        self.append_to(topic, partition, key, value, timestamp_ms, headers)

    def append_to(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                  timestamp_ms: int | None, headers: Headers | None = None) -> None:
        """Append to an explicit partition (co-partitioned state such as a changelog)."""
        if headers is None:
            headers = []  # aiokafka's C record builder takes a list, never a tuple
        tp = (topic, partition)
        batch = self._open.get(tp)
        if batch is None:
            batch = self._open[tp] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is None:
            self._full.append((tp, batch))
            batch = self._open[tp] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is None:
                raise RecordTooLarge(f"a record for {topic} does not fit in one batch")

    async def drain(self) -> None:
        """Hand the full batches to the producer (keeps memory bounded during a long batch)."""
        full, self._full = self._full, []
        for tp, batch in full:
            await self._send(tp, batch)

    async def _send(self, tp: tuple[str, int], batch: Any) -> None:
        count = batch.record_count()
        future = await self.producer.send_batch(batch, tp[0], partition=tp[1])
        self._sent.append(future)
        self._last[tp] = (future, count)

    async def flush(self) -> None:
        """Send every batch, open or full, and wait until Kafka acknowledged all of them; `acked` then
        holds where each partition written to ends."""
        self.acked = {}
        await self.drain()
        for tp, batch in self._open.items():
            if batch.record_count():
                await self._send(tp, batch)
        self._open.clear()
        sent, self._sent = self._sent, []
        last, self._last = self._last, {}
        if sent:
            await asyncio.gather(*sent)
        # A batch's future holds its base offset; records of one producer land in a partition in order.
        self.acked = {tp: future.result().offset + count for tp, (future, count) in last.items()}

    def discard(self) -> None:
        """Drop unsent batches (after an aborted transaction)."""
        self._open.clear()
        self._full.clear()
        self._sent.clear()
        self._last.clear()
        self.acked = {}

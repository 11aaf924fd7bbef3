"""The transactional batch loop every stage runs: read a batch, write its outputs, commit outputs
and input offsets in one Kafka transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from hub.metrics import HubMetrics
from hub.produce import BatchWriter

log = logging.getLogger(__name__)


class TransactionalStage:
    """Consumes `topics` in a group and hands each batch to `process` inside a transaction.

    Each batch's output records and its input offsets commit atomically, so after any crash every
    input record has its outputs exactly once for read_committed readers. Outputs go through a
    `BatchWriter` (sends are not awaited one by one: the commit waits for all of them). A failed
    transaction is aborted and its batch re-read from the committed offsets.
    Subclasses set `stage` and implement `process(batches)`; `output_topics` lists where they write.
    """

    stage = "stage"

    def __init__(self, *, topics: list[str], bootstrap_servers: str, group_id: str, transactional_id: str,
                 metrics: HubMetrics, output_topics: list[str], batch_max_records: int = 20_000,
                 batch_max_wait_ms: int = 50) -> None:
        self.topics = topics
        self.metrics = metrics
        self.group_id = group_id
        self.output_topics = output_topics
        self.batch_max_records = batch_max_records
        self.batch_max_wait_ms = batch_max_wait_ms
        self.bootstrap_servers = bootstrap_servers
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id,
                                         enable_auto_commit=False, auto_offset_reset="earliest",
                                         isolation_level="read_committed",
                                         max_partition_fetch_bytes=4 * 1024 * 1024)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, transactional_id=transactional_id,
                                         enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024)
        self.writer = BatchWriter(self.producer)
        self.processed = 0
        self.first_batch_at: float | None = None  # perf_counter() of the first batch read
        self._stopping = asyncio.Event()
        # Set while the assigned partitions' state is restored; aiokafka may fetch for new partitions
        # while the rebalance listener still runs, so batches wait on this before being processed.
        self._restored = asyncio.Event()
        self._next_offsets: dict[TopicPartition, int] = {}
        self._lag_at = 0.0

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))

    async def stop(self) -> None:
        self._stopping.set()
        await self.consumer.stop()
        await self.producer.stop()

    @property
    def assigned(self) -> int:
        """Partitions assigned and ready to process (their state restored)."""
        return len(self.consumer.assignment()) if self._restored.is_set() else 0

    async def run(self) -> None:
        """Process batches until stopped."""
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=self.batch_max_wait_ms or 1,
                                                  max_records=self.batch_max_records)
            self.metrics.assigned_partitions.labels(self.stage).set(self.assigned)
            if not batches:
                self.update_lag()
                continue
            await self._restored.wait()
            assignment = self.consumer.assignment()
            batches = {tp: messages for tp, messages in batches.items() if tp in assignment}
            if not batches:
                continue
            started = time.perf_counter()
            if self.first_batch_at is None:
                self.first_batch_at = started
            try:
                await self.writer.prepare(self.output_topics, refresh=True)
                async with self.producer.transaction():
                    await self.process(batches)
                    await self.writer.flush()
                    await self.producer.send_offsets_to_transaction(
                        {tp: messages[-1].offset + 1 for tp, messages in batches.items()}, self.group_id)
            except KafkaError:
                # The transaction aborted: nothing of this batch is visible. Rewind to the last
                # committed offsets so the batch is read and processed again.
                log.exception("%s batch failed; re-reading from the committed offsets", self.stage)
                self.writer.discard()
                self.aborted(batches)
                await self._rewind(list(batches))
                await asyncio.sleep(1)
                continue
            self.committed(batches)
            for tp, messages in batches.items():
                self._next_offsets[tp] = messages[-1].offset + 1
            self.update_lag()
            self.processed += sum(len(m) for m in batches.values())
            self.metrics.batch_seconds.labels(self.stage).observe(time.perf_counter() - started)

    def update_lag(self, every_s: float = 2.0) -> None:
        """Export each assigned partition's lag (at most every `every_s`; it reads only client state)."""
        now = time.monotonic()
        if now - self._lag_at < every_s:
            return
        self._lag_at = now
        export_lag(self.metrics, self.consumer, self.group_id, self._next_offsets)

    async def process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Append the batch's outputs to `self.writer` (called inside the transaction)."""
        raise NotImplementedError

    def committed(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """The batch's transaction committed (count it in metrics here, not before)."""

    def aborted(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """The batch's transaction aborted: forget what `process` staged for it."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Partitions were assigned; called before any of their records is read (restore state here)."""

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions were taken away (drop their state here)."""

    async def _rewind(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)


def export_lag(metrics: HubMetrics, consumer: AIOKafkaConsumer, group_id: str,
               next_offsets: dict[TopicPartition, int]) -> None:
    """Lag of every assigned partition whose end the consumer has seen in a fetch."""
    for tp in consumer.assignment():
        end = consumer.last_stable_offset(tp)
        if end is None:
            end = consumer.highwater(tp)
        position = next_offsets.get(tp)
        if end is None or position is None:
            continue
        metrics.consumer_lag.labels(group_id, tp.topic, str(tp.partition)).set(max(0, end - position))


class _Listener(ConsumerRebalanceListener):
    """Forwards the group's rebalances to the stage (aiokafka awaits these before fetching)."""

    def __init__(self, stage: TransactionalStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.stage._restored.clear()
        self.stage.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.stage.on_assigned(set(assigned))
        self.stage._restored.set()

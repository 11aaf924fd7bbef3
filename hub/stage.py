"""The transactional batch loop every stage runs: read a batch, write its outputs, commit outputs
and input offsets in one Kafka transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.producer.transaction_manager import TransactionState

from hub.metrics import HubMetrics
from hub.produce import BatchWriter
from hub.registry import RegistryError

log = logging.getLogger(__name__)
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
# A restore that has not finished by then is tried again from the start (and counted as failed).
RESTORE_TIMEOUT_S = 600.0
# Closing a client must not hold a stopping worker: past this the client is left to the process exit.
CLOSE_TIMEOUT_S = 10.0


def backoff_s(failures: int, initial: float = BACKOFF_INITIAL_S, most: float = BACKOFF_MAX_S) -> float:
    """Exponential backoff: `initial` after the first failure, doubling up to `most`."""
    return min(most, initial * 2 ** max(0, failures - 1))


def error_label(exc: BaseException) -> str:
    """The `error` label of eduhub_stage_errors_total for an exception a stage recovered from."""
    return "registry" if isinstance(exc, RegistryError) else type(exc).__name__


class TransactionalStage:
    """Consumes `topics` in a group and hands each batch to `process` inside a transaction.

    Each batch's output records and its input offsets commit atomically, so after any crash every
    input record has its outputs exactly once for read_committed readers. Outputs go through a
    `BatchWriter` (sends are not awaited one by one: the commit waits for all of them). A failed
    transaction is aborted, counted and logged with its cause, and its batch re-read from the committed
    offsets after a backoff (1 s doubling to 30 s); the loop itself never stops on an error.
    Subclasses set `stage` and implement `process(batches)`; `output_topics` lists where they write.
    `turned_at` (monotonic) is when the loop last turned: /healthz fails when it stops moving.
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
        self._producer_config = dict(bootstrap_servers=bootstrap_servers, transactional_id=transactional_id,
                                     enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024)
        self.producer = AIOKafkaProducer(**self._producer_config)
        self.writer = BatchWriter(self.producer)
        self._producer_broken = False  # a fatal transaction error: the next batch gets a new producer
        self.processed = 0
        self.first_batch_at: float | None = None  # perf_counter() of the first batch read
        self.turned_at = time.monotonic()
        self._stopping = asyncio.Event()
        # Set while the assigned partitions' state is restored; aiokafka may fetch for new partitions
        # while the rebalance listener still runs, so batches wait on this before being processed.
        self._restored = asyncio.Event()
        # Counts rebalances: a batch returned before one is dropped, since the rebalance moved the
        # partitions' positions back to their committed offsets and the records will be fetched again.
        self._generation = 0
        self._failures = 0  # batches failed in a row (the backoff grows with it)
        self._next_offsets: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        metrics.stage_errors.labels(self.stage, "restore")  # at 0 from the start: "no failures" is data

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))

    async def stop(self) -> None:
        """Leave the group and close the clients, each within CLOSE_TIMEOUT_S (an open transaction aborts)."""
        self._stopping.set()
        try:  # a stage that no longer runs has no last turn (else the stall alert would fire forever)
            self.metrics.stage_last_turn.remove(self.stage)
        except KeyError:
            pass
        for client in (self.consumer, self.producer):
            try:
                await asyncio.wait_for(client.stop(), CLOSE_TIMEOUT_S)
            except Exception as exc:  # a broker that is down must not hold the worker's exit
                log.warning("%s: closing %s failed: %r", self.stage, type(client).__name__, exc)

    def request_stop(self) -> None:
        """Stop taking partitions and finish the loop (stop() then closes the clients)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def assigned(self) -> int:
        """Partitions assigned and ready to process (their state restored)."""
        return len(self.consumer.assignment()) if self._restored.is_set() else 0

    def _turn(self) -> None:
        self.turned_at = time.monotonic()
        self.metrics.stage_last_turn.labels(self.stage).set(time.time())

    async def run(self) -> None:
        """Process batches until stopped."""
        while not self._stopping.is_set():
            self._turn()
            try:
                batches = await self.consumer.getmany(timeout_ms=self.batch_max_wait_ms or 1,
                                                      max_records=self.batch_max_records)
            except KafkaError as exc:  # e.g. authorisation: recurring, so counted and slowed down
                await self._failed(exc, {})
                continue
            # Read after the fetch returned: records it returns belong to the assignment of that moment
            # (aiokafka drops those of an older one), so only a rebalance from now on makes them stale.
            generation = self._generation
            self.metrics.assigned_partitions.labels(self.stage).set(self.assigned)
            if not batches:
                self.update_lag()
                continue
            if not await self._wait_restored() or generation != self._generation:
                continue
            assignment = self.consumer.assignment()
            batches = {tp: messages for tp, messages in batches.items() if tp in assignment}
            if not batches:
                continue
            started = time.perf_counter()
            if self.first_batch_at is None:
                self.first_batch_at = started
            try:
                if self._producer_broken:
                    await self._new_producer()
                await self.writer.prepare(self.output_topics, refresh=True)
                async with self.producer.transaction():
                    await self.process(batches)
                    await self.writer.flush()
                    await self.producer.send_offsets_to_transaction(
                        {tp: messages[-1].offset + 1 for tp, messages in batches.items()}, self.group_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — whatever failed, the transaction did not commit
                await self._failed(exc, batches)
                continue
            self._failures = 0
            self.committed(batches)
            for tp, messages in batches.items():
                self._next_offsets[tp] = messages[-1].offset + 1
            self.update_lag()
            self.processed += sum(len(m) for m in batches.values())
            self.metrics.batch_seconds.labels(self.stage).observe(time.perf_counter() - started)

    async def _wait_restored(self) -> bool:
        """Wait for the assigned partitions' state, turning the loop meanwhile; False when stopping."""
        while not self._restored.is_set():
            if self._stopping.is_set():
                return False
            self._turn()
            try:
                await asyncio.wait_for(self._restored.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        return not self._stopping.is_set()

    async def _failed(self, exc: BaseException, batches: dict[TopicPartition, list[Any]]) -> None:
        """A batch (or a fetch) failed: nothing of it is visible. Count it, say why, rewind, back off."""
        self._failures += 1
        self.metrics.stage_errors.labels(self.stage, error_label(exc)).inc()
        delay = backoff_s(self._failures)
        records = sum(len(m) for m in batches.values())
        # The traceback once per run of failures; after that one line each, so a recurring error
        # (broker down, fenced producer, denied topic) stays readable in the log.
        log.error("%s: %s of %d records failed (%d in a row): %s: %s; retrying from the committed offsets in "
                  "%.0f s", self.stage, "batch" if batches else "fetch", records, self._failures,
                  type(exc).__name__, exc, delay, exc_info=exc if self._failures == 1 else None)
        self.writer.discard()
        if batches:
            self.aborted(batches)
        state = getattr(getattr(self.producer, "_txn_manager", None), "state", TransactionState.READY)
        if state != TransactionState.READY:  # fenced, timed out or stuck mid-abort: this producer is done
            self._producer_broken = True
        await self._rewind(list(batches))
        self.update_lag(every_s=0)  # the lag grows while batches fail, so the lag alert sees it
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _new_producer(self) -> None:
        """Replace a producer in a fatal state; init_transactions with the same id fences the old one."""
        old = self.producer
        try:
            await asyncio.wait_for(old.stop(), CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.warning("%s: closing the failed producer: %r", self.stage, exc)
        self.producer = AIOKafkaProducer(**self._producer_config)
        self.writer = BatchWriter(self.producer)
        await self.producer.start()
        self._producer_broken = False
        log.info("%s: new transactional producer started", self.stage)

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

    async def _restore(self, partitions: set[TopicPartition]) -> None:
        """`on_assigned`, retried with backoff until it succeeds or the stage stops (never waits forever
        on a failure: each one is logged with its cause and counted as error=restore)."""
        failures = 0
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self.on_assigned(partitions), RESTORE_TIMEOUT_S)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                failures += 1
                self.metrics.stage_errors.labels(self.stage, "restore").inc()
                delay = backoff_s(failures)
                log.error("%s: restoring the state of %d partitions failed (%d in a row): %s: %s; retrying in "
                          "%.0f s", self.stage, len(partitions), failures, type(exc).__name__, exc, delay,
                          exc_info=exc if failures == 1 else None)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def _rewind(self, partitions: list[TopicPartition]) -> None:
        """Seek still-assigned partitions back to their committed offsets (retried until done or stopping:
        fetching on from where the failed batch ended would skip it)."""
        failures = 0
        while not self._stopping.is_set():
            try:
                for tp in partitions:
                    if tp not in self.consumer.assignment():
                        continue  # revoked meanwhile: its next owner starts from the committed offset
                    committed = await self.consumer.committed(tp)
                    if committed is None:
                        await self.consumer.seek_to_beginning(tp)
                    else:
                        self.consumer.seek(tp, committed)
                return
            except KafkaError as exc:
                failures += 1
                self.metrics.stage_errors.labels(self.stage, error_label(exc)).inc()
                log.warning("%s: rewinding to the committed offsets failed: %r; retrying", self.stage, exc)
                try:
                    await asyncio.wait_for(self._stopping.wait(), backoff_s(failures))
                except asyncio.TimeoutError:
                    pass


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
        self.stage._generation += 1
        self.stage._restored.clear()
        self.stage.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.stage._generation += 1
        if self.stage.stopping:
            return  # a stopping worker restores nothing and processes nothing; stop() leaves the group
        await self.stage._restore(set(assigned))
        self.stage._restored.set()

"""The transactional batch loop every stage runs: read a batch, write its outputs, commit outputs
and input offsets in one Kafka transaction."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hashlib
import logging
import time
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from hub.core.backoff import backoff_s
from hub.core.config import ConfigError
from hub.core.metrics import HubMetrics, error_label, export_lag
from hub.kafka.admin import partitions_of
from hub.kafka.clients import KafkaClients
from hub.kafka.tasks import CLOSE_TIMEOUT_S, Task, TaskSet, TransactionGate
from hub.kafka.writer import BatchWriter

log = logging.getLogger(__name__)
_WRITER: contextvars.ContextVar[BatchWriter] = contextvars.ContextVar("eduhub_stage_writer")
# A restore that has not finished by then is tried again from the start (and counted as failed).
RESTORE_TIMEOUT_S = 600.0
# A fenced task waits this long before it renews its producer: a zombie (a worker frozen past its
# session timeout) learns meanwhile from its next heartbeat that its partitions moved, and gives them
# up instead of fencing their new owner in turn. Above the consumers' 10 s session timeout.
FENCE_GRACE_S = 15.0


class TransactionalStage:
    """Consumes `topics` in a group and hands each batch to `process` inside a transaction.

    Each task's share of a batch (its input partitions' records) is one transaction with its outputs
    and its input offsets, so after any crash every input record has its outputs exactly once for
    read_committed readers, and a worker that lost a partition while frozen cannot commit it (see
    Task). Revoking partitions waits for the transaction in flight. Outputs go through a
    `BatchWriter` (sends are not awaited one by one: the commit waits for all of them). A failed
    transaction is aborted, counted and logged with its cause, and its records re-read from the
    committed offsets after a backoff (1 s doubling to 30 s); the loop itself never stops on an error.
    The tasks' transactions of one batch run concurrently (each task has its own producer): while
    one waits for its acknowledgements and commit, the next one's records are processed, so a turn
    of the loop costs about one commit round trip, not one per partition.
    Subclasses set `stage` and implement `process(batches)` (writing through `self.writer`, which is
    the writer of the transaction the calling coroutine runs in), returning what `committed` needs;
    `output_topics` lists where they write. `turned_at` (monotonic) is when the loop last turned:
    /healthz fails when it stops moving.
    """

    stage = "stage"

    def __init__(self, *, topics: list[str], kafka: KafkaClients, group_id: str, transactional_prefix: str,
                 metrics: HubMetrics, output_topics: list[str], batch_max_records: int = 20_000,
                 batch_max_wait_ms: int = 50) -> None:
        self.topics = topics
        self.metrics = metrics
        self.group_id = group_id
        self.output_topics = output_topics
        self.batch_max_records = batch_max_records
        self.batch_max_wait_ms = batch_max_wait_ms
        self.kafka = kafka
        self.consumer = kafka.consumer(group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                                       isolation_level="read_committed", max_partition_fetch_bytes=4 * 1024 * 1024,
                                       # partition p of every input topic to one worker: task p
                                       partition_assignment_strategy=(RangePartitionAssignor,))
        # Task p's transactional id names the input topics too: workers of one configuration fence each
        # other, while a worker still on another source list (a rolling change) never fights them for an id
        # that guards other partitions.
        digest = hashlib.sha256("\n".join(sorted(topics)).encode()).hexdigest()[:8]
        self.transactional_prefix = f"{transactional_prefix}-{digest}"
        producer_config = dict(kafka.options(), enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024)
        self._stopping = asyncio.Event()
        # the tasks this worker owns, by partition number
        self._tasks = TaskSet(stage=self.stage, producer_config=producer_config, prefix=self.transactional_prefix,
                              metrics=metrics, stopping=self._stopping)
        self._gate = TransactionGate()  # a rebalance waits for the transactions in flight
        self.processed = 0
        self.first_batch_at: float | None = None  # perf_counter() of the first batch read
        self.turned_at = time.monotonic()
        # Set while the assigned partitions' state is restored; aiokafka may fetch for new partitions
        # while the rebalance listener still runs, so batches wait on this before being processed.
        self._restored = asyncio.Event()
        # Counts rebalances: a batch returned before one is dropped, since the rebalance moved the
        # partitions' positions back to their committed offsets and the records will be fetched again.
        self._generation = 0
        self._failures = 0  # turns of the loop failed in a row (the backoff grows with it)
        self._failed_this_turn = False  # tasks fail together (broker down): one turn counts once
        self._next_offsets: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        metrics.stage_errors.labels(self.stage, "restore")  # at 0 from the start: "no failures" is data

    async def start(self) -> None:
        await self._check_copartitioned()
        await self.kafka.start(self.consumer)
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        # What exists once a stage starts (modules, schemas, clients) lives as long as the process: out of
        # the collector's sight, a full collection no longer walks it (~100 ms pauses under load, measured).
        gc.freeze()

    async def _check_copartitioned(self) -> None:
        """Task p must own partition p of every input: refuse inputs with different partition counts."""
        counts = {topic: len(await partitions_of(self.kafka, topic)) for topic in self.topics}
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{t}: {n}" for t, n in sorted(counts.items()))
            raise ConfigError(f"the {self.stage} stage's input topics must have equal partition counts ({listing}): "
                              f"add partitions to the smaller ones (kafka-topics.sh --alter --partitions N)")

    @property
    def client(self) -> Any:
        """A Kafka client of the stage (for readiness: is the broker answering?)."""
        return self.consumer._client

    async def stop(self) -> None:
        """Leave the group and close the clients, each within CLOSE_TIMEOUT_S (an open transaction aborts)."""
        self._stopping.set()
        try:  # a stage that no longer runs has no last turn (else the stall alert would fire forever)
            self.metrics.stage_last_turn.remove(self.stage)
        except KeyError:
            pass
        try:
            await asyncio.wait_for(self.consumer.stop(), CLOSE_TIMEOUT_S)
        except Exception as exc:  # a broker that is down must not hold the worker's exit
            log.warning("%s: closing the consumer failed: %r", self.stage, exc)
        await self._tasks.close_all()

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
            self._failed_this_turn = False
            try:
                batches = await self.consumer.getmany(timeout_ms=self.batch_max_wait_ms or 1,
                                                      max_records=self.batch_max_records)
            except KafkaError as exc:  # e.g. authorisation: recurring, so counted and slowed down
                await self._back_off(await self._failed(exc, {}))
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
            by_task: dict[int, dict[TopicPartition, list[Any]]] = {}
            for tp, messages in batches.items():
                by_task.setdefault(tp.partition, {})[tp] = messages
            delays = await asyncio.gather(*(self._transact(p, b) for p, b in by_task.items()))
            delay = max(delays)
            self.update_lag()
            await self._back_off(delay)
            self.metrics.batch_seconds.labels(self.stage).observe(time.perf_counter() - started)

    @property
    def writer(self) -> BatchWriter:
        """The writer of the transaction the calling coroutine runs in (tasks commit concurrently)."""
        return _WRITER.get()

    @writer.setter
    def writer(self, writer: BatchWriter) -> None:
        _WRITER.set(writer)

    async def _transact(self, partition: int, batches: dict[TopicPartition, list[Any]]) -> float:
        """One task's records in one transaction with their outputs and offsets; returns how long to
        back off (0 when it committed)."""
        if not self._gate.enter():
            return 0.0  # a rebalance is under way: these records are read again by whoever owns them next
        try:
            return await self._transact_open(partition, batches)
        finally:
            self._gate.leave()

    async def _transact_open(self, partition: int, batches: dict[TopicPartition, list[Any]]) -> float:
        if any(tp not in self.consumer.assignment() for tp in batches):
            return 0.0  # revoked meanwhile: the new owner reads these from the committed offsets
        task = self._tasks.get(partition)
        if task is None:  # not claimed (the stage is stopping): read these again, never skip them
            await self._rewind(self._task_partitions(partition))
            return 1.0
        if task.broken:
            # Only a producer that has fenced its predecessors may write, and only from offsets read
            # after that fencing: renew, rewind, and let these records be fetched again.
            await self._rewind(self._task_partitions(partition))
            if time.monotonic() - (task.broken_at or 0.0) < FENCE_GRACE_S:
                return 1.0  # maybe a zombie: let the group take the partition away first
            try:
                await self._tasks.renew(task)
            except Exception as exc:  # noqa: BLE001 — broker unreachable: try again later
                return await self._failed(exc, {})
            await self._rewind(self._task_partitions(partition))
            return 0.0
        self.writer = task.writer  # this coroutine's own context: concurrent tasks never share it
        try:
            await task.writer.prepare(self.output_topics, refresh=True)
            async with task.producer.transaction():
                outcome = await self.process(batches)
                await task.writer.flush()
                await task.producer.send_offsets_to_transaction(
                    {tp: messages[-1].offset + 1 for tp, messages in batches.items()}, self.group_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — whatever failed, the transaction did not commit
            return await self._failed(exc, batches, task)
        self._failures = 0
        self.committed(batches, outcome)
        for tp, messages in batches.items():
            self._next_offsets[tp] = messages[-1].offset + 1
        self.processed += sum(len(m) for m in batches.values())
        return 0.0

    def _task_partitions(self, partition: int) -> list[TopicPartition]:
        return [tp for tp in self.consumer.assignment() if tp.partition == partition]

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

    async def _failed(self, exc: BaseException, batches: dict[TopicPartition, list[Any]],
                      task: Task | None = None) -> float:
        """A batch (or a fetch) failed: nothing of it is visible. Count it, say why, rewind; returns the
        backoff, which the loop waits out with no transaction open (a revocation must not wait for it)."""
        if not self._failed_this_turn:
            self._failures += 1
            self._failed_this_turn = True
        self.metrics.stage_errors.labels(self.stage, error_label(exc)).inc()
        delay = backoff_s(self._failures)
        records = sum(len(m) for m in batches.values())
        # The traceback once per run of failures; after that one line each, so a recurring error
        # (broker down, fenced producer, denied topic) stays readable in the log.
        log.error("%s: %s of %d records failed (%d in a row): %s: %s; retrying from the committed offsets in "
                  "%.0f s", self.stage, "batch" if batches else "fetch", records, self._failures,
                  type(exc).__name__, exc, delay, exc_info=exc if self._failures == 1 else None)
        if task is not None:
            task.writer.discard()
            self.aborted(batches)
            if task.broken and task.broken_at is None:  # renewed by a later batch, after FENCE_GRACE_S
                task.broken_at = time.monotonic()
            await self._rewind(self._task_partitions(task.partition))
        self.update_lag(every_s=0)  # the lag grows while batches fail, so the lag alert sees it
        return delay

    async def _back_off(self, delay: float) -> None:
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _release(self, partitions: set[TopicPartition]) -> None:
        """Close the producers of tasks no longer assigned (after their transaction ended)."""
        await self._tasks.release({tp.partition for tp in self.consumer.assignment() if tp not in partitions})

    def update_lag(self, every_s: float = 2.0) -> None:
        """Export each assigned partition's lag (at most every `every_s`; it reads only client state)."""
        now = time.monotonic()
        if now - self._lag_at < every_s:
            return
        self._lag_at = now
        export_lag(self.metrics, self.consumer, self.group_id, self._next_offsets)

    async def process(self, batches: dict[TopicPartition, list[Any]]) -> Any:
        """Append the batch's outputs to `self.writer` (called inside the transaction); what it returns
        is handed to `committed` (keep per-batch state there, not on `self`: batches of other tasks
        are processed while this one's transaction is committing)."""
        raise NotImplementedError

    def committed(self, batches: dict[TopicPartition, list[Any]], outcome: Any) -> None:
        """The batch's transaction committed (count it in metrics here, not before); `outcome` is what
        `process` returned."""

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


class _Listener(ConsumerRebalanceListener):
    """Forwards the group's rebalances to the stage (aiokafka awaits these before fetching)."""

    def __init__(self, stage: TransactionalStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        stage = self.stage
        stage._generation += 1
        stage._restored.clear()
        await stage._gate.close()  # the transactions in flight commit or abort before the hand-over
        try:
            stage.on_revoked(set(revoked))
            await stage._release(set(revoked))
        finally:
            stage._gate.reopen()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        stage = self.stage
        stage._generation += 1
        if stage.stopping:
            return  # a stopping worker restores nothing and processes nothing; stop() leaves the group
        await stage._tasks.claim(set(assigned))  # fence first: what is read next is the previous owner's last word
        await stage._restore(set(assigned))
        stage._restored.set()

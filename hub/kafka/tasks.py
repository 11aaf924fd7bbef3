"""A transactional stage's tasks: one transactional producer per input partition number, claimed, renewed,
released; and the gate that lets a rebalance wait for their transactions in flight."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.producer.transaction_manager import TransactionState

from hub.core.backoff import backoff_s
from hub.core.metrics import HubMetrics
from hub.kafka.writer import BatchWriter

log = logging.getLogger(__name__)
# Closing a client must not hold a stopping worker: past this the client is left to the process exit.
CLOSE_TIMEOUT_S = 10.0


class Task:
    """The transactional producer of one input partition number: the unit of ownership and fencing.

    Partition p of every input topic belongs to task p (the group's range assignor gives all of them to
    one worker, since the inputs have equal partition counts). Its transactional id is
    `<prefix>-<inputs digest>-<p>`, the same on every worker of one configuration: whoever is assigned
    p starts a producer with that id, and
    Kafka then aborts the previous owner's open transaction and refuses its later commits (a zombie is
    fenced), as in Kafka Streams' first exactly-once mode.
    """

    def __init__(self, partition: int, producer_config: dict[str, Any], prefix: str) -> None:
        self.partition = partition
        self.transactional_id = f"{prefix}-{partition}"
        self.producer = AIOKafkaProducer(**producer_config, transactional_id=self.transactional_id)
        self.writer = BatchWriter(self.producer)
        self.closed = False
        self.broken_at: float | None = None  # monotonic time a failure left the producer broken

    @property
    def broken(self) -> bool:
        """Fenced, timed out, stuck mid-abort or closed: this producer can commit nothing more."""
        if self.closed:
            return True
        state = getattr(getattr(self.producer, "_txn_manager", None), "state", TransactionState.READY)
        return state != TransactionState.READY

    async def close(self) -> None:
        self.closed = True
        try:
            await asyncio.wait_for(self.producer.stop(), CLOSE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 — a broker that is down must not hold a rebalance or a stop
            log.warning("closing the producer %s: %r", self.transactional_id, exc)


class TaskSet:
    """The tasks a stage's worker owns, by partition number. `stage` names the stage in logs and metrics;
    `stopping` ends the retries of a claim."""

    def __init__(self, *, stage: str, producer_config: dict[str, Any], prefix: str, metrics: HubMetrics,
                 stopping: asyncio.Event) -> None:
        self.stage = stage
        self.producer_config = producer_config
        self.prefix = prefix
        self.metrics = metrics
        self._stopping = stopping
        self._tasks: dict[int, Task] = {}

    def get(self, partition: int) -> Task | None:
        return self._tasks.get(partition)

    async def claim(self, partitions: set[TopicPartition]) -> None:
        """Start the producers of the newly assigned tasks: each start fences the task's previous owner
        and waits until its open transaction is aborted or committed, so the committed offsets and the
        changelog read after this are final. Retried with backoff on failure (counted as error=claim)."""
        failures = 0
        for partition in sorted({tp.partition for tp in partitions} - set(self._tasks)):
            while not self._stopping.is_set():
                task = Task(partition, self.producer_config, self.prefix)
                try:
                    await task.producer.start()
                    self._tasks[partition] = task
                    break
                except Exception as exc:  # noqa: BLE001
                    await task.close()
                    failures += 1
                    self.metrics.stage_errors.labels(self.stage, "claim").inc()
                    log.error("%s: starting the producer %s failed (%d in a row): %s: %s", self.stage,
                              task.transactional_id, failures, type(exc).__name__, exc)
                    try:
                        await asyncio.wait_for(self._stopping.wait(), backoff_s(failures))
                    except asyncio.TimeoutError:
                        pass

    async def renew(self, task: Task) -> None:
        """Replace a task's broken producer; starting the new one fences every older one with its id.
        (A zombie renewing a task it lost fences the owner's transaction in flight, which then aborts
        and is redone: a delay, never a duplicate, since each writer reads the committed offsets after
        its own fencing.)"""
        await task.close()
        fresh = Task(task.partition, self.producer_config, self.prefix)
        try:
            await fresh.producer.start()
        except Exception:
            await fresh.close()
            raise
        if self._tasks.get(task.partition) is task:
            self._tasks[task.partition] = fresh
        else:
            await fresh.close()  # revoked meanwhile
        log.info("%s: new producer for task %s", self.stage, fresh.transactional_id)

    async def release(self, kept: set[int]) -> None:
        """Close the producers of tasks no longer assigned (after their transaction ended): all but `kept`."""
        for partition in [p for p in self._tasks if p not in kept]:
            await self._tasks.pop(partition).close()

    async def close_all(self) -> None:
        """Close every producer at once (an open transaction aborts)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        await asyncio.gather(*(task.close() for task in tasks))


class TransactionGate:
    """The transactions of a stage in flight, and the rebalance that waits for them: once `close` began no
    transaction may begin, and it returns when those in flight committed or aborted; `reopen` ends it."""

    def __init__(self) -> None:
        self._open = 0
        self._ended = asyncio.Event()
        self._closed = 0

    def enter(self) -> bool:
        """A transaction begins; False (and it must not) while the gate is closed."""
        if self._closed:
            return False
        self._open += 1
        self._ended.clear()
        return True

    def leave(self) -> None:
        self._open -= 1
        if not self._open:
            self._ended.set()

    async def close(self) -> None:
        self._closed += 1
        while self._open:
            await self._ended.wait()

    def reopen(self) -> None:
        self._closed -= 1

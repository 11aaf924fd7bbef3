"""The batch loop commits its tasks' transactions concurrently: each task writes only its own records
through its own writer, gets its own outcome on commit, and a rebalance waits for all in flight."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from hub.core.metrics import HubMetrics
from hub.kafka.clients import KafkaClients
from hub.kafka.stage import TransactionalStage
from hub.kafka.tasks import TransactionGate


class FakeWriter:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def prepare(self, topics: Any, refresh: bool = False) -> None:
        pass

    def append(self, topic: str, key: Any, value: Any, timestamp_ms: Any, headers: Any) -> None:
        self.records.append(value)

    async def flush(self) -> None:
        await asyncio.sleep(0.01)  # the acknowledgements: other tasks run meanwhile

    def discard(self) -> None:
        self.records.clear()


class FakeProducer:
    open_now = 0
    most_open = 0

    @asynccontextmanager
    async def transaction(self):
        FakeProducer.open_now += 1
        FakeProducer.most_open = max(FakeProducer.most_open, FakeProducer.open_now)
        try:
            yield
        finally:
            FakeProducer.open_now -= 1

    async def send_offsets_to_transaction(self, offsets: dict, group_id: str) -> None:
        await asyncio.sleep(0)


class Stage(TransactionalStage):
    """Writes each record's value through `self.writer`, yielding between records; the outcome is the count."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcomes: dict[int, int] = {}

    async def process(self, batches: dict[TopicPartition, list[Any]]) -> int:
        n = 0
        for messages in batches.values():
            for message in messages:
                self.writer.append("out", None, message.value, None, [])
                n += 1
                await asyncio.sleep(0)  # another task's process runs here
        return n

    def committed(self, batches: dict[TopicPartition, list[Any]], outcome: int) -> None:
        self.outcomes[next(iter(batches)).partition] = outcome


def test_concurrent_transactions_keep_their_records_writers_and_outcomes_apart() -> None:
    tps = [TopicPartition("t", p) for p in range(3)]

    async def go() -> tuple[Stage, dict[int, Any]]:
        stage = Stage(topics=["t"], kafka=KafkaClients.plain("127.0.0.1:1"), group_id="g",
                      transactional_prefix="x", metrics=HubMetrics(), output_topics=["out"])
        stage.consumer = SimpleNamespace(assignment=lambda: set(tps))  # type: ignore[assignment]
        tasks = {tp.partition: SimpleNamespace(partition=tp.partition, broken=False, writer=FakeWriter(),
                                               producer=FakeProducer()) for tp in tps}
        stage._tasks = SimpleNamespace(get=tasks.get)  # type: ignore[assignment]
        batches = {tp.partition: {tp: [SimpleNamespace(offset=i, value=f"{tp.partition}:{i}") for i in range(50)]}
                   for tp in tps}
        delays = await asyncio.gather(*(stage._transact(p, b) for p, b in batches.items()))
        assert delays == [0.0, 0.0, 0.0]
        return stage, tasks

    stage, tasks = asyncio.run(go())
    assert FakeProducer.most_open == 3  # the three transactions were open at once
    for partition, task in tasks.items():
        assert task.writer.records == [f"{partition}:{i}" for i in range(50)]  # its own, in order
    assert stage.outcomes == {0: 50, 1: 50, 2: 50} and stage.processed == 150


def test_a_closed_gate_admits_no_transaction_and_waits_for_those_in_flight() -> None:
    async def go() -> list[str]:
        gate, events = TransactionGate(), []
        assert gate.enter()

        async def rebalance() -> None:
            await gate.close()
            events.append("handed over")

        waiting = asyncio.create_task(rebalance())
        await asyncio.sleep(0.01)
        assert not waiting.done()  # a transaction is still in flight
        assert not gate.enter()  # and no new one may begin
        events.append("committed")
        gate.leave()
        await waiting
        gate.reopen()
        assert gate.enter()
        return events

    assert asyncio.run(go()) == ["committed", "handed over"]

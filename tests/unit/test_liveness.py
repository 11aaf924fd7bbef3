"""Liveness without a broker: a stalled stage fails /healthz, a restoring stage is not ready, the loop's
failure path backs off and rewinds, and a signalled worker exits within its bound."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from types import SimpleNamespace

from aiokafka import TopicPartition

from hub.core.backoff import backoff_s
from hub.core.metrics import HubMetrics, error_label
from hub.kafka.clients import KafkaClients
from hub.kafka.stage import TransactionalStage
from hub.contract.registry import RegistryError
from hub.runtime.worker import stages_turning


def test_a_stage_whose_loop_stopped_turning_is_reported_stalled():
    state = {"validate": SimpleNamespace(turned_at=100.0), "route": SimpleNamespace(turned_at=10.0),
             "schema_ids": {"exam.registration": 3}}  # not a stage: ignored
    assert stages_turning(state, stall_timeout_s=60, now=105.0) == {"validate": True, "route": False}
    assert stages_turning({}, stall_timeout_s=60, now=105.0) == {}  # nothing built yet: alive, not ready


def test_backoff_doubles_to_its_cap_and_errors_are_labelled_by_class():
    assert [backoff_s(n) for n in (1, 2, 3, 6, 50)] == [1.0, 2.0, 4.0, 30.0, 30.0]
    assert error_label(RegistryError("down")) == "registry"
    assert error_label(TimeoutError()) == "TimeoutError"


def test_backoff_still_answers_after_hours_of_failures():
    """A stage failing every 30 s reaches 1,025 failures in under 9 hours: 2 ** 1024 overflowed a float."""
    assert backoff_s(1_025) == backoff_s(10**9) == 30.0


class FakeConsumer:
    def __init__(self, assigned: set[TopicPartition], committed: dict[TopicPartition, int]) -> None:
        self._assigned = assigned
        self._committed = committed
        self.seeks: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return self._assigned

    async def committed(self, tp: TopicPartition) -> int:
        return self._committed[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return 100

    def highwater(self, tp: TopicPartition) -> int:
        return 100


def stage_with(consumer: FakeConsumer) -> TransactionalStage:
    stage = TransactionalStage(topics=["t"], kafka=KafkaClients.plain("127.0.0.1:1"), group_id="g",
                               transactional_prefix="x", metrics=HubMetrics(), output_topics=[])
    stage.consumer = consumer  # type: ignore[assignment]
    stage._stopping.set()  # no real wait between retries in a unit test
    return stage


def test_a_failed_batch_is_counted_rewound_to_the_committed_offsets_and_not_lost():
    kept, revoked = TopicPartition("t", 0), TopicPartition("u", 0)
    consumer = FakeConsumer({kept}, {kept: 7, revoked: 3})

    async def go() -> TransactionalStage:
        stage = stage_with(consumer)  # aiokafka clients are made inside a running loop
        stage._stopping.clear()
        task = SimpleNamespace(writer=SimpleNamespace(discard=lambda: None), broken=False, partition=0)
        delay = await stage._failed(RegistryError("down"), {kept: [object()]}, task)  # type: ignore[arg-type]
        assert delay == 1.0  # waited out by the loop, with no transaction open
        return stage

    stage = asyncio.run(go())
    assert consumer.seeks == {kept: 7}  # the revoked partition is its next owner's, from its committed offset
    errors = stage.metrics.registry.get_sample_value("eduhub_stage_errors_total", {"stage": "stage", "error": "registry"})
    assert errors == 1


def test_partitions_count_as_assigned_only_once_their_state_is_restored():
    async def make() -> TransactionalStage:
        return stage_with(FakeConsumer({TopicPartition("t", 0)}, {}))

    stage = asyncio.run(make())
    assert stage.assigned == 0  # assigned, restore not finished: /readyz says partitions_assigned false
    stage._restored.set()
    assert stage.assigned == 1


def test_exit_after_ends_a_process_whose_loop_is_blocked():
    code = textwrap.dedent("""
        import time
        from hub.runtime.worker import exit_after
        exit_after(0.5)
        time.sleep(60)  # a loop that never yields: only the timer thread can end it
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "did not stop within" in done.stderr


def test_no_stage_attribute_shadows_a_method_of_the_batch_loop(tmp_path):
    """ValidateStage once kept its last refusal in `self._failed`, hiding the loop's `_failed()`: the first
    failed batch then crashed the stage instead of being retried."""
    from hub.stages.dedup import DedupWindow
    from hub.contract.schemas import Catalogue
    from hub.stages.validate import ValidateStage, Validator

    async def make() -> ValidateStage:
        stage = ValidateStage(validator=Validator(Catalogue.load(), {"src"}), schema_ids={}, sources=["src"],
                              kafka=KafkaClients.plain("127.0.0.1:1"), group_id="g", transactional_prefix="x",
                              metrics=HubMetrics(), dedup=DedupWindow("changelog", state_dir=tmp_path))
        stage._output(SimpleNamespace(value=b"not json", key=None, topic="ingest.src", partition=0, offset=0),
                      "src", __import__("datetime").datetime.now(__import__("datetime").timezone.utc), "")
        return stage

    stage = asyncio.run(make())
    shadowed = {name for name in vars(stage) if callable(getattr(TransactionalStage, name, None))}
    assert shadowed == set()

"""The dedup window's local store on the real broker: a restart reads only the changelog written after its
checkpoint, a fresh store reads the whole window, and a killed worker's successor still drops repeats."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections import Counter

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from hub.contract.topics import changelog_topic
from hub.core.config import load_config
from hub.kafka.admin import ensure_topics
from hub.kafka.clients import KafkaClients
from hub.kafka.writer import BatchWriter
from hub.runtime.worker import dedup_dir
from hub.stages.dedup import DedupWindow, Restored, changelog_configs
from tests.conftest import PORT_OFFSET, WorkerProcess, write_config
from tests.kafka_helpers import encode, header, produce_raw, read_to_end, registration_envelope, wait_until

pytestmark = pytest.mark.integration
PARTITIONS = 3
RESTORED = re.compile(r"dedup window restored: (\d+) changelog records, (\d+) event ids, (\d+) partitions "
                      r"\((\d+) in full\)")


class Batches:
    """Commits batches of new ids the way the validate stage does: checker, write and flush inside a
    transaction, then `committed` (the changelog offsets come from the producer's acks)."""

    def __init__(self, kafka: KafkaClients, topic: str) -> None:
        self.producer = AIOKafkaProducer(**kafka.options(), enable_idempotence=True,
                                         transactional_id=f"it-dedup-{uuid.uuid4().hex[:8]}")
        self.writer = BatchWriter(self.producer)
        self.topic = topic

    async def __aenter__(self) -> "Batches":
        await self.producer.start()
        await self.writer.prepare([self.topic])
        return self

    async def __aexit__(self, *exc) -> None:
        await self.producer.stop()

    async def commit(self, window: DedupWindow, tp: TopicPartition, ids: list[str]) -> None:
        now = time.time()
        async with self.producer.transaction():
            check = window.checker(tp, now)
            assert not any(check(i) for i in ids)
            window.write(self.writer, int(now * 1000), [tp])
            await self.writer.flush()
        window.committed([tp])


async def restore_after_restart(bootstrap: str, tmp_path) -> None:
    kafka = KafkaClients.plain(bootstrap)
    topic = f"it-dedup-changelog-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [(topic, PARTITIONS)], 1, configs=changelog_configs(3600))
    tps = [TopicPartition(f"ingest.it-{uuid.uuid4().hex[:8]}", p) for p in range(PARTITIONS)]
    ids = {tp: [] for tp in tps}

    def fresh(tp: TopicPartition, n: int = 500) -> list[str]:
        made = [str(uuid.uuid4()) for _ in range(n)]
        ids[tp] += made
        return made

    async with Batches(kafka, topic) as batches:
        first = DedupWindow(topic, 3600, state_dir=tmp_path / "a")
        assert await first.restore(kafka, tps) == Restored(records=0, ids=0, full=PARTITIONS)
        for _ in range(4):
            for tp in tps:
                await batches.commit(first, tp, fresh(tp))  # one changelog record each
        first.close()

        # Another worker takes the partitions over: it has no store, so it reads the whole window
        other = DedupWindow(topic, 3600, state_dir=tmp_path / "b")
        assert await other.restore(kafka, tps) == Restored(records=12, ids=12 * 500, full=PARTITIONS)
        await batches.commit(other, tps[0], fresh(tps[0]))
        await batches.commit(other, tps[0], fresh(tps[0]))
        await batches.commit(other, tps[1], fresh(tps[1]))
        other.close()

    # The first worker comes back: it reads only the three records written after its checkpoints
    again = DedupWindow(topic, 3600, state_dir=tmp_path / "a")
    assert await again.restore(kafka, tps) == Restored(records=3, ids=3 * 500, full=0)
    now = time.time()
    for tp in tps:
        check = again.checker(tp, now)
        assert all(check(i) for i in ids[tp]), "an id accepted before the restart is new again"
        assert not check(str(uuid.uuid4()))
    again.aborted()
    again.revoke(tps)  # revoked and assigned again, nothing written meanwhile: nothing to read
    assert await again.restore(kafka, tps) == Restored(records=0, ids=0, full=0)
    again.close()

    # A fresh store reads the whole window
    scratch = DedupWindow(topic, 3600, state_dir=tmp_path / "c")
    assert await scratch.restore(kafka, tps) == Restored(records=15, ids=15 * 500, full=PARTITIONS)
    assert all(scratch.checker(tp, now)(ids[tp][-1]) for tp in tps)
    scratch.close()


def test_a_restart_reads_only_the_changelog_after_its_checkpoint(local_stack, tmp_path):
    asyncio.run(restore_after_restart(local_stack.bootstrap_servers, tmp_path))


def restores(worker: WorkerProcess) -> list[tuple[int, ...]]:
    return [tuple(map(int, m.groups())) for m in RESTORED.finditer(worker.log_path.read_text(errors="replace"))]


def test_a_killed_worker_s_successor_restores_from_its_checkpoint_and_drops_repeats(local_stack, start_worker,
                                                                                      unique_source):
    bootstrap = local_stack.bootstrap_servers
    ingest = f"ingest.{unique_source}"
    instance = f"it-dstore-{uuid.uuid4().hex[:6]}"
    first = start_worker([unique_source], instance_id=instance)
    sent = [registration_envelope(unique_source) for _ in range(300)]
    produce_raw(bootstrap, ingest, [(e["key"].encode(), encode(e)) for e in sent])

    def accepted() -> Counter:
        return Counter(header(r, "eduhub.event_id") for r in read_to_end(bootstrap, "edu.exam.registration")
                       if header(r, "eduhub.source") == unique_source)

    assert wait_until(lambda: len(accepted()) == len(sent), bound_s=120, interval_s=1)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = start_worker([unique_source], instance_id=instance)  # the same store, under the same instance_id
    assert restores(second), "the restarted worker logged no restore"
    assert all(full == 0 for *_, full in restores(second)), f"read in full after kill -9: {restores(second)}"
    markers = [registration_envelope(unique_source) for _ in range(30)]
    produce_raw(bootstrap, ingest, [(e["key"].encode(), encode(e)) for e in sent + markers])
    assert wait_until(lambda: len(accepted()) == len(sent) + len(markers), bound_s=120, interval_s=1)
    seen = accepted()
    assert {event_id: n for event_id, n in seen.items() if n > 1} == {}
    metrics = httpx.get(f"{second.url}/metrics", timeout=10).text
    assert (f'eduhub_events_deduplicated_total{{entity="exam.registration",source="{unique_source}"}} '
            f'{float(len(sent))}') in metrics


def test_a_store_in_use_stops_the_worker_with_what_to_change(local_stack, tmp_path, unique_source):
    """Two workers with one instance_id and one state_dir on a host: the second says which keys to change."""
    path = write_config(tmp_path / "hub.yaml", local_stack, [unique_source], web_port=26105 + PORT_OFFSET,
                        instance_id=f"it-lock-{uuid.uuid4().hex[:6]}")
    config = load_config(path)
    held = DedupWindow(changelog_topic("eduhub-validate"), config.worker.dedup_window_s, state_dir=dedup_dir(config))
    worker = WorkerProcess(path, tmp_path / "worker.log")
    try:
        with pytest.raises(RuntimeError):
            worker.start(ready_timeout=90)
        log = worker.log_path.read_text(errors="replace")
        assert "is in use by another worker process" in log and "worker.instance_id" in log, log[-3000:]
    finally:
        if worker.process is not None:
            worker.stop()
        held.close()

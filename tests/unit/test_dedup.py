"""The dedup window's bookkeeping and its local store: pending until committed, forgotten on abort, expiry by
time, checkpoints written with the ids, kept on revoke and across a reopen, wiped when they cannot be trusted."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition

from hub.core.config import ConfigError
from hub.stages.dedup import CACHE_BYTES, CHUNK, DedupWindow, Restored, changelog_configs

TP = TopicPartition("ingest.smas", 2)


class Recorder:
    """A BatchWriter stand-in: records what the window appends, and acks offsets as a flush would."""

    def __init__(self, acked: dict[tuple[str, int], int] | None = None) -> None:
        self.records: list[tuple] = []
        self.acked = acked or {}

    def append_to(self, topic, partition, key, value, timestamp_ms, headers=None):
        self.records.append((topic, partition, key, value, timestamp_ms))


@pytest.fixture
def window(tmp_path):
    opened = []

    def make(topic="cl", window_s=7 * 24 * 3600, **kwargs) -> DedupWindow:
        opened.append(DedupWindow(topic, window_s, state_dir=tmp_path / "dedup", **kwargs))
        return opened[-1]

    yield make
    for w in opened:
        w.close()


def commit(window: DedupWindow, ids: list[str], now: float, tp: TopicPartition = TP, end: int | None = None) -> None:
    """One batch through the real calls: checker, write (into the transaction), committed."""
    check = window.checker(tp, now)
    for event_id in ids:
        check(event_id)
    writer = Recorder({(window.topic, tp.partition): end} if end is not None else {})
    window.write(writer, int(now * 1000), [tp])
    window.committed([tp])


def test_a_repeat_is_caught_within_the_batch_and_after_commit(window):
    w = window()
    now = time.time()
    check = w.checker(TP, now)
    assert check("e1") is False
    assert check("e1") is True  # twice in one batch
    w.committed()
    assert w.checker(TP, now)("e1") is True
    assert w.checker(TopicPartition("ingest.smas", 3), now)("e1") is False  # per partition
    assert w.checker(TopicPartition("ingest.other", 2), now)("e1") is False  # per ingest topic


def test_an_aborted_batch_does_not_hide_its_own_events_when_re_read(window):
    w = window()
    w.checker(TP, time.time())("e1")
    w.write(Recorder({("cl", 2): 5}), 0, [TP])
    w.aborted([TP])
    assert w.checker(TP, time.time())("e1") is False
    assert w.checkpoint(TP) is None  # nothing of the aborted batch entered the store


def test_only_the_committed_task_s_partitions_enter_the_store(window):
    """Tasks commit concurrently: committing partition 2 leaves partition 3's batch in flight."""
    w = window()
    other = TopicPartition("ingest.smas", 3)
    now = time.time()
    w.checker(TP, now)("a")
    w.checker(other, now)("b")
    w.committed([TP])
    w.aborted([other])
    assert w.checker(TP, now)("a") is True
    assert w.checker(other, now)("b") is False


def test_ids_older_than_the_window_are_new_again(window):
    w = window(window_s=60)
    commit(w, ["old"], time.time() - 120)
    commit(w, ["fresh"], time.time() - 30)
    assert w.checker(TP, time.time())("old") is False
    assert w.checker(TP, time.time())("fresh") is True


def test_an_injected_clock_decides_what_seen_means(window):
    clock = [1_000_000.0]
    w = window(window_s=60, clock=lambda: clock[0])
    commit(w, ["e1"], clock[0])
    assert w.seen(TP, "e1") is True
    clock[0] += 61
    w.aborted()
    assert w.seen(TP, "e1") is False


def test_expired_ids_leave_the_disk_at_a_compaction(window):
    """RocksDB's TTL (the window, in whole seconds) drops ids written more than the window ago."""
    w = window(window_s=1)
    commit(w, [f"e{n}" for n in range(100)], time.time())
    time.sleep(2.1)
    w._db.compact_range(None, None)  # RocksDB compacts by itself too (every file at least daily)
    assert w._db.get(w._prefix(TP) + b"e1") is None


def test_ids_and_checkpoint_survive_a_close_and_reopen(window):
    w = window()
    now = time.time()
    commit(w, ["e1", "e2"], now, end=42)
    w.close()
    again = window()
    # the reopened store runs with our options (Rdict would otherwise take those stored with it)
    assert again._db.property_int_value("rocksdb.block-cache-capacity") == CACHE_BYTES
    assert again.checkpoint(TP) == 42
    assert again.checker(TP, now)("e2") is True
    assert again.size() >= 2


def test_the_checkpoint_is_written_with_the_ids(window, monkeypatch):
    """One RocksDB write holds a batch's ids and its checkpoint: either both are in the store or neither."""
    w = window()
    now = time.time()
    writes = []
    real_write = w._db.write

    class Spy:
        def __getattr__(self, name):
            return getattr(db, name)

        def write(self, batch, *args):
            writes.append(len(batch))
            return real_write(batch, *args)

    db = w._db
    w._db = Spy()
    commit(w, ["e1", "e2", "e3"], now, end=7)
    w._db = db
    assert writes == [3 + 1 + 2]  # three ids, the checkpoint, the layout and topic
    assert w.checkpoint(TP) == 7 and w.checker(TP, now)("e3") is True


def test_a_failed_store_write_keeps_the_ids_and_freezes_the_checkpoints(window):
    w = window()
    now = time.time()
    commit(w, ["e1"], now, end=3)

    class Full:
        def __getattr__(self, name):
            return getattr(db, name)

        def write(self, batch, *args):
            raise OSError("No space left on device")

    db = w._db
    w._db = Full()
    commit(w, ["e2"], now, end=9)
    commit(w, ["e3"], now, end=12)
    w._db = db
    assert w.checker(TP, now)("e2") is True  # from memory
    commit(w, ["e4"], now, end=15)  # the store writes again, but the checkpoint stays below e2's record
    assert w.checkpoint(TP) == 3


def test_revoked_partitions_keep_their_ids(window):
    w = window()
    now = time.time()
    commit(w, ["e1"], now, end=10)
    w.checker(TP, now)("in-flight")
    w.revoke({TP})
    assert w.checker(TP, now)("e1") is True
    assert w.checker(TP, now)("in-flight") is False  # the batch in flight was forgotten
    assert w.checkpoint(TP) == 10


def test_a_store_of_another_changelog_topic_is_wiped(window):
    w = window("first-changelog")
    commit(w, ["e1"], time.time(), end=10)
    w.close()
    other = window("second-changelog")
    assert other.checkpoint(TP) is None
    assert other.checker(TP, time.time())("e1") is False


def test_a_store_of_another_layout_is_wiped(window, tmp_path):
    from rocksdict import Options, Rdict

    (tmp_path / "dedup").mkdir()
    foreign = Rdict(str(tmp_path / "dedup"), Options(raw_mode=True))
    foreign[b"\x00\x00\x00\x02ingest.smas\x00e1"] = b"not ours"
    foreign.close()
    w = window()
    assert w.checker(TP, time.time())("e1") is False


def test_a_corrupt_store_is_wiped_and_opens_empty(window, tmp_path, caplog):
    w = window()
    commit(w, ["e1"], time.time(), end=10)
    w.close()
    for path in (tmp_path / "dedup").iterdir():
        if path.name.startswith(("MANIFEST", "CURRENT")):
            path.write_bytes(b"\x00garbage\x00" * 10)
    again = window()
    assert "cannot be read" in caplog.text
    assert again.checkpoint(TP) is None and again.checker(TP, time.time())("e1") is False


def test_a_second_open_of_the_same_store_says_what_to_change(window):
    window()
    with pytest.raises(ConfigError, match=r"in use by another worker process.*worker\.instance_id.*worker\.state_dir"):
        window()


def test_the_changelog_record_goes_to_the_ingest_partition_keyed_by_topic_in_chunks(window):
    w = window()
    check = w.checker(TP, time.time())
    for n in range(CHUNK + 1):
        check(f"e{n}")
    recorder = Recorder()
    w.write(recorder, 1234)
    assert [(r[0], r[1], r[2], r[4]) for r in recorder.records] == [("cl", 2, b"ingest.smas", 1234)] * 2
    ids = b"\n".join(r[3] for r in recorder.records).decode().split("\n")
    assert ids == [f"e{n}" for n in range(CHUNK + 1)]


def test_changelog_retention_covers_the_window():
    configs = changelog_configs(7 * 24 * 3600)
    assert configs["cleanup.policy"] == "delete"
    assert int(configs["retention.ms"]) > 7 * 24 * 3600 * 1000


# ---------------------------------------------------------------- restore, against a stand-in consumer
class Message:
    def __init__(self, offset, key, value, timestamp):
        self.offset, self.key, self.value, self.timestamp = offset, key, value, timestamp


class FakeConsumer:
    """An assigned consumer of one changelog: its records are (key, value, timestamp) at offsets 0..n-1."""

    def __init__(self, logs: dict[int, list[tuple[bytes, bytes, int]]]) -> None:
        self.logs = logs
        self.positions: dict[TopicPartition, int] = {}
        self.read = 0

    def assign(self, tps):
        self.tps = list(tps)

    async def offsets_for_times(self, times):
        out = {}
        for tp, since in times.items():
            found = [i for i, (_, _, ts) in enumerate(self.logs.get(tp.partition, [])) if ts >= since]
            out[tp] = type("At", (), {"offset": found[0]})() if found else None
        return out

    async def end_offsets(self, tps):
        return {tp: len(self.logs.get(tp.partition, [])) for tp in tps}

    def seek(self, tp, offset):
        self.positions[tp] = offset

    async def getmany(self, *tps, timeout_ms=0):
        out = {}
        for tp in tps:
            start = self.positions[tp]
            records = self.logs[tp.partition][start:start + 2]
            out[tp] = [Message(start + i, *r) for i, r in enumerate(records)]
            self.positions[tp] = start + len(records)
            self.read += len(records)
        return out

    async def position(self, tp):
        return self.positions[tp]

    async def stop(self):
        pass


class FakeKafka:
    def __init__(self, consumer):
        self._consumer = consumer

    def consumer(self, **kwargs):
        return self._consumer

    async def start(self, client):
        pass


def test_restore_reads_from_the_checkpoint_and_in_full_without_one(window):
    now = time.time()
    ms = int(now * 1000)
    logs = {2: [(b"ingest.smas", f"a{n}\nb{n}".encode(), ms) for n in range(5)]}
    w = window()
    first = asyncio.run(w.restore(FakeKafka(FakeConsumer(logs)), [TP]))
    assert first == Restored(records=5, ids=10, full=1)
    assert w.checkpoint(TP) == 5 and w.checker(TP, now)("b4") is True
    w.aborted()
    logs[2].append((b"ingest.other", b"c5", ms))  # another source's ids share the changelog partition
    again = asyncio.run(w.restore(FakeKafka(FakeConsumer(logs)), [TP]))
    assert again == Restored(records=1, ids=1, full=0)
    assert w.checker(TopicPartition("ingest.other", 2), now)("c5") is True


def test_an_ingest_partition_without_its_own_checkpoint_is_read_in_full(window):
    """In a rolling change a worker on another source list writes `ingest.other` to the same changelog
    partition: our checkpoint of `ingest.smas` says nothing about it, so taking it over reads it all."""
    now = time.time()
    ms = int(now * 1000)
    other = TopicPartition("ingest.other", 2)
    logs = {2: [(b"ingest.smas", b"a0", ms), (b"ingest.other", b"c0", ms)]}
    w = window()
    asyncio.run(w.restore(FakeKafka(FakeConsumer(logs)), [TP]))
    w._db.delete(w._prefix(other) + b"c0")  # as if this worker had not read it
    commit(w, ["a1"], now, end=3)  # the batch's record went to offset 2
    assert w.checkpoint(TP) == 3 and w.checkpoint(other) is None
    logs[2] += [(b"ingest.smas", b"a1", ms), (b"ingest.other", b"c1", ms)]
    restored = asyncio.run(w.restore(FakeKafka(FakeConsumer(logs)), [TP, other]))
    assert restored == Restored(records=4, ids=4, full=1)
    assert w.checker(other, now)("c0") is True and w.checkpoint(other) == w.checkpoint(TP) == 4


def test_a_checkpoint_beyond_the_end_wipes_the_partition(window):
    """The changelog was recreated: the checkpoint cannot be trusted, the partition is read in full."""
    now = time.time()
    w = window()
    commit(w, ["stale"], now, end=100)
    logs = {2: [(b"ingest.smas", b"fresh", int(now * 1000))]}
    restored = asyncio.run(w.restore(FakeKafka(FakeConsumer(logs)), [TP]))
    assert restored == Restored(records=1, ids=1, full=1)
    assert w.checkpoint(TP) == 1
    check = w.checker(TP, now)
    assert check("fresh") is True and check("stale") is False


def test_restore_skips_what_lies_before_the_window(window):
    now = time.time()
    old, fresh = int((now - 3600) * 1000), int(now * 1000)
    logs = {2: [(b"ingest.smas", b"o1", old), (b"ingest.smas", b"o2", old), (b"ingest.smas", b"n1", fresh)]}
    w = window(window_s=60)
    consumer = FakeConsumer(logs)
    assert asyncio.run(w.restore(FakeKafka(consumer), [TP])) == Restored(records=1, ids=1, full=1)
    assert consumer.read == 1 and w.checkpoint(TP) == 3


def test_a_state_dir_that_cannot_be_created_says_which_key_to_change(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"worker\.state_dir to a writable folder"):
        DedupWindow("cl", state_dir=tmp_path / "a-file" / "dedup")


def test_each_worker_keeps_its_store_under_its_own_instance_id():
    from pathlib import Path

    from hub.core.config import HubConfig
    from hub.runtime.worker import dedup_dir

    config = HubConfig.model_validate({"worker": {"instance_id": "../hp worker/1", "state_dir": "/srv/eduhub"}})
    assert dedup_dir(config) == Path("/srv/eduhub/_hp_worker_1/dedup")
    assert HubConfig.model_validate({}).worker.state_dir == Path(".eduhub/state")

"""The dedup window's bookkeeping: pending until committed, forgotten on abort, revoke and expiry."""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from hub.stages.dedup import CHUNK, DedupWindow, changelog_configs

TP = TopicPartition("ingest.smas", 2)


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple] = []

    def append_to(self, topic, partition, key, value, timestamp_ms, headers=None):
        self.records.append((topic, partition, key, value, timestamp_ms))


def test_a_repeat_is_caught_within_the_batch_and_after_commit():
    window = DedupWindow("cl")
    now = time.time()
    check = window.checker(TP, now)
    assert check("e1") is False
    assert check("e1") is True  # twice in one batch
    window.committed()
    assert window.checker(TP, now)("e1") is True
    assert window.checker(TopicPartition("ingest.smas", 3), now)("e1") is False  # per partition


def test_an_aborted_batch_does_not_hide_its_own_events_when_re_read():
    window = DedupWindow("cl")
    window.checker(TP, time.time())("e1")
    window.aborted()
    assert window.checker(TP, time.time())("e1") is False


def test_ids_older_than_the_window_are_new_again_and_pruned():
    window = DedupWindow("cl", window_s=60)
    window.checker(TP, time.time() - 120)("old")
    window.committed()
    assert window.checker(TP, time.time())("old") is False
    window.aborted()
    assert window.prune() == 1 and window.size() == 0


def test_revoked_partitions_are_forgotten():
    window = DedupWindow("cl")
    window.checker(TP, time.time())("e1")
    window.committed()
    window.revoke({TP})
    assert window.size() == 0


def test_the_changelog_record_goes_to_the_ingest_partition_keyed_by_topic_in_chunks():
    window = DedupWindow("cl")
    check = window.checker(TP, time.time())
    for n in range(CHUNK + 1):
        check(f"e{n}")
    recorder = Recorder()
    window.write(recorder, 1234)
    assert [(r[0], r[1], r[2], r[4]) for r in recorder.records] == [("cl", 2, b"ingest.smas", 1234)] * 2
    ids = b"\n".join(r[3] for r in recorder.records).decode().split("\n")
    assert ids == [f"e{n}" for n in range(CHUNK + 1)]


def test_changelog_retention_covers_the_window():
    configs = changelog_configs(7 * 24 * 3600)
    assert configs["cleanup.policy"] == "delete"
    assert int(configs["retention.ms"]) > 7 * 24 * 3600 * 1000

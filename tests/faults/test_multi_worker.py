"""Fault scenarios with several workers in one group: a frozen worker woken after its partitions moved
(a zombie), workers added and removed mid-stream, and a worker killed while another joins.

Each proves from the topics that every event is in exactly one of canonical or DLQ, every valid one
exactly once at the Kafka subscriber, and each key's order kept (tests/faults/harness.py).
"""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# The stages' consumers keep aiokafka's 10 s session timeout: a freeze past it moves the partitions.
SESSION_TIMEOUT_S = 10


@pytest.mark.parametrize("moment, freeze_s, pace_s", [(0.15, 15, 20), (0.8, 35, 20), (0.4, 20, 0)],
                         ids=["early-15s", "late-35s", "mid-batch-20s"])
def test_zombie_frozen_past_its_session_timeout_is_fenced(scenario, moment, freeze_s, pace_s):
    """3 workers; one is frozen (SIGSTOP) with the stream flowing, its partitions go to the others, then it
    is woken (SIGCONT) with the batch it had in flight: that batch must never commit.

    With `pace_s` 0 the whole stream is produced at once, so the workers chew through a backlog in large
    batches (thousands of records each) and the freeze lands inside one."""
    stream = scenario.stream()
    total = len(stream.envelopes)
    workers = [scenario.worker(ready=False) for _ in range(3)]
    for worker in workers:
        worker.wait_ready()
    zombie = workers[scenario.rng.randrange(3)]
    with scenario.feeder(stream, duration_s=pace_s) as feeder:
        produced = feeder.wait_produced(int(moment * total))
        zombie.process.send_signal(signal.SIGSTOP)
        scenario.note(f"SIGSTOP pid {zombie.pid} at {produced}/{total} produced, for {freeze_s} s")
        time.sleep(freeze_s)
        zombie.process.send_signal(signal.SIGCONT)
        scenario.note(f"SIGCONT pid {zombie.pid}")
    label = "in a backlog" if pace_s == 0 else f"at {moment:.0%}"
    scenario.finish(stream, f"3 workers, one frozen {freeze_s} s {label} then woken")
    assert all(w.alive for w in workers), "a worker exited"


def test_worker_added_and_one_removed_with_sigterm_mid_stream(scenario):
    """One worker, a second joins mid-stream, then the first leaves with SIGTERM mid-stream."""
    stream = scenario.stream()
    total = len(stream.envelopes)
    first = scenario.worker()
    with scenario.feeder(stream, duration_s=20) as feeder:
        feeder.wait_produced(int(0.3 * total))
        second = scenario.worker()
        scenario.note(f"pid {second.pid} joined")
        feeder.wait_produced(int(0.6 * total))
        first.process.send_signal(signal.SIGTERM)
        code = first.process.wait(timeout=60)
        scenario.note(f"pid {first.pid} left with SIGTERM (exit {code})")
    scenario.finish(stream, "worker added, then one removed with SIGTERM")
    assert second.alive


def test_worker_killed_while_another_joins(scenario):
    """Two workers; a third starts and, while the group rebalances for it, one of the two is killed -9."""
    stream = scenario.stream()
    total = len(stream.envelopes)
    first, second = scenario.worker(), scenario.worker()
    with scenario.feeder(stream, duration_s=20) as feeder:
        feeder.wait_produced(int(0.4 * total))
        third = scenario.worker(ready=False)
        time.sleep(2)  # the third is starting and joining its groups
        code = first.kill9()
        scenario.note(f"pid {first.pid} killed (exit {code}) while pid {third.pid} joined")
        third.wait_ready()
    scenario.finish(stream, "kill -9 of a worker while another joins")
    assert second.alive and third.alive

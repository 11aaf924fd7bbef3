"""Fault scenarios on workers: kill -9 at random moments of a stream, SIGTERM during a rebalance.

Each streams `EDUHUB_FAULT_EVENTS` events (default 20 000) of a fresh source through real workers with
one Kafka subscription, then proves from the topics themselves: every event in exactly one of canonical
or DLQ, every valid one exactly once at the subscriber, each key's order kept (tests/faults/harness.py).
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.faults.harness import say, wait_rebalancing

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KILLS = 5
# worker.shutdown_timeout_s (default 30 s) bounds a worker's exit after SIGTERM; this margin covers the
# process's own start of shutdown and teardown around it. A promise of the product, not a speed figure.
SHUTDOWN_MARGIN_S = 15


def test_kill_9_at_five_random_moments(scenario):
    """kill -9 at 5 random moments spread over one stream, each time restarted with the same instance_id."""
    stream = scenario.stream()
    total = len(stream.envelopes)
    # One moment in each fifth of the stream (5 %-95 %), at random within it: spread, and replayed by the seed.
    moments = [scenario.rng.uniform(0.05 + 0.9 * i / KILLS, 0.05 + 0.9 * (i + 1) / KILLS) for i in range(KILLS)]
    scenario.note("kill -9 at " + ", ".join(f"{m:.1%}" for m in moments) + " of the stream")
    instance = f"flt-kill-{scenario.source}"
    worker = scenario.worker(instance)
    with scenario.feeder(stream, duration_s=15) as feeder:
        for moment in moments:
            produced = feeder.wait_produced(int(moment * total))
            # The stream waits while no worker runs, so each kill lands in a flowing stream at its moment.
            feeder.pause()
            pid = worker.pid
            began = time.monotonic()
            assert worker.kill9() == -signal.SIGKILL
            worker = scenario.worker(instance)  # same instance_id: fences the killed one's transactions
            say(f"killed pid {pid} at {produced}/{total} produced; pid {worker.pid} ready "
                f"{time.monotonic() - began:.1f} s later")
            feeder.resume()
    scenario.finish(stream, f"kill -9 x{KILLS}, restart same instance_id")


def test_sigterm_during_rebalance(scenario):
    """Worker A runs with the stream flowing; B starts, the groups rebalance, A gets SIGTERM meanwhile:
    A exits within worker.shutdown_timeout_s, and B finishes the stream."""
    stream = scenario.stream()
    total = len(stream.envelopes)
    a = scenario.worker()
    with scenario.feeder(stream, duration_s=20) as feeder:
        feeder.wait_produced(int(0.3 * total))
        b = scenario.worker(ready=False)  # same config but instance_id and web port
        # B joins Faust's own group first, then its stages join theirs: while the stages' groups
        # rebalance (A must give up partitions or rejoin) and B is not ready yet, A is told to stop.
        seen = wait_rebalancing(scenario.bootstrap, ["eduhub-validate", "eduhub-route"], bound_s=90,
                                until=lambda: not b.alive)
        assert b.alive, f"worker B exited:\n{b.log_tail()}"
        scenario.note(f"SIGTERM to A during {seen[1]} of group {seen[0]}" if seen
                      else "no rebalancing state observed in 90 s; SIGTERM to A anyway")
        ready_b = b.get("/readyz") == 200
        bound_s = a.config.worker.shutdown_timeout_s + SHUTDOWN_MARGIN_S
        began = time.monotonic()
        a.process.send_signal(signal.SIGTERM)
        try:
            code = a.process.wait(timeout=bound_s + 30)
        except subprocess.TimeoutExpired:
            code = None
        exit_s = time.monotonic() - began
        scenario.note(f"A exited {exit_s:.1f} s after SIGTERM with {code}" if code is not None
                      else f"A still running {exit_s:.0f} s after SIGTERM")
        b.wait_ready()
    final = scenario.finish(stream, "SIGTERM during rebalance, B takes over", check=False)
    assert seen is not None, "the groups never showed a rebalance after B started"
    assert not ready_b, "B was already ready when A got SIGTERM: not during the rebalance"
    assert code is not None and exit_s <= bound_s, (
        f"worker A exited {exit_s:.1f} s after SIGTERM (code {code}), bound {bound_s:.0f} s:\n{a.log_tail()}")
    final.check()

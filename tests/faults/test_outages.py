"""Fault scenarios on the real parts: the broker stopped mid-stream, the registry stopped mid-stream, and a
worker started while the registry is down.

The local stack's broker or registry is stopped by its recorded pid and started again with the same
ports and data (`LocalStack.stop_part` / `start_part`); the `scenario` fixture starts again whatever a
failed scenario left stopped, since the rest of the session needs both.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import say
from tests.kafka_helpers import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BROKER_DOWN_S = 15
REGISTRY_DOWN_S = 10


def test_broker_stopped_mid_stream_worker_rides_it_out(scenario):
    """SIGTERM to the broker mid-stream, ~15 s down, started again: the same worker process goes on."""
    stream = scenario.stream()
    total = len(stream.envelopes)
    worker = scenario.worker()
    pid = worker.pid
    at = scenario.rng.uniform(0.3, 0.6)
    with scenario.feeder(stream, duration_s=20) as feeder:
        produced = feeder.wait_produced(int(at * total))
        scenario.stack.stop_part("kafka", echo=say)
        began = time.monotonic()
        try:
            time.sleep(BROKER_DOWN_S)
            alive_while_down = worker.alive
        finally:
            scenario.stack.start_part("kafka", echo=say)
        scenario.note(f"broker stopped at {produced}/{total} produced, back after {time.monotonic() - began:.0f} s")
        # The registry (kafkasql) keeps running through it; it must answer again for the rest of the session.
        assert wait_until(lambda: scenario.stack.answers("registry"), bound_s=60), \
            "the registry did not answer after the broker came back"
        assert alive_while_down, f"the worker exited while the broker was down:\n{worker.log_tail()}"
        worker.wait_ready(bound_s=120)
    final = scenario.finish(stream, f"broker down {BROKER_DOWN_S} s mid-stream", check=False)
    assert worker.alive and worker.pid == pid, f"the worker did not ride out the outage:\n{worker.log_tail()}"
    final.check()


def test_registry_stopped_mid_stream(scenario):
    """The registry stopped mid-stream and started again: the worker stays up (/healthz 200, /readyz 503
    while it is down) and processes everything once it is back."""
    stream = scenario.stream()
    total = len(stream.envelopes)
    worker = scenario.worker()
    pid = worker.pid
    at = scenario.rng.uniform(0.3, 0.6)
    with scenario.feeder(stream, duration_s=20) as feeder:
        produced = feeder.wait_produced(int(at * total))
        scenario.stack.stop_part("registry", echo=say)
        try:
            not_ready = wait_until(lambda: worker.get("/readyz") == 503, bound_s=REGISTRY_DOWN_S, interval_s=0.5)
            time.sleep(max(0.0, REGISTRY_DOWN_S - 1))
            health, ready, alive = worker.get("/healthz"), worker.get("/readyz"), worker.alive
        finally:
            scenario.stack.start_part("registry", echo=say)
        scenario.note(f"registry stopped at {produced}/{total} produced; while down: alive {alive}, "
                      f"/healthz {health}, /readyz {ready}")
        assert alive, f"the worker exited while the registry was down:\n{worker.log_tail()}"
        worker.wait_ready(bound_s=120)
    final = scenario.finish(stream, f"registry down ~{REGISTRY_DOWN_S} s mid-stream", check=False)
    assert worker.alive and worker.pid == pid, f"the worker exited:\n{worker.log_tail()}"
    assert health == 200, f"/healthz answered {health} while the registry was down"
    assert not_ready and ready == 503, f"/readyz answered {ready} while the registry was down"
    final.check()


def test_worker_started_while_registry_down(scenario):
    """A worker started while the registry is down does not exit: /healthz 200, /readyz 503 until the
    registry is back; then it gets ready and processes the whole stream, which waited in Kafka."""
    stream = scenario.stream()
    scenario.stack.stop_part("registry", echo=say)
    try:
        with scenario.feeder(stream, duration_s=0):
            pass  # the whole stream waits in ingest.<source>
        worker = scenario.worker(ready=False)
        pid = worker.pid
        # The web server comes up while the stages wait for the registry.
        healthy = wait_until(lambda: not worker.alive or worker.get("/healthz") == 200, bound_s=60, interval_s=0.5)
        assert worker.alive, f"the worker exited while the registry was down:\n{worker.log_tail()}"
        assert healthy, f"/healthz never answered 200 while the registry was down:\n{worker.log_tail()}"
        time.sleep(REGISTRY_DOWN_S)  # it keeps waiting, it does not give up
        health, ready = worker.get("/healthz"), worker.get("/readyz")
        assert worker.alive, f"the worker exited while the registry was down:\n{worker.log_tail()}"
        scenario.note(f"worker started with the registry down: /healthz {health}, /readyz {ready}")
        assert health == 200, f"/healthz answered {health} while the registry was down"
        assert ready == 503, f"/readyz answered {ready} while the registry was down"
    finally:
        scenario.stack.start_part("registry", echo=say)
    worker.wait_ready(bound_s=120)
    final = scenario.finish(stream, "worker started while registry down", check=False)
    assert worker.alive and worker.pid == pid, f"the worker exited:\n{worker.log_tail()}"
    final.check()

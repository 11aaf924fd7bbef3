"""The main job on the embedded default (`make run`): local parts, a worker, a demo producer and subscriber."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.simulate import ExamRegistrationSimulator
from hub.config import HubConfig
from hub.local import LocalStack
from hub.registry import SchemaRegistry
from hub.schemas import to_json
from hub.topics import canonical_topic, ensure_topics, ingest_topic

DEMO_SOURCE = "exam-reg"
ENTITY = "exam.registration"


async def produce_registrations(bootstrap: str, rate: float, stop: asyncio.Event, *, bad_ratio: float = 0.05,
                                seed: int | None = None) -> int:
    """Publish realistic exam registrations to ingest.exam-reg at `rate` per second until stopped."""
    import json

    simulator = ExamRegistrationSimulator(seed=seed, source=DEMO_SOURCE, bad_ratio=bad_ratio)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            envelope = simulator.envelope()
            await producer.send(ingest_topic(DEMO_SOURCE), json.dumps(envelope, ensure_ascii=False).encode(),
                                key=str(envelope.get("key", "")).encode())
            sent += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=1 / rate)
            except asyncio.TimeoutError:
                pass
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def print_registrations(bootstrap: str, registry_url: str, stop: asyncio.Event,
                              echo: Callable[[str], None], started: float) -> int:
    """A downstream app: read edu.exam.registration with a plain Kafka consumer and print each record."""
    consumer = AIOKafkaConsumer(canonical_topic(ENTITY), bootstrap_servers=bootstrap, group_id="demo-subscriber",
                                isolation_level="read_committed", auto_offset_reset="latest")
    await consumer.start()
    received = 0
    try:
        async with SchemaRegistry(registry_url) as registry:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for message in messages:
                        if message.value is None:
                            continue
                        record = to_json(await registry.decode(message.value))
                        received += 1
                        echo(f"[+{time.monotonic() - started:5.1f}s] subscriber received {record['registration_id']}: "
                             f"{record['full_name']} · {record['candidate_type']} · "
                             f"{' '.join(record['subjects'])} · {record['status']}")
    finally:
        await consumer.stop()
    return received


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the worker was not ready within {timeout_s:.0f} s")


def run_demo(config: HubConfig, config_path: Path | None, *, rate: float = 5.0,
             echo: Callable[[str], None] = print) -> None:
    """Start everything, print the URLs, stream the demo until Ctrl-C, then stop what we started."""
    started = time.monotonic()
    if DEMO_SOURCE not in config.source_ids:
        raise RuntimeError(f"the demo publishes as source {DEMO_SOURCE!r}: declare it under `sources` in hub.yaml")
    stack = LocalStack(config.local)
    before = {name: part["pid"] for name, part in stack.status().items() if part["running"]}
    parts = stack.up(echo=echo)
    ours_local = any(before.get(name) != part.pid for name, part in parts.items())
    bootstrap, registry_url = stack.bootstrap_servers, stack.registry_url
    env = {**os.environ, "EDUHUB_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "EDUHUB_REGISTRY_URL": registry_url}
    if config_path is not None:
        env["EDUHUB_CONFIG"] = str(config_path)
    logs = Path(config.local.state_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    worker_log = logs / "worker.log"
    with worker_log.open("ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "hub", "worker"], stdout=log, stderr=subprocess.STDOUT,
                                  env=env, start_new_session=True)
    web = f"http://{config.worker.web_host}:{config.worker.web_port}"
    try:
        _wait_ready(web, worker)
        echo(f"worker    {web}/metrics  {web}/readyz  pid {worker.pid}  log {worker_log}")
        echo(f"ready after {time.monotonic() - started:.1f} s; streaming exam registrations (Ctrl-C stops everything)")
        asyncio.run(_stream(bootstrap, registry_url, config, rate, echo, started))
    except KeyboardInterrupt:
        pass
    finally:
        echo("stopping…")
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        echo(f"stopped worker (pid {worker.pid})")
        if ours_local:
            stack.down(echo=echo)


async def _stream(bootstrap: str, registry_url: str, config: HubConfig, rate: float,
                  echo: Callable[[str], None], started: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(bootstrap, [(ingest_topic(DEMO_SOURCE), config.kafka.ingest_partitions)],
                        config.kafka.replication_factor)
    subscriber = asyncio.create_task(print_registrations(bootstrap, registry_url, stop, echo, started))
    await asyncio.sleep(1)  # let the subscriber join before the first event
    producer = asyncio.create_task(produce_registrations(bootstrap, rate, stop))
    sent, received = await asyncio.gather(producer, subscriber)
    echo(f"demo producer sent {sent} envelopes; subscriber received {received} registrations")

"""`eduhub bench scale`: end-to-end throughput of 1, 2, 3… worker processes sharing one input's partitions."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from hub.contract.topics import ingest_topic
from hub.core.config import HubConfig
from hub.kafka.admin import partitions_of
from hub.ops.acl import admin_config
from hub.ops.bench_all import Bench, BenchOptions
from hub.ops.bench_setup import ENTITY, FILL_SEED, TopicPlan, canonical_records, delete_topics, make_events, \
    measured_subscriber

# Members of both groups, then this long for their partitions' state to be restored, before the input is sent.
SETTLE_S = 3.0
JOIN_TIMEOUT_S = 180.0


def _members(config: HubConfig, groups: list[str]) -> int:
    """The fewest members among `groups` (0 while one is unknown or rebalancing). Through librdkafka: aiokafka's
    DescribeGroups is a version Kafka 4 no longer serves."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    password = config.kafka.password.get_secret_value() if config.kafka.password else None
    settings, _ = admin_config(config, config.kafka.username, password)
    admin = AdminClient({**settings, "log_level": 0})  # kept while its futures are awaited: they die with it
    futures = admin.describe_consumer_groups(groups, request_timeout=10)
    counts = []
    for future in futures.values():
        try:
            group = future.result()
        except Exception:  # noqa: BLE001 — not there yet
            return 0
        counts.append(len(group.members) if group.state == ConsumerGroupState.STABLE else 0)
    return min(counts)


async def _read_all(bench: Bench, topic: str, expected: int, timeout_s: float) -> float | None:
    """Read `topic` (read_committed) until `expected` records arrived; perf_counter() of the last, or None."""
    consumer = bench.kafka.consumer(group_id=None, isolation_level="read_committed", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
    await bench.kafka.start(consumer)
    seen, last = 0, None
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(topic, p) for p in sorted(await partitions_of(bench.kafka, topic))])
        while seen < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            if batches:
                seen += sum(len(m) for m in batches.values())
                last = time.perf_counter()
    finally:
        await consumer.stop()
    return last if seen >= expected else None


async def _one(bench: Bench, workers: int, events: list[Any], valid: int, subscriber_topic: str) -> dict[str, Any]:
    """`workers` e2e processes in one group on a fresh input; the input sent once they all joined; timed from
    the first record sent to the last routed record read."""
    source = f"{bench.id}-w{workers}"
    prefix = f"{source}."
    await TopicPlan(bench.config).row("e2e", source=source, prefix=prefix, catalogue=bench.catalogue,
                                      policies=bench.policies).create(bench.kafka)
    group = f"{bench.id}-scale{workers}"
    processes = []
    for n in range(workers):
        spec = bench.spec("e2e", source=source, prefix=prefix, count=0, tag=f"scale{workers}-{n}")
        spec["group"] = group
        processes.append(await bench.children.start("e2e", spec, f"scale{workers}-{n}"))
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while await asyncio.to_thread(_members, bench.config, [f"{group}-validate", f"{group}-route"]) < workers:
        if any(p.returncode is not None for p in processes) or time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not all join their groups (logs in {bench.workdir})"
                               f"{bench.children.tail(processes[0])}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(SETTLE_S)
    out_topic = prefix + subscriber_topic
    reading = asyncio.create_task(_read_all(bench, out_topic, valid, 120 + len(events) / 100))
    started = time.perf_counter()
    await bench.produce(ingest_topic(source), [(e.key, e.value, None) for e in events])
    last = await reading
    results = [await bench.children.stop(p) for p in processes]
    if last is None:
        raise RuntimeError(f"{workers} workers: not every valid event reached {out_topic} (logs in {bench.workdir})")
    return {"workers": workers, "events": len(events), "seconds": round(last - started, 3),
            "events_per_s": round(len(events) / (last - started), 1),
            "rss_peak_mb": [round((r or {}).get("rss_peak_kb", 0) / 1024, 1) for r in results]}


async def run_scale(config: HubConfig, config_path: Path | None, counts: list[int], events: int,
                    echo: Callable[[str], None]) -> list[dict[str, Any]]:
    """End-to-end events/s of each count of workers (validate + route, as `eduhub worker` runs them), one after
    another on this machine, each on its own copy of the same input."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    bench = Bench(config, config_path, BenchOptions(events=events, rows=("e2e",), latency=False), echo)
    subscriber_topic = measured_subscriber(bench.policies).topic(ENTITY)  # every valid event reaches it
    figures = []
    failed = True
    try:
        await bench.prepare()
        for workers in counts:
            source = f"{bench.id}-w{workers}"
            input_events = make_events(events, 0.05, source, FILL_SEED)
            valid = len(canonical_records(input_events, source, bench.catalogue, bench.schema_ids,
                                          config.exam.council_code))
            echo(f"{workers} worker(s): {events} events over {config.kafka.ingest_partitions} partitions…")
            figure = await _one(bench, workers, input_events, valid, subscriber_topic)
            echo(f"  {figure['events_per_s']:,.0f} events/s ({figure['seconds']:.2f} s)")
            figures.append(figure)
        failed = False
    finally:
        await bench.children.stop_all()
        await delete_topics(bench.kafka, bench.id)
        if not failed:  # else its folder keeps the workers' logs, which the error names
            shutil.rmtree(bench.workdir, ignore_errors=True)
    return figures

"""The bench's hub rows, one a process: `python -m hub.ops.bench_rows plain|validate|route|e2e --spec '<json>'`.

The spec (a JSON object) has the keys of hub/ops/bench_peers.py — "bootstrap", "input" (the ingest topic; the
route row reads output_prefix + the canonical topics instead), "output_prefix", "source", "schema_ids",
"group", "count" (N > 0: stop after N input records; 0: run until SIGTERM/SIGINT), "state_dir" — and the hub's
own: "config" (the hub.yaml path, or null for the defaults and the environment: Kafka security, registry,
worker settings, subscriptions) and, for the routed rows, "route_schema_ids" ({"<subscriber>|<entity>": id}).
The routing master key comes from the environment (routing.key_env), never from the command line.

On exit the row prints one JSON line on stdout: {"row", "events", "seconds", "rss_kb", "rss_peak_kb"} (plus
"valid" for the rows that validate). "seconds" runs from the first batch read to the last one committed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import orjson

from hub.contract.envelope import HEADER_EVENT_ID
from hub.contract.schemas import Catalogue
from hub.contract.topics import canonical_topic
from hub.core.config import HubConfig, load_config
from hub.core.metrics import HubMetrics
from hub.kafka.clients import KafkaClients
from hub.kafka.stage import TransactionalStage
from hub.ops.bench_setup import ENTITY, HUB_ROWS, bench_policies, changelog, memory, open_registry
from hub.routing.audit import audit_key
from hub.stages.dedup import DedupWindow
from hub.stages.route import RouteStage
from hub.stages.validate import ValidateStage, Validator


class Row:
    """One row's run: the spec, its config and Kafka connection, and the stop signal."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.count: int = spec["count"]
        self.prefix: str = spec["output_prefix"]
        self.source: str = spec["source"]
        self.config: HubConfig = load_config(spec.get("config"))
        self.kafka = KafkaClients.from_config(self.config.kafka)
        self.catalogue = Catalogue.load()
        self.metrics = HubMetrics()
        self.stop = asyncio.Event()
        self.result: dict[str, Any] = {"row": name, "events": 0, "seconds": 0.0}
        self.windows: list[DedupWindow] = []

    def batch_options(self) -> dict[str, int]:
        worker = self.config.worker
        return {"batch_max_records": worker.batch_max_records, "batch_max_wait_ms": worker.batch_max_wait_ms}

    def valid(self) -> int:
        value = self.metrics.registry.get_sample_value("eduhub_events_valid_total",
                                                       {"source": self.source, "entity": ENTITY})
        return int(value or 0)

    def validate_stage(self, group: str) -> ValidateStage:
        """The worker's validate stage (dedup window, DLQ, transactions), writing to prefixed topics."""
        dedup = None
        window = self.config.worker.dedup_window_s
        if window:  # its local store in the row's own temporary folder, closed when the row ends
            dedup = DedupWindow(changelog(self.prefix), window, state_dir=Path(self.spec["state_dir"]) / "dedup")
            self.windows.append(dedup)
        return ValidateStage(
            validator=Validator(self.catalogue, {self.source}, council_code=self.config.exam.council_code),
            schema_ids=self.spec["schema_ids"], kafka=self.kafka, sources=[self.source], group_id=group,
            transactional_prefix=group, metrics=self.metrics, topic_prefix=self.prefix, dedup=dedup,
            **self.batch_options())

    def route_stage(self, group: str, registry: Any) -> RouteStage:
        """The worker's route stage to hub.yaml's subscribers (HTTP ones delivered by Kafka here), prefixed."""
        key = os.environ.get(self.config.routing.key_env, "").encode()
        ids = {tuple(name.split("|", 1)): value for name, value in self.spec["route_schema_ids"].items()}
        return RouteStage(
            catalogue=self.catalogue, policies=bench_policies(self.config, self.catalogue, key), registry=registry,
            schema_ids=ids, kafka=self.kafka, group_id=group, transactional_prefix=group, metrics=self.metrics,
            audit_key=audit_key(key), canonical_ids=self.spec["schema_ids"], topic_prefix=self.prefix,
            **self.batch_options())

    async def run_stages(self, stages: list[TransactionalStage], done: Callable[[], bool]) -> float | None:
        """Run the stages until `done()` (checked every 5 ms) or the stop signal; perf_counter() of the end."""
        runners: list[asyncio.Task] = []
        try:
            for stage in stages:
                await stage.start()
                runners.append(asyncio.create_task(stage.run()))
            while not self.stop.is_set():
                for runner in runners:
                    if runner.done():
                        runner.result()  # raises what stopped the stage
                        raise RuntimeError("a stage stopped on its own")
                if self.count and done():
                    return time.perf_counter()
                await asyncio.sleep(0.005)
            return None
        finally:
            for stage in stages:
                stage.request_stop()
            for stage in stages:
                await stage.stop()
            await asyncio.gather(*runners, return_exceptions=True)
            for window in self.windows:
                window.close()

    def timed(self, events: int, first: float | None, end: float | None) -> None:
        end = end if end is not None else time.perf_counter()
        self.result.update(events=events, seconds=round(end - first, 6) if first is not None else 0.0)


async def plain(row: Row) -> None:
    """The floor to compare with: batch consume, parse (orjson, as the hub's read_json does), fastavro encode,
    send without awaiting each (no validation, no DLQ, no transactions); the output carries the event id
    header, as every row's does."""
    parsed = row.catalogue[ENTITY].parsed
    out_topic = row.prefix + canonical_topic(ENTITY)
    consumer = row.kafka.consumer(row.spec["input"], group_id=row.spec["group"], auto_offset_reset="earliest",
                                  enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = row.kafka.producer(linger_ms=5, max_batch_size=512 * 1024)
    await row.kafka.start(consumer)
    await row.kafka.start(producer)
    done = 0
    started = None
    try:
        while not row.stop.is_set() and (not row.count or done < row.count):
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            if started is None and batches:
                started = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    doc = orjson.loads(message.value)
                    buffer = io.BytesIO()
                    try:
                        fastavro.schemaless_writer(buffer, parsed, doc.get("data"))
                    except Exception:  # the plain loop has no DLQ: it sends what it could encode
                        pass
                    await producer.send(out_topic, buffer.getvalue(), key=message.key,
                                        headers=[(HEADER_EVENT_ID, str(doc.get("event_id")).encode())])
                    done += 1
            if batches:
                await consumer.commit()
        await producer.flush()
        row.timed(done, started, None)
    finally:
        await producer.stop()
        await consumer.stop()


async def validate(row: Row) -> None:
    stage = row.validate_stage(row.spec["group"])
    end = await row.run_stages([stage], lambda: stage.processed >= row.count)
    row.timed(stage.processed, stage.first_batch_at, end)
    row.result["valid"] = row.valid()


async def route(row: Row) -> None:
    async with open_registry(row.config) as registry:
        stage = row.route_stage(row.spec["group"], registry)
        end = await row.run_stages([stage], lambda: stage.processed >= row.count)
    row.timed(stage.processed, stage.first_batch_at, end)


async def e2e(row: Row) -> None:
    """Validate and route in one process, as a worker runs them: ingest.* → edu.* → sub.*."""
    group = row.spec["group"]
    async with open_registry(row.config) as registry:
        first = row.validate_stage(f"{group}-validate")
        second = row.route_stage(f"{group}-route", registry)

        def done() -> bool:
            return first.processed >= row.count and second.processed >= row.valid()

        end = await row.run_stages([first, second], done)
    row.timed(first.processed, first.first_batch_at, end)
    row.result.update(valid=row.valid(), routed=second.processed)


RUNS = {"plain": plain, "validate": validate, "route": route, "e2e": e2e}


async def run(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    row = Row(name, spec)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, row.stop.set)
    await RUNS[name](row)
    status = memory()
    return {**row.result, "rss_kb": status.get("VmRSS", 0), "rss_peak_kb": status.get("VmHWM", 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.ops.bench_rows", description="Run one hub row of the bench.")
    parser.add_argument("row", choices=HUB_ROWS)
    parser.add_argument("--spec", required=True, help="the run's spec as a JSON object (see the module's docstring)")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = asyncio.run(run(args.row, spec))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

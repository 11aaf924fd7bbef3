"""`eduhub bench all`: six rows on the same input, each in its own process: events/s, latency at a fixed rate, peak RSS."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.contract.schemas import Catalogue
from hub.contract.topics import canonical_topic, ingest_topic
from hub.core.config import HubConfig
from hub.kafka.clients import KafkaClients
from hub.ops.bench_latency import Paced, measure
from hub.ops.bench_peers import QUIX_LATENCY_COMMIT_S
from hub.ops.bench_procs import Children, RowFailed
from hub.ops.bench_report import build_report
from hub.ops.bench_setup import (ENTITY, FILL_SEED, PEER_ROWS, ROUTED, ROWS, Event, TopicPlan, bench_policies,
                                 canonical_records, delete_topics, make_events, master_key, open_registry,
                                 output_topic, register_projections)
from hub.runtime.worker import prepare_schemas

INSTALL_HINT = "not installed: pip install 'eduhub[bench]'"
PRIMING = 800  # priming records a latency run may use before the row's first output (READY_TIMEOUT_S)


@dataclass
class BenchOptions:
    events: int = 20_000
    bad_ratio: float = 0.05
    latency_seconds: float = 20.0
    rate: float | None = None  # the latency phase's rate; None: half of the e2e row's events/s
    rows: tuple[str, ...] = ROWS
    keep_topics: bool = False
    latency: bool = True  # False: throughput only (`eduhub bench stage`)

    @property
    def warmup_s(self) -> float:
        return min(3.0, self.latency_seconds / 4)


@dataclass
class RowRun:
    """One row's figures: throughput (and its process's peak RSS), then latency at the fixed rate."""

    row: str
    status: str = "ok"  # or "not installed: …", "failed: …", "skipped: …"
    throughput: dict[str, Any] = field(default_factory=dict)  # the row's result line
    latency: dict[str, Any] | None = None
    latency_result: dict[str, Any] | None = None  # the row's result line of the latency run
    latency_error: str | None = None


def unavailable(row: str, config: HubConfig) -> str | None:
    """Why a row cannot run here, or None."""
    if row in PEER_ROWS:
        if importlib.util.find_spec("hub.ops.bench_peers") is None:
            return "skipped: hub/ops/bench_peers.py is missing"
        if row == "quix" and importlib.util.find_spec("quixstreams") is None:
            return INSTALL_HINT
        if config.kafka.security_protocol != "PLAINTEXT":
            return "skipped: the peers connect with PLAINTEXT only"
    return None


class Bench:
    """One `bench all` run: its unique topic names, its row processes and what they measured."""

    def __init__(self, config: HubConfig, config_path: Path | None, options: BenchOptions,
                 echo: Callable[[str], None]) -> None:
        self.config = config
        self.config_path = str(config_path.resolve()) if config_path is not None else None
        self.options = options
        self.echo = echo
        self.kafka = KafkaClients.from_config(config.kafka)
        self.id = f"bench-{uuid.uuid4().hex[:8]}"
        self.catalogue = Catalogue.load()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"eduhub-{self.id}-"))
        key_name, key = master_key(config)
        self.key = key.encode()
        self.children = Children(self.workdir, {**os.environ, key_name: key, "PYTHONUNBUFFERED": "1"})
        self.policies = (bench_policies(config, self.catalogue, self.key)
                         if any(r in ROUTED for r in options.rows) else [])
        self.schema_ids: dict[str, int] = {}
        self.route_ids: dict[str, int] = {}
        self.runs = {row: RowRun(row) for row in options.rows}
        self.rate: float | None = None
        self.filled: dict[str, float] = {}

    def spec(self, row: str, *, source: str, prefix: str, count: int, tag: str) -> dict[str, Any]:
        state_dir = self.workdir / f"{tag}-{row}-state"
        state_dir.mkdir(exist_ok=True)
        return {"bootstrap": self.config.kafka.bootstrap_servers, "input": ingest_topic(source),
                "output_prefix": prefix, "source": source, "schema_ids": self.schema_ids,
                "group": f"{self.id}-{tag}-{row}", "count": count, "state_dir": str(state_dir),
                "config": self.config_path, "route_schema_ids": self.route_ids}

    async def prepare(self) -> None:
        async with open_registry(self.config) as registry:
            self.schema_ids = await prepare_schemas(registry, self.catalogue, self.config.registry.auto_register)
            if self.policies:
                self.route_ids = await register_projections(self.config, registry, self.policies)

    async def produce(self, topic: str, records: list[tuple[bytes, bytes, list | None]]) -> float:
        """Send the records with an idempotent producer; returns events/s."""
        producer = self.kafka.producer(enable_idempotence=True, linger_ms=20, max_batch_size=1024 * 1024)
        await self.kafka.start(producer)
        started = time.perf_counter()
        try:
            for key, value, headers in records:
                await producer.send(topic, value, key=key, headers=headers)
            await producer.flush()
        finally:
            await producer.stop()
        return len(records) / (time.perf_counter() - started)

    async def throughput(self) -> None:
        """Fill the input once, then run each row over it, one process after another."""
        options, source = self.options, self.id
        rows = [r for r in options.rows if self.runs[r].status == "ok"]
        plan = TopicPlan(self.config)
        for row in rows:
            plan.row(row, source=source, prefix=f"{source}.{row}.", catalogue=self.catalogue, policies=self.policies)
        self.echo(f"creating {len(plan.topics)} topics for the throughput runs…")
        await plan.create(self.kafka)
        events = make_events(options.events, options.bad_ratio, source, FILL_SEED)
        if any(row != "route" for row in rows):
            self.echo(f"filling {ingest_topic(source)} with {len(events)} exam registrations "
                      f"({options.bad_ratio:.0%} invalid)…")
            self.filled["ingest"] = await self.produce(ingest_topic(source), [(e.key, e.value, None) for e in events])
        route_count = 0
        if "route" in rows:
            records = canonical_records(events, source, self.catalogue, self.schema_ids,
                                        self.config.exam.council_code)
            route_count = len(records)
            self.echo(f"filling {source}.route.{canonical_topic(ENTITY)} with their {route_count} canonical records…")
            self.filled["canonical"] = await self.produce(f"{source}.route.{canonical_topic(ENTITY)}",
                                                          [(e.key, value, h) for e, value, h in records])
        timeout_s = 120 + options.events / 200
        for row in rows:
            run = self.runs[row]
            count = route_count if row == "route" else options.events
            self.echo(f"throughput: {row}…")
            process = await self.children.start(row, self.spec(row, source=source, prefix=f"{source}.{row}.",
                                                               count=count, tag="rate"), "rate")
            try:
                run.throughput = await self.children.finish(process, timeout_s)
            except RowFailed as exc:
                run.status = f"failed: {exc}"
                self.echo(f"  {row} failed: {exc}")
                continue
            seconds = run.throughput.get("seconds") or 0
            rate = run.throughput.get("events", 0) / seconds if seconds else 0.0
            self.echo(f"  {run.throughput.get('events')} events in {seconds:.2f} s = {rate:,.0f}/s, peak RSS "
                      f"{run.throughput.get('rss_peak_kb', 0) / 1024:.0f} MB")

    def latency_rate(self) -> float | None:
        if self.options.rate:
            return self.options.rate
        e2e = self.runs.get("e2e")
        if e2e is None or e2e.status != "ok" or not e2e.throughput.get("seconds"):
            return None
        return e2e.throughput["events"] / e2e.throughput["seconds"] / 2

    async def latencies(self) -> None:
        """Each row again, fresh topics and group, fed at the fixed rate by this process; its output matched."""
        options = self.options
        self.rate = rate = self.latency_rate()
        rows = [r for r in options.rows if self.runs[r].status == "ok"]
        if rate is None or not rows:
            return
        total = max(1, int(rate * options.latency_seconds))
        placeholder = f"{self.id}-lat"
        valid_share = max(1e-3, 1 - options.bad_ratio)
        self.echo(f"latency: {total} fresh events per row at {rate:,.0f}/s for {options.latency_seconds:g} s "
                  f"(first {options.warmup_s:g} s are warm-up)…")
        events = make_events(min(int(total / valid_share) + 50, 20 * total), options.bad_ratio, placeholder, None)
        priming = make_events(PRIMING, 0.0, placeholder, None)
        for row in rows:
            source, prefix = f"{self.id}-{row}", f"{self.id}.lat-{row}."
            if row == "route":
                send_topic = prefix + canonical_topic(ENTITY)
                records = self.canonical(events, placeholder)[:total]
                primers = self.canonical(priming, placeholder)
            else:
                send_topic = ingest_topic(source)
                records = [self.retag(e, placeholder, source, row == "plain") for e in events[:total]]
                primers = [self.retag(e, placeholder, source, True) for e in priming]
            if not records:
                self.runs[row].latency_error = "no input records (every event invalid)"
                continue
            await TopicPlan(self.config).row(row, source=source, prefix=prefix, catalogue=self.catalogue,
                                             policies=self.policies).create(self.kafka)
            self.echo(f"latency: {row}…")
            await self.latency(row, source, prefix, send_topic, records, primers, rate)

    async def latency(self, row: str, source: str, prefix: str, send_topic: str, records: list[Paced],
                      primers: list[Paced], rate: float) -> None:
        run = self.runs[row]
        spec = self.spec(row, source=source, prefix=prefix, count=0, tag="lat")
        spec["commit_interval"] = QUIX_LATENCY_COMMIT_S  # Quix's output is visible once committed (default 5 s)
        process = await self.children.start(row, spec, "lat")
        try:
            run.latency = await measure(
                self.kafka, send_topic=send_topic, out_topic=output_topic(row, prefix, self.policies),
                records=records, priming=primers, rate=rate, seconds=self.options.latency_seconds,
                warmup_s=self.options.warmup_s, alive=lambda: process.returncode is None)
            figures = run.latency
            self.echo(f"  p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, p99 {figures['p99_ms']} ms "
                      f"({figures['matched']} of {figures['expected']} matched, output {figures['output_rate']:,.0f}/s"
                      f"{', saturated' if figures['saturated'] else ''})")
        except Exception as exc:  # noqa: BLE001 — one row's failure leaves the others' figures standing
            run.latency_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) else str(exc)
            self.echo(f"  {row} latency failed: {exc}")
        finally:
            run.latency_result = await self.children.stop(process)
        if run.latency_error and run.latency_error.startswith("the row's process exited"):
            run.latency_error += self.children.tail(process)

    def canonical(self, events: list[Event], source: str) -> list[Paced]:
        records = canonical_records(events, source, self.catalogue, self.schema_ids, self.config.exam.council_code)
        return [Paced(e.event_id, e.key, value, headers, True) for e, value, headers in records]

    @staticmethod
    def retag(event: Event, placeholder: str, source: str, expected: bool) -> Paced:
        """The event as from `source` (the validate stage checks that it matches the topic's source)."""
        value = event.value.replace(f'"{placeholder}"'.encode(), f'"{source}"'.encode())
        return Paced(event.event_id, event.key, value, None, expected or event.valid)

    async def close(self, failed: bool) -> list[str]:
        """Stop every row process; delete the bench's topics (unless kept) and its work folder (unless a row
        failed: its logs are there)."""
        await self.children.stop_all()
        deleted = []
        if not self.options.keep_topics:
            try:
                deleted = await delete_topics(self.kafka, self.id)
            except Exception as exc:  # noqa: BLE001 — the figures are still worth printing
                self.echo(f"could not delete the bench's topics ({self.id}*): {exc}")
        if not failed or not self.children.logs:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return deleted


async def run_all(config: HubConfig, config_path: Path | None, options: BenchOptions,
                  echo: Callable[[str], None]) -> dict[str, Any]:
    """Run the bench; returns its report (hub/ops/bench_report.py: figures, machine, parameters, targets)."""
    unknown = [r for r in options.rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {', '.join(unknown)}: choose from {', '.join(ROWS)}")
    options.rows = tuple(r for r in ROWS if r in options.rows)  # the table's order, each row once
    if not options.rows:
        raise ValueError(f"no row chosen: choose from {', '.join(ROWS)}")
    # aiokafka warns of every leader it has not met yet on the fresh topics: noise among the bench's lines
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    bench = Bench(config, config_path, options, echo)
    failed = True
    # SIGTERM ends the bench as Ctrl-C does (asyncio.run cancels on SIGINT): the finally below stops its rows.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        for row, run in bench.runs.items():
            reason = unavailable(row, config)
            if reason is not None:
                run.status = reason
                echo(f"{row}: {reason}")
        await bench.prepare()
        await bench.throughput()
        if options.latency:
            await bench.latencies()
        failed = any(r.status.startswith("failed") or r.latency_error for r in bench.runs.values())
    except asyncio.CancelledError:
        failed = False  # interrupted: no log is worth keeping
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        deleted = await bench.close(failed)
    report = build_report(bench, deleted)
    if failed:
        report["logs"] = str(bench.workdir)
    return report


"""Envelopes and records: `eduhub validate`, `simulate`, `ingest` and `tail` (registered in __init__.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer

from hub.ops.cli.common import _config, _fail, _kafka, _progress


def validate(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Envelopes, one JSON object per line."),
    as_json: bool = typer.Option(False, "--json", help="One JSON result per line (the public shape)."),
) -> None:
    """Validate envelopes offline (no broker, no registry); exit 0 all valid, 1 any invalid, 2 usage error."""
    from hub.contract.schemas import Catalogue, dumps
    from hub.stages.validate import Validator, report

    config = _config()
    validator = Validator(Catalogue.load(), sources=None, council_code=config.exam.council_code)
    invalid = 0
    pending: list[str] = []  # written in blocks: one write per line costs more than validating it
    with file.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            result = report(validator.validate(line))
            invalid += not result["valid"]
            if as_json:
                pending.append(dumps(result))
            elif result["valid"]:
                pending.append(f"line {number}: valid   {result['topic']} key={result['key']}")
            else:
                pending.extend(f"line {number}: INVALID {error['field'] or '(envelope)'} [{error['rule']}] "
                               f"{error['message']}" for error in result["errors"])
            if len(pending) >= 2000:
                sys.stdout.write("\n".join(pending) + "\n")
                pending.clear()
    if pending:
        sys.stdout.write("\n".join(pending) + "\n")
    if invalid:
        raise typer.Exit(1)


def simulate(
    count: int = typer.Option(100, "--count", "-n", min=1, help="Envelopes to write."),
    bad_ratio: float = typer.Option(0.0, "--bad-ratio", min=0.0, max=1.0, help="Share of deliberately bad ones."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same output."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
) -> None:
    """Write realistic exam registration envelopes (JSONL) as the exam registration system sends them."""
    from hub.demo.simulators import ExamRegistrationSimulator

    simulator = ExamRegistrationSimulator(seed=seed, bad_ratio=bad_ratio)
    out = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        for envelope in simulator.envelopes(count):
            out.write(json.dumps(envelope, ensure_ascii=False) + "\n")
    finally:
        if output:
            out.close()


def ingest(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Envelopes, one JSON object per line."),
    source: str = typer.Option(..., "--source", "-s", help="Source system id: publishes to ingest.<source>."),
) -> None:
    """Publish envelopes from a JSONL file to ingest.<source> (idempotent producer, keyed by entity key)."""
    from hub.kafka.io import publish_envelopes

    config = _config()
    if source not in config.source_ids:
        _fail(f"source {source!r} is not registered in hub.yaml (registered: {', '.join(config.source_ids) or 'none'})", 2)
    with file.open("rb") as handle, _progress(f"publishing {file.name}", file.stat().st_size, "bytes") as advance:
        def lines() -> Iterator[bytes]:
            for line in handle:
                advance(len(line))
                yield line

        count = asyncio.run(publish_envelopes(
            _kafka(config), source, lines(),
            partitions=config.kafka.ingest_partitions, replication_factor=config.kafka.replication_factor))
    typer.echo(f"published {count} envelopes to ingest.{source}")


def tail_cmd(
    topic: str = typer.Argument(..., help="Topic to read, e.g. edu.exam.registration or hub.dlq.exam-reg."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    as_json: bool = typer.Option(False, "--json", help="Whole records (key, headers, value) as JSON lines."),
    max_records: Optional[int] = typer.Option(None, "--max", min=1, help="Exit after this many records."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Exit after this many seconds of silence."),
) -> None:
    """Print a topic's records decoded (Avro via the registry, JSON otherwise), one per line."""
    from hub.kafka.io import tail
    from hub.contract.registry import SchemaRegistry

    config = _config()
    kafka = _kafka(config)

    async def go() -> None:
        async with SchemaRegistry(config.registry.url) as registry:
            async for record in tail(kafka, topic, registry=registry,
                                     from_beginning=from_beginning, max_records=max_records, timeout_s=timeout):
                line = record if as_json else {"key": record["key"], "value": record["value"]}
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                sys.stdout.flush()

    try:
        asyncio.run(go())
    except LookupError as exc:
        _fail(str(exc))

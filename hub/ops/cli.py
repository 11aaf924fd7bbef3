"""The `eduhub` command line: thin commands, each a call to a library function."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from hub.core.config import ConfigError, HubConfig, load_config

if TYPE_CHECKING:  # only for annotations: the commands import what they use lazily, to start fast
    from datetime import datetime

    from hub.ops.replay import Filters

app = typer.Typer(help="EduHub: the Hải Phòng education sector's integration hub.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
schemas_app = typer.Typer(help="The Avro data contract: compatibility checks and publishing.", no_args_is_help=True)
docs_app = typer.Typer(help="Documents generated from the schemas, for app teams.", no_args_is_help=True)
connectors_app = typer.Typer(help="Connectors of a running `eduhub connect` (its REST API).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail of deliveries (hub.audit).", no_args_is_help=True)
local_app = typer.Typer(help="The local Kafka broker and schema registry (real processes).", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters (hub.dlq.<source>, hub.dlq.sub.<subscriber>): list, show, replay.",
                      no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(local_app, name="local")
app.add_typer(schemas_app, name="schemas")
app.add_typer(docs_app, name="docs")
app.add_typer(connectors_app, name="connectors")
app.add_typer(audit_app, name="audit")

_state: dict[str, Optional[Path]] = {"config": None}


def _config() -> HubConfig:
    path = _state["config"]
    if path is None and Path("hub.yaml").is_file():
        path = Path("hub.yaml")
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _progress(label: str, total: float, unit: str = "") -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr for long commands; yields `advance(n)`. Gone when done, so output stays clean."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    counter = TextColumn("{task.percentage:>3.0f}%") if unit == "bytes" else MofNCompleteColumn()
    with Progress(TextColumn(label), BarColumn(), counter, TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def main_options(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", envvar="EDUHUB_CONFIG",
        help="hub.yaml to use (default: ./hub.yaml when present, else built-in defaults)."),
) -> None:
    _state["config"] = config


@local_app.command("up")
def local_up() -> None:
    """Start the local broker and registry (resolving jars with Maven the first time)."""
    from hub.demo.local import LocalError, LocalStack

    try:
        LocalStack(_config().local).up(echo=typer.echo)
    except LocalError as exc:
        _fail(str(exc))


@local_app.command("down")
def local_down() -> None:
    """Stop exactly the local processes `up` started (by recorded pid)."""
    from hub.demo.local import LocalStack

    if not LocalStack(_config().local).down(echo=typer.echo):
        typer.echo("nothing was running")


@local_app.command("status")
def local_status() -> None:
    """Show the local processes: pid, address, log, running or not."""
    from hub.demo.local import LocalStack

    status = LocalStack(_config().local).status()
    if not status:
        typer.echo("not started")
    for name, part in status.items():
        state = "running" if part["running"] else "stopped"
        typer.echo(f"{name:9} {state:8} pid {part['pid']}  {part['url']}  log {part['log']}")
    if not all(p["running"] for p in status.values()):
        raise typer.Exit(1)


@app.command()
def worker(loglevel: str = typer.Option("info", help="Log level: debug, info, warning, error.")) -> None:
    """Run a hub worker in the foreground: validate ingest.* into edu.* or the DLQ; serve /metrics."""
    from hub.runtime.worker import run_worker

    config = _config()
    if not config.sources:
        _fail("hub.yaml declares no `sources`: add at least one source system (sources: [{id: exam-reg}])", 2)
    try:
        run_worker(config, loglevel=loglevel)
    except ConfigError as exc:
        _fail(str(exc), 2)


@app.command()
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


@app.command()
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


@app.command()
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
            config.kafka.bootstrap_servers, source, lines(),
            partitions=config.kafka.ingest_partitions, replication_factor=config.kafka.replication_factor))
    typer.echo(f"published {count} envelopes to ingest.{source}")


@app.command("tail")
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

    async def go() -> None:
        async with SchemaRegistry(config.registry.url) as registry:
            async for record in tail(config.kafka.bootstrap_servers, topic, registry=registry,
                                     from_beginning=from_beginning, max_records=max_records, timeout_s=timeout):
                line = record if as_json else {"key": record["key"], "value": record["value"]}
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                sys.stdout.flush()

    try:
        asyncio.run(go())
    except LookupError as exc:
        _fail(str(exc))


@app.command()
def run(rate: float = typer.Option(5.0, min=0.1, max=10_000, help="Demo registrations published per second.")) -> None:
    """The main job on the embedded default: local Kafka + registry, a worker, a demo producer and subscriber."""
    from hub.demo.run import run_demo
    from hub.demo.local import LocalError

    config = _config()
    path = _state["config"] or (Path("hub.yaml") if Path("hub.yaml").is_file() else None)
    try:
        run_demo(config, path.resolve() if path else None, rate=rate, echo=typer.echo)
    except (LocalError, RuntimeError) as exc:
        _fail(str(exc))


bench_app = typer.Typer(help="Benchmarks against the configured Kafka (figures for the docs, never tests).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("stage")
def bench_stage(
    events: int = typer.Option(100_000, "--events", "-n", min=1000, help="Envelopes to push through each loop."),
    bad_ratio: float = typer.Option(0.05, "--bad-ratio", min=0.0, max=1.0, help="Share of invalid envelopes."),
) -> None:
    """The validate stage against a plain aiokafka loop on the same input (writes bench-* topics)."""
    from hub.ops.bench import run_bench

    config = _config()
    figures = asyncio.run(run_bench(config, events, bad_ratio, typer.echo))
    plain, hub_stage = figures[1], figures[2]
    typer.echo("")
    for figure in figures:
        typer.echo(f"{figure.name:58} {figure.events:>8} events {figure.seconds:7.2f} s {figure.rate:>10,.0f} /s")
    typer.echo(f"hub / plain = {hub_stage.rate / plain.rate:.2f}")


@bench_app.command("sql")
def bench_sql(
    url: str = typer.Option(..., "--url", help="SQLAlchemy URL of a scratch database, e.g. "
                            "postgresql+psycopg://postgres@127.0.0.1:5432/eduhub"),
    rows: int = typer.Option(50_000, "--rows", "-n", min=1000, help="Rows in the benchmark table."),
    batch_size: int = typer.Option(5000, "--batch-size", min=1, help="Rows a poll reads."),
) -> None:
    """Rows/s the `sql` connector publishes from a database (creates and drops a bench_* table)."""
    from hub.ops.bench import run_sql_bench

    figure = asyncio.run(run_sql_bench(_config(), url, rows, batch_size, typer.echo))
    typer.echo(f"{figure.name}: {figure.events} rows in {figure.seconds:.2f} s = {figure.rate:,.0f} rows/s")


def _registry(config: HubConfig):
    from hub.contract.registry import SchemaRegistry

    password = config.registry.password.get_secret_value() if config.registry.password else None
    return SchemaRegistry(config.registry.url, username=config.registry.username, password=password,
                          timeout=config.registry.timeout_s)


@schemas_app.command("check")
def schemas_check(
    registry: bool = typer.Option(True, "--registry/--no-registry", help="Compare with every registered version."),
    git: bool = typer.Option(True, "--git/--no-git", help="Compare with every committed version in git."),
) -> None:
    """Fail (exit 1) if a schema in the working tree cannot read data written with an earlier version."""
    from hub.contract.evolution import check_against_git, check_against_registry
    from hub.contract.registry import RegistryError
    from hub.contract.schemas import Catalogue

    catalogue = Catalogue.load()
    found = check_against_git(catalogue) if git else []
    if registry:
        async def against_registry():
            async with _registry(_config()) as client:
                return await check_against_registry(catalogue, client)

        try:
            found += asyncio.run(against_registry())
        except RegistryError as exc:
            _fail(str(exc))
    for problem in found:
        typer.echo(f"INCOMPATIBLE {problem}", err=True)
    if found:
        raise typer.Exit(1)
    typer.echo(f"{len(catalogue.entities)} schemas are BACKWARD_TRANSITIVE compatible with "
               + " and ".join(x for x, on in (("the registry", registry), ("git history", git)) if on))


@schemas_app.command("publish")
def schemas_publish() -> None:
    """Register every schema under its TopicNameStrategy subject (BACKWARD_TRANSITIVE)."""
    from hub.contract.evolution import publish
    from hub.contract.registry import RegistryError
    from hub.contract.schemas import Catalogue

    async def go():
        async with _registry(_config()) as client:
            return await publish(Catalogue.load(), client)

    try:
        ids = asyncio.run(go())
    except RegistryError as exc:
        _fail(str(exc))
    for subject, schema_id in ids.items():
        typer.echo(f"{subject}: id {schema_id}")


@docs_app.command("readme")
def docs_readme(write: bool = typer.Option(False, "--write", help="Write schemas/README.md instead of printing.")) -> None:
    """The data dictionary for app teams, generated from the schemas and rules."""
    from hub.contract.docs import readme
    from hub.contract.schemas import SCHEMA_DIR, Catalogue

    text = readme(Catalogue.load())
    if write:
        (SCHEMA_DIR / "README.md").write_text(text, encoding="utf-8")
        typer.echo(f"wrote {SCHEMA_DIR / 'README.md'}")
    else:
        sys.stdout.write(text)


@docs_app.command("metrics")
def docs_metrics(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (default: stdout)."),
) -> None:
    """The metrics catalogue (docs/metrics.md), generated from hub/metrics.py."""
    from hub.contract.docs import metrics_markdown

    text = metrics_markdown()
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")
    else:
        sys.stdout.write(text)


@docs_app.command("asyncapi")
def docs_asyncapi(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (default: stdout)."),
) -> None:
    """AsyncAPI 3.0 document (YAML) of every canonical topic with its key and value schema."""
    import yaml

    from hub.contract.docs import asyncapi
    from hub.contract.schemas import Catalogue

    text = yaml.safe_dump(asyncapi(Catalogue.load()), allow_unicode=True, sort_keys=False, width=100)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command()
def connect() -> None:
    """Run every connector of hub.yaml in the foreground, with the REST API on connect.port."""
    from connectors.runtime import build_connectors

    config = _config()
    try:
        build_connectors(config)  # validate every connector's keys before anything starts
    except ConfigError as exc:
        _fail(str(exc), 2)
    if not config.connectors:
        _fail("hub.yaml declares no `connectors`", 2)
    from connectors.process import run_connect

    run_connect(config, echo=typer.echo)


def _connect_api(method: str, path: str, body: dict | None = None) -> dict:
    import httpx

    from hub.runtime.status import connect_url

    url = connect_url(_config()) + path
    try:
        response = httpx.request(method, url, json=body, timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"the connector runtime at {url} is not reachable ({exc}); is `eduhub connect` running?")
    data = response.json()
    if response.status_code >= 400:
        _fail(data.get("error", response.text) if isinstance(data, dict) else response.text)
    return data


@connectors_app.command("list")
def connectors_list() -> None:
    """Names and states of the connectors."""
    for name in _connect_api("GET", "/connectors"):
        status = _connect_api("GET", f"/connectors/{name}/status")
        typer.echo(f"{name:28} {status['kind']:9} {status['state']:9} source {status['source']}")


@connectors_app.command("status")
def connectors_status(
    name: str,
    watch: bool = typer.Option(False, "--watch", "-w", help="While its first snapshot runs, show a progress bar "
                                                            "until it is done; then print the status."),
) -> None:
    """State, last success, last error, current offset and snapshot progress of one connector (JSON)."""
    import time

    status = _connect_api("GET", f"/connectors/{name}/status")
    if watch and status.get("snapshot"):
        with _progress(f"snapshot of {name}", status["snapshot"]["total"]) as advance:
            read = 0
            while status.get("snapshot") and status["state"] in ("RUNNING", "RETRYING"):
                advance(status["snapshot"]["read"] - read)
                read = status["snapshot"]["read"]
                time.sleep(0.5)
                status = _connect_api("GET", f"/connectors/{name}/status")
    typer.echo(json.dumps(status, ensure_ascii=False, indent=2))


@connectors_app.command("pause")
def connectors_pause(name: str) -> None:
    """Stop polling (keeps its place); `resume` continues."""
    typer.echo(_connect_api("PUT", f"/connectors/{name}/pause")["state"])


@connectors_app.command("resume")
def connectors_resume(name: str) -> None:
    """Continue a paused or stopped connector."""
    typer.echo(_connect_api("PUT", f"/connectors/{name}/resume")["state"])


@connectors_app.command("restart")
def connectors_restart(name: str) -> None:
    """Stop and start again from the stored offset."""
    typer.echo(_connect_api("POST", f"/connectors/{name}/restart")["state"])


@connectors_app.command("stop")
def connectors_stop(name: str) -> None:
    """Stop a connector (needed before changing its offset)."""
    typer.echo(_connect_api("PUT", f"/connectors/{name}/stop")["state"])


@connectors_app.command("offsets")
def connectors_offsets(
    name: str,
    reset: bool = typer.Option(False, "--reset", help="Forget the offset: the next start snapshots again."),
) -> None:
    """Show a connector's stored offset; with --reset (connector stopped) forget it."""
    result = _connect_api("DELETE" if reset else "GET", f"/connectors/{name}/offsets")
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2))


@audit_app.command("who-received")
def audit_who_received(
    person: str = typer.Argument(..., help="A personal ID (student_id, national_id, applicant_id) or an entity key."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per delivery."),
) -> None:
    """Which subscribers received this person's data, and when (Nghị định 13/2023/NĐ-CP)."""
    from hub.contract.topics import AUDIT_TOPIC
    from hub.routing.audit import audit_key, who_received
    from hub.kafka.io import read_to_end
    from hub.runtime.worker import master_key

    config = _config()
    try:
        key = audit_key(master_key(config))
    except ConfigError as exc:
        _fail(str(exc), 2)
    try:
        records = asyncio.run(read_to_end(config.kafka.bootstrap_servers, AUDIT_TOPIC))
    except LookupError:
        records = []
    found = who_received(key, [r.value for r in records if r.value], person)
    for entry in found:
        if as_json:
            typer.echo(json.dumps(entry, ensure_ascii=False))
        else:
            typer.echo(f"{entry['at']}  {entry['subscriber']:20} {entry['entity']:24} event {entry['event_id']}")
    if not found:
        typer.echo("no deliveries recorded for it", err=True)


def _time(value: Optional[str], option: str) -> Optional["datetime"]:
    """An ISO date or date-time; without an offset it is Vietnam time (+07:00)."""
    from datetime import datetime, timedelta, timezone

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r}: expected an ISO date or date-time such as 2026-11-28 or 2026-11-28T08:00+07:00", 2)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone(timedelta(hours=7)))


def _filters(source: list[str], rule: Optional[str], since: Optional[str], until: Optional[str]) -> "Filters":
    from hub.ops.replay import Filters

    return Filters(sources=source, rule=rule, since=_time(since, "--since"), until=_time(until, "--until"))


_SOURCE = typer.Option([], "--source", "-s", help="Only this source's DLQ (repeatable); sub.<id> for a subscriber's.")
_RULE = typer.Option(None, "--rule", "-r", help="Only this rule id, or every rule under a prefix ending in '.' "
                                                "(exam.).")
_SINCE = typer.Option(None, "--since", help="Dead-lettered at or after this ISO time (no offset: Vietnam time).")
_UNTIL = typer.Option(None, "--until", help="Dead-lettered before this ISO time.")


@dlq_app.command("list")
def dlq_list(source: list[str] = _SOURCE, rule: Optional[str] = _RULE, since: Optional[str] = _SINCE,
             until: Optional[str] = _UNTIL,
             as_json: bool = typer.Option(False, "--json", help="One JSON object per dead letter.")) -> None:
    """Dead letters, oldest first, with the rule that sent each there."""
    from hub.ops.replay import dead_letters

    config = _config()
    letters = asyncio.run(dead_letters(config.kafka.bootstrap_servers, _filters(source, rule, since, until)))
    for letter in letters:
        if as_json:
            typer.echo(json.dumps(letter.summary(), ensure_ascii=False))
        else:
            typer.echo(f"{letter.at:%Y-%m-%d %H:%M:%S}  {letter.ref:36} {letter.rule:32} "
                       f"{(letter.header('eduhub.errors.message') or '')[:80]}")
    typer.echo(f"{len(letters)} dead letter(s)", err=True)


@dlq_app.command("show")
def dlq_show(ref: str = typer.Argument(..., help="topic:partition:offset (as `dlq list` prints it) or an event_id.")) -> None:
    """One dead letter in full: every reason, the original headers and value."""
    from hub.ops.replay import find

    config = _config()
    letter = asyncio.run(find(config.kafka.bootstrap_servers, ref))
    if letter is None:
        _fail(f"no dead letter {ref!r}: give topic:partition:offset from `eduhub dlq list`, or an event_id")
    typer.echo(json.dumps(letter.details(), ensure_ascii=False, indent=2))


@dlq_app.command("replay")
def dlq_replay(source: list[str] = _SOURCE, rule: Optional[str] = _RULE, since: Optional[str] = _SINCE,
               until: Optional[str] = _UNTIL,
               dry_run: bool = typer.Option(False, "--dry-run", help="Re-validate and report; send nothing."),
               force: bool = typer.Option(False, "--force", help="Replay letters replayed before too.")) -> None:
    """Re-validate matching dead letters and send those that now pass back through the hub (once each)."""
    from hub.ops.replay import dead_letters, replay
    from hub.contract.schemas import Catalogue
    from hub.stages.validate import Validator

    config = _config()
    bootstrap = config.kafka.bootstrap_servers
    letters = asyncio.run(dead_letters(bootstrap, _filters(source, rule, since, until)))
    validator = Validator(Catalogue.load(), set(config.source_ids), council_code=config.exam.council_code)
    with _progress("replaying", len(letters)) as advance:
        report = asyncio.run(replay(bootstrap, letters, validator, dry_run=dry_run, force=force,
                                    replication_factor=config.kafka.replication_factor, progress=advance))
    for ref, why in report.still_invalid:
        typer.echo(f"still invalid  {ref}  {why}")
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {len(report.replayed)}, already replayed {len(report.already)}, "
               f"still invalid {len(report.still_invalid)} (of {len(letters)} matching)")


def main() -> None:
    app()

"""`eduhub bench all|stage|scale|sql`: the commands over hub/ops/bench_*.py (figures for the docs)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from hub.ops.cli.common import _config, _fail, _state


bench_app = typer.Typer(help="Benchmarks against the configured Kafka (figures for the docs, never tests).",
                        no_args_is_help=True)


def _config_path() -> Path | None:
    """The hub.yaml the command uses, for the row processes (None: EDUHUB_CONFIG or the defaults)."""
    path = _state["config"]
    if path is None and Path("hub.yaml").is_file():
        path = Path("hub.yaml")
    return path


def _run(options) -> dict:
    from hub.core.config import ConfigError
    from hub.ops.bench_all import run_all

    echo = lambda line: typer.echo(line, err=True)  # noqa: E731 — progress on stderr, figures on stdout
    try:
        return asyncio.run(run_all(_config(), _config_path(), options, echo))
    except (ConfigError, ValueError) as exc:
        _fail(str(exc), 2)
        raise
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM: the row processes were stopped
        _fail("interrupted (the row processes are stopped and the bench's topics deleted)", 130)
        raise


@bench_app.command("all")
def bench_all(
    events: int = typer.Option(20_000, "--events", "-n", min=100, help="Pre-filled envelopes each row processes."),
    bad_ratio: float = typer.Option(0.05, "--bad-ratio", min=0.0, max=1.0, help="Share of invalid envelopes."),
    latency_seconds: float = typer.Option(20.0, "--latency-seconds", min=1.0,
                                          help="How long each row is fed at the fixed rate for its latency."),
    rate: float = typer.Option(None, "--rate", min=1.0, help="Events/s of the latency runs (default: half of "
                               "the e2e row's measured events/s)."),
    rows: str = typer.Option(",".join(("plain", "validate", "route", "e2e", "quix", "faust")), "--rows",
                             help="Comma-separated rows to run: plain, validate, route, e2e, quix, faust."),
    keep_topics: bool = typer.Option(False, "--keep-topics", help="Keep the bench's bench-* topics."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of the table."),
) -> None:
    """Every stage side by side on the same input, each row its own process: the plain loop, hub validate,
    hub route, hub end to end, Quix Streams and a naive Faust agent — events/s, latency p50/p95/p99 at half
    the hub's rate, peak RSS (writes and then deletes bench-* topics)."""
    from hub.ops.bench_all import BenchOptions
    from hub.ops.bench_report import table

    chosen = tuple(r.strip() for r in rows.split(",") if r.strip())
    report = _run(BenchOptions(events=events, bad_ratio=bad_ratio, latency_seconds=latency_seconds, rate=rate,
                               rows=chosen, keep_topics=keep_topics))
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        typer.echo("\n".join(table(report)))
    if any(r["status"].startswith("failed") or r["latency_error"] for r in report["rows"]):
        raise typer.Exit(1)


@bench_app.command("stage")
def bench_stage(
    events: int = typer.Option(100_000, "--events", "-n", min=1000, help="Envelopes to push through each loop."),
    bad_ratio: float = typer.Option(0.05, "--bad-ratio", min=0.0, max=1.0, help="Share of invalid envelopes."),
) -> None:
    """The validate stage against a plain aiokafka loop on the same input: `bench all --rows plain,validate`,
    throughput only (writes and then deletes bench-* topics)."""
    from hub.ops.bench_all import BenchOptions
    from hub.ops.bench_report import table

    report = _run(BenchOptions(events=events, bad_ratio=bad_ratio, rows=("plain", "validate"), latency=False))
    typer.echo("\n".join(table(report)))
    if any(r["status"] != "ok" for r in report["rows"]):
        raise typer.Exit(1)


@bench_app.command("scale")
def bench_scale(
    workers: str = typer.Option("1,2,3", "--workers", help="Comma-separated counts of worker processes to try."),
    events: int = typer.Option(60_000, "--events", "-n", min=1000, help="Envelopes each run processes."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """End-to-end events/s (validate + route) of 1, 2, 3… worker processes in one group on the ingest
    partitions, one count after another (writes and then deletes bench-* topics)."""
    from hub.core.config import ConfigError
    from hub.ops.bench_scale import run_scale

    try:
        counts = [int(w) for w in workers.split(",") if w.strip()]
    except ValueError:
        _fail(f"--workers {workers!r}: expected counts such as 1,2,3", 2)
    if not counts or min(counts) < 1:
        _fail(f"--workers {workers!r}: expected counts of 1 or more, such as 1,2,3", 2)
    echo = lambda line: typer.echo(line, err=True)  # noqa: E731
    try:
        figures = asyncio.run(run_scale(_config(), _config_path(), counts, events, echo))
    except (ConfigError, ValueError, RuntimeError) as exc:
        _fail(str(exc), 1)
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    base = figures[0]["events_per_s"] if figures else 0
    for figure in figures:
        typer.echo(f"{figure['workers']} worker(s): {figure['events_per_s']:>10,.0f} events/s "
                   f"({figure['events_per_s'] / base:.2f}x of {figures[0]['workers']}), peak RSS MB "
                   f"{', '.join(map(str, figure['rss_peak_mb']))}")


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

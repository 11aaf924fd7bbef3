"""`eduhub bench stage|sql`: the commands over hub/ops/bench.py (figures for the docs)."""

from __future__ import annotations

import asyncio

import typer

from hub.ops.cli.common import _config


bench_app = typer.Typer(help="Benchmarks against the configured Kafka (figures for the docs, never tests).",
                        no_args_is_help=True)


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

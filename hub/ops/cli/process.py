"""The long-running commands `eduhub worker`, `run` (the demo) and `connect` (registered in __init__.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.core.config import ConfigError
from hub.ops.cli.common import _config, _fail, _state


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

    try:
        run_connect(config, echo=typer.echo)
    except ConfigError as exc:  # no REST API token, or a TLS file that does not load
        _fail(str(exc), 2)

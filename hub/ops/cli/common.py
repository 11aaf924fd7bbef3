"""Shared by every command module: the --config state, loading hub.yaml, failing, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from hub.core.config import ConfigError, HubConfig, load_config

if TYPE_CHECKING:
    from hub.kafka.clients import KafkaClients

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


def _kafka(config: HubConfig) -> "KafkaClients":
    """The hub's Kafka connection (kafka.* of hub.yaml); a TLS file that does not load ends the command."""
    from hub.kafka.clients import KafkaClients

    try:
        return KafkaClients.from_config(config.kafka)
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise


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

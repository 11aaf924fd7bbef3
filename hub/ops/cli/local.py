"""`eduhub local up|down|status`: the local Kafka broker and schema registry."""

from __future__ import annotations

import typer

from hub.ops.cli.common import _config, _fail


local_app = typer.Typer(help="The local Kafka broker and schema registry (real processes).", no_args_is_help=True)


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

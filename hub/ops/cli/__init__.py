"""The `eduhub` command line: thin commands, each a call to a library function; one module per group."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hub.core.config import ConfigError
from hub.ops.cli.acl import acl_app
from hub.ops.cli.audit import audit_app
from hub.ops.cli.bench import bench_app
from hub.ops.cli.common import _state
from hub.ops.cli.connectors import connectors_app
from hub.ops.cli.deploy import deploy_app
from hub.ops.cli.data import ingest, simulate, tail_cmd, validate
from hub.ops.cli.dlq import dlq_app
from hub.ops.cli.local import local_app
from hub.ops.cli.process import connect, run, worker
from hub.ops.cli.schemas import docs_app, schemas_app


app = typer.Typer(help="EduHub: the Hải Phòng education sector's integration hub.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def main_options(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", envvar="EDUHUB_CONFIG",
        help="hub.yaml to use (default: ./hub.yaml when present, else built-in defaults)."),
) -> None:
    _state["config"] = config


# Top-level commands first, then the groups: this order is the order of `eduhub --help`.
app.command()(worker)
app.command()(validate)
app.command()(simulate)
app.command()(ingest)
app.command("tail")(tail_cmd)
app.command()(run)
app.command()(connect)
app.add_typer(dlq_app, name="dlq")
app.add_typer(local_app, name="local")
app.add_typer(schemas_app, name="schemas")
app.add_typer(docs_app, name="docs")
app.add_typer(connectors_app, name="connectors")
app.add_typer(audit_app, name="audit")
app.add_typer(acl_app, name="acl")
app.add_typer(bench_app, name="bench")
app.add_typer(deploy_app, name="deploy")


def main() -> None:
    try:
        app()
    except ConfigError as exc:  # e.g. Kafka refused the credentials: the message names the listener and the user
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None

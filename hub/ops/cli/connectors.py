"""`eduhub connectors ...`: the REST API of a running `eduhub connect`."""

from __future__ import annotations

import json

import typer

from hub.core.config import ConfigError, HubConfig
from hub.ops.cli.common import _config, _fail, _progress


connectors_app = typer.Typer(help="Connectors of a running `eduhub connect` (its REST API).", no_args_is_help=True)


def _token(config: HubConfig) -> str | None:
    """The REST API token: the variable connect.token_env names, else the one a running `make run` made."""
    import os

    from hub.demo.run import connect_token_file

    token = os.environ.get(config.connect.token_env, "").strip()
    if not token and connect_token_file(config).is_file():
        token = connect_token_file(config).read_text().strip()
    return token or None


def _connect_api(method: str, path: str, body: dict | None = None) -> dict:
    import httpx

    from hub.runtime.status import connect_options

    config = _config()
    token = _token(config)
    if token is None:
        _fail(f"no token for the connector runtime's REST API: set {config.connect.token_env} (connect.token_env) "
              "to the token `eduhub connect` runs with")
    try:
        options = connect_options(config, token)
    except ConfigError as exc:
        _fail(str(exc), 2)
    url = options["base_url"] + path
    try:
        response = httpx.request(method, url, json=body, timeout=30, headers=options["headers"],
                                 verify=options["verify"])
    except httpx.HTTPError as exc:
        _fail(f"the connector runtime at {url} is not reachable ({exc}); is `eduhub connect` running?")
    try:
        data = response.json()
    except ValueError:
        data = None
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

"""`eduhub local up|down|status`: the local Kafka broker and schema registry."""

from __future__ import annotations

import typer

from hub.ops.cli.common import _config, _fail


local_app = typer.Typer(help="The local Kafka broker and schema registry (real processes).", no_args_is_help=True)


@local_app.command("up")
def local_up(secure: bool = typer.Option(
        False, "--secure", help="SASL_SSL listener (SCRAM-SHA-512, TLS from a throwaway CA), one user per "
        "principal of hub.yaml with random passwords, ACLs enforced (then: eduhub acl apply).")) -> None:
    """Start the local broker and registry (resolving jars with Maven the first time)."""
    from hub.demo.local import LocalError, LocalStack
    from hub.ops.acl import hub_principal

    config = _config()
    try:
        stack = LocalStack(config.local, secure=secure, users=_users(config) if secure else ())
        stack.up(echo=typer.echo)
    except (LocalError, ValueError) as exc:  # ValueError: a user name SCRAM cannot take
        _fail(str(exc))
        return
    if stack.secure is not None:
        typer.echo(f"secure    SASL_SSL {stack.bootstrap_servers} (SCRAM-SHA-512); CA {stack.secure.tls.ca_cert}\n"
                   f"users     {stack.secure.credentials_file} (passwords, 0600): "
                   f"set -a; . {stack.secure.credentials_file}; set +a\n"
                   f"next      set kafka.security_protocol: SASL_SSL, kafka.username: "
                   f"{hub_principal(config).removeprefix('User:')}, kafka.ssl_cafile: "
                   f"{stack.secure.tls.ca_cert} in hub.yaml, then `eduhub acl apply`")


def _users(config) -> list:
    """A SCRAM user for each principal `eduhub acl plan` names (User:<name> only), with its password variable."""
    from hub.demo.secure import User, env_name
    from hub.ops.acl import principals

    env_of = {f"User:{c['kafka_username']}": c["kafka_password_env"] for c in config.connectors
              if c.get("kafka_username") and c.get("kafka_password_env")}
    hub = config.kafka.username or "hub"
    env_of[f"User:{hub}"] = "EDUHUB_KAFKA_PASSWORD"
    env_of["User:admin"] = "EDUHUB_KAFKA_ADMIN_PASSWORD"
    return [User(p.removeprefix("User:"), env_of.get(p) or env_name(p.removeprefix("User:")), role)
            for p, role in principals(config).items() if p.startswith("User:")]


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

"""`eduhub acl plan|apply`: the Kafka ACLs hub.yaml implies (least privilege), shown or created on the brokers."""

from __future__ import annotations

import os

import typer

from hub.ops.cli.common import _config, _fail

acl_app = typer.Typer(help="Kafka ACLs derived from hub.yaml: each principal may touch its own topics only.",
                      no_args_is_help=True)


@acl_app.command("plan")
def acl_plan(as_json: bool = typer.Option(False, "--json", help="Print the bindings as JSON.")) -> None:
    """Show every ACL hub.yaml implies: principal, resource, pattern, operation and why. Changes nothing."""
    from hub.ops.acl import as_json as to_json
    from hub.ops.acl import plan, table

    bindings = plan(_config())
    typer.echo(to_json(bindings) if as_json else "\n".join(table(bindings)))


@acl_app.command("apply")
def acl_apply(
    admin_user: str = typer.Option("admin", "--admin-user", help="SASL user allowed to create ACLs (a super user)."),
    admin_password_env: str = typer.Option(
        "EDUHUB_KAFKA_ADMIN_PASSWORD", "--admin-password-env",
        help="Environment variable holding that user's password (`eduhub local up --secure` writes it to "
             "credentials.env)."),
    timeout_s: float = typer.Option(20.0, "--timeout", help="Seconds to wait for the brokers."),
) -> None:
    """Create the ACLs of `eduhub acl plan` that the brokers lack (running it again adds nothing)."""
    from hub.ops.acl import AclError, admin_config, apply, plan, table

    config = _config()
    password = os.environ.get(admin_password_env)
    settings, who = admin_config(config, admin_user, password)
    if "sasl.username" in settings and not password:
        _fail(f"set {admin_password_env} to the password of Kafka user {admin_user!r} "
              f"(local secure stack: set -a; . {config.local.state_dir}/credentials.env; set +a)", 2)
    bindings = plan(config)
    try:
        added = apply(bindings, settings, timeout_s=timeout_s, describe=who)
    except AclError as exc:
        _fail(str(exc))
        return
    if added:
        typer.echo(f"added {len(added)} of {len(bindings)} ACLs ({who}):")
        typer.echo("\n".join(table(added)))
    else:
        typer.echo(f"all {len(bindings)} ACLs were already there ({who}); nothing added")

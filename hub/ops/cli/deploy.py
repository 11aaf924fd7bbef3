"""`eduhub deploy k8s|certs`: the generated Kubernetes manifests of deploy/k8s/, and a compose cluster's TLS files."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.ops.cli.common import _fail

deploy_app = typer.Typer(help="Deployment manifests derived from hub.yaml, so they cannot drift from it.",
                         no_args_is_help=True)


@deploy_app.command("k8s")
def k8s(
    hub_yaml: Path = typer.Option(
        Path("deploy/k8s/hub.yaml"), "--hub-yaml",
        help="The hub.yaml the pods will read (copied into the ConfigMap; topics and users derive from it)."),
    out: Path = typer.Option(Path("deploy/k8s/base/generated"), "--out", help="Folder of the generated files."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 when the files in --out differ from a "
                               "fresh generation (CI)."),
) -> None:
    """Strimzi Kafka (KRaft), KafkaTopics (the topic plan), KafkaUsers (the ACL plan) and the hub.yaml copy."""
    from hub.core.config import ConfigError
    from hub.ops.deploy_k8s import differences, generate, write

    if not hub_yaml.is_file():
        _fail(f"{hub_yaml} does not exist (--hub-yaml names the hub.yaml of the deployment)", 2)
    try:
        files = generate(hub_yaml.read_text(encoding="utf-8"), str(hub_yaml))
    except ConfigError as exc:
        _fail(str(exc), 2)
        return
    if check:
        found = differences(out, files)
        if found:
            typer.echo("\n".join(found), err=True)
            _fail(f"{out} is not what `eduhub deploy k8s --hub-yaml {hub_yaml}` generates: run it and commit the "
                  f"result")
        typer.echo(f"{out}: up to date with {hub_yaml} ({len(files)} files)")
        return
    for path in write(out, files):
        typer.echo(f"wrote {path}")


@deploy_app.command("certs")
def certs(
    folder: Path = typer.Argument(..., help="Folder of the PEM files (made 0700; keys 0600)."),
    host: list[str] = typer.Option(..., "--host", help="A broker host name the certificate must name (repeat)."),
    owner: str = typer.Option(None, "--owner", help="UID:GID to give the folder and files (run as root), e.g. "
                              "the broker image's user, so that the brokers can read their key."),
) -> None:
    """A throwaway CA and one broker certificate naming every --host (docker-compose.yml's cluster profile).

    Writes ca.pem, ca-key.pem, broker.pem, broker-key.pem and broker-keystore.pem (key, certificate and CA:
    Kafka's ssl.keystore.type=PEM). Kept when still valid for these hosts, so a restart changes nothing.
    A production cluster takes its certificates from its own CA (Strimzi makes them on Kubernetes)."""
    import os

    from hub.demo.certs import ensure_certificates

    ids = None
    if owner:
        uid, _, gid = owner.partition(":")
        if not (uid.isdigit() and gid.isdigit()):
            _fail(f"--owner {owner!r}: expected numeric UID:GID, e.g. 1000:1000", 2)
        ids = int(uid), int(gid)
    files = ensure_certificates(folder, hosts=tuple(host))
    os.chmod(files.folder, 0o755)  # clients of other users (the workers) read ca.pem; the keys stay 0600
    for path in (files.folder, files.ca_cert, files.ca_key, files.broker_cert, files.broker_key, files.keystore):
        if ids:
            os.chown(path, *ids)
        typer.echo(f"{path}")

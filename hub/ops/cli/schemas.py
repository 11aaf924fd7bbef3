"""`eduhub schemas check|publish` and `eduhub docs readme|metrics|asyncapi`: the data contract."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Optional

import typer

from hub.core.config import HubConfig
from hub.ops.cli.common import _config, _fail


schemas_app = typer.Typer(help="The Avro data contract: compatibility checks and publishing.", no_args_is_help=True)
docs_app = typer.Typer(help="Documents generated from the schemas, for app teams.", no_args_is_help=True)


def _registry(config: HubConfig):
    from hub.contract.registry import SchemaRegistry

    password = config.registry.password.get_secret_value() if config.registry.password else None
    return SchemaRegistry(config.registry.url, username=config.registry.username, password=password,
                          timeout=config.registry.timeout_s)


@schemas_app.command("check")
def schemas_check(
    registry: bool = typer.Option(True, "--registry/--no-registry", help="Compare with every registered version."),
    git: bool = typer.Option(True, "--git/--no-git", help="Compare with every committed version in git."),
) -> None:
    """Fail (exit 1) if a schema in the working tree cannot read data written with an earlier version."""
    from hub.contract.evolution import check_against_git, check_against_registry
    from hub.contract.registry import RegistryError
    from hub.contract.schemas import Catalogue

    catalogue = Catalogue.load()
    found = check_against_git(catalogue) if git else []
    if registry:
        async def against_registry():
            async with _registry(_config()) as client:
                return await check_against_registry(catalogue, client)

        try:
            found += asyncio.run(against_registry())
        except RegistryError as exc:
            _fail(str(exc))
    for problem in found:
        typer.echo(f"INCOMPATIBLE {problem}", err=True)
    if found:
        raise typer.Exit(1)
    typer.echo(f"{len(catalogue.entities)} schemas are BACKWARD_TRANSITIVE compatible with "
               + " and ".join(x for x, on in (("the registry", registry), ("git history", git)) if on))


@schemas_app.command("publish")
def schemas_publish() -> None:
    """Register every schema under its TopicNameStrategy subject (BACKWARD_TRANSITIVE)."""
    from hub.contract.evolution import publish
    from hub.contract.registry import RegistryError
    from hub.contract.schemas import Catalogue

    async def go():
        async with _registry(_config()) as client:
            return await publish(Catalogue.load(), client)

    try:
        ids = asyncio.run(go())
    except RegistryError as exc:
        _fail(str(exc))
    for subject, schema_id in ids.items():
        typer.echo(f"{subject}: id {schema_id}")


@docs_app.command("readme")
def docs_readme(write: bool = typer.Option(False, "--write", help="Write schemas/README.md instead of printing.")) -> None:
    """The data dictionary for app teams, generated from the schemas and rules."""
    from hub.contract.docs import readme
    from hub.contract.schemas import SCHEMA_DIR, Catalogue

    text = readme(Catalogue.load())
    if write:
        (SCHEMA_DIR / "README.md").write_text(text, encoding="utf-8")
        typer.echo(f"wrote {SCHEMA_DIR / 'README.md'}")
    else:
        sys.stdout.write(text)


@docs_app.command("metrics")
def docs_metrics(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (default: stdout)."),
) -> None:
    """The metrics catalogue (docs/metrics.md), generated from hub/metrics.py."""
    from hub.contract.docs import metrics_markdown

    text = metrics_markdown()
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")
    else:
        sys.stdout.write(text)


@docs_app.command("asyncapi")
def docs_asyncapi(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (default: stdout)."),
) -> None:
    """AsyncAPI 3.0 document (YAML) of every canonical topic with its key and value schema."""
    import yaml

    from hub.contract.docs import asyncapi
    from hub.contract.schemas import Catalogue

    text = yaml.safe_dump(asyncapi(Catalogue.load()), allow_unicode=True, sort_keys=False, width=100)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")
    else:
        sys.stdout.write(text)

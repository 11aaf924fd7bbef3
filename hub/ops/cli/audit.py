"""`eduhub audit who-received`: the audit trail of deliveries."""

from __future__ import annotations

import asyncio
import json

import typer

from hub.core.config import ConfigError
from hub.ops.cli.common import _config, _fail, _kafka


audit_app = typer.Typer(help="The audit trail of deliveries (hub.audit).", no_args_is_help=True)


@audit_app.command("who-received")
def audit_who_received(
    person: str = typer.Argument(..., help="A personal ID (student_id, national_id, applicant_id) or an entity key."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per delivery."),
) -> None:
    """Which subscribers received this person's data, and when (Nghị định 13/2023/NĐ-CP)."""
    from hub.contract.topics import AUDIT_TOPIC
    from hub.routing.audit import audit_key, legacy_audit_key, who_received
    from hub.kafka.io import read_to_end
    from hub.runtime.worker import master_key

    config = _config()
    try:
        master = master_key(config)
        keys = [audit_key(master), legacy_audit_key(master)]  # records from before the key change too
    except ConfigError as exc:
        _fail(str(exc), 2)
    try:
        records = asyncio.run(read_to_end(_kafka(config), AUDIT_TOPIC))
    except LookupError:
        records = []
    found = who_received(keys, [r.value for r in records if r.value], person)
    for entry in found:
        if as_json:
            typer.echo(json.dumps(entry, ensure_ascii=False))
        else:
            typer.echo(f"{entry['at']}  {entry['subscriber']:20} {entry['entity']:24} event {entry['event_id']}")
    if not found:
        typer.echo("no deliveries recorded for it", err=True)

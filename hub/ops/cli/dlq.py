"""`eduhub dlq list|show|replay`: dead letters, over hub/ops/replay.py."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Optional

import typer

from hub.ops.cli.common import _config, _fail, _kafka, _progress

if TYPE_CHECKING:  # only for annotations: the commands import what they use lazily, to start fast
    from datetime import datetime

    from hub.ops.replay import Filters


dlq_app = typer.Typer(help="Dead letters (hub.dlq.<source>, hub.dlq.sub.<subscriber>): list, show, replay.",
                      no_args_is_help=True)


def _time(value: Optional[str], option: str) -> Optional["datetime"]:
    """An ISO date or date-time; without an offset it is Vietnam time (+07:00)."""
    from datetime import datetime, timedelta, timezone

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r}: expected an ISO date or date-time such as 2026-11-28 or 2026-11-28T08:00+07:00", 2)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone(timedelta(hours=7)))


def _filters(source: list[str], rule: Optional[str], since: Optional[str], until: Optional[str]) -> "Filters":
    from hub.ops.replay import Filters

    return Filters(sources=source, rule=rule, since=_time(since, "--since"), until=_time(until, "--until"))


_SOURCE = typer.Option([], "--source", "-s", help="Only this source's DLQ (repeatable); sub.<id> for a subscriber's.")


_RULE = typer.Option(None, "--rule", "-r", help="Only this rule id, or every rule under a prefix ending in '.' "
                                                "(exam.).")


_SINCE = typer.Option(None, "--since", help="Dead-lettered at or after this ISO time (no offset: Vietnam time).")


_UNTIL = typer.Option(None, "--until", help="Dead-lettered before this ISO time.")


@dlq_app.command("list")
def dlq_list(source: list[str] = _SOURCE, rule: Optional[str] = _RULE, since: Optional[str] = _SINCE,
             until: Optional[str] = _UNTIL,
             as_json: bool = typer.Option(False, "--json", help="One JSON object per dead letter.")) -> None:
    """Dead letters, oldest first, with the rule that sent each there."""
    from hub.ops.replay import dead_letters

    config = _config()
    letters = asyncio.run(dead_letters(_kafka(config), _filters(source, rule, since, until)))
    for letter in letters:
        if as_json:
            typer.echo(json.dumps(letter.summary(), ensure_ascii=False))
        else:
            typer.echo(f"{letter.at:%Y-%m-%d %H:%M:%S}  {letter.ref:36} {letter.rule:32} "
                       f"{(letter.header('eduhub.errors.message') or '')[:80]}")
    typer.echo(f"{len(letters)} dead letter(s)", err=True)


@dlq_app.command("show")
def dlq_show(ref: str = typer.Argument(..., help="topic:partition:offset (as `dlq list` prints it) or an event_id.")) -> None:
    """One dead letter in full: every reason, the original headers and value."""
    from hub.ops.replay import find

    config = _config()
    letter = asyncio.run(find(_kafka(config), ref))
    if letter is None:
        _fail(f"no dead letter {ref!r}: give topic:partition:offset from `eduhub dlq list`, or an event_id")
    typer.echo(json.dumps(letter.details(), ensure_ascii=False, indent=2))


@dlq_app.command("replay")
def dlq_replay(source: list[str] = _SOURCE, rule: Optional[str] = _RULE, since: Optional[str] = _SINCE,
               until: Optional[str] = _UNTIL,
               dry_run: bool = typer.Option(False, "--dry-run", help="Re-validate and report; send nothing."),
               force: bool = typer.Option(False, "--force", help="Replay letters replayed before too.")) -> None:
    """Re-validate matching dead letters and send those that now pass back through the hub (once each)."""
    from hub.ops.replay import dead_letters, replay
    from hub.contract.schemas import Catalogue
    from hub.stages.validate import Validator

    config = _config()
    kafka = _kafka(config)
    letters = asyncio.run(dead_letters(kafka, _filters(source, rule, since, until)))
    validator = Validator(Catalogue.load(), set(config.source_ids), council_code=config.exam.council_code)
    with _progress("replaying", len(letters)) as advance:
        report = asyncio.run(replay(kafka, letters, validator, dry_run=dry_run, force=force,
                                    replication_factor=config.kafka.replication_factor, progress=advance))
    for ref, why in report.still_invalid:
        typer.echo(f"still invalid  {ref}  {why}")
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {len(report.replayed)}, already replayed {len(report.already)}, "
               f"still invalid {len(report.still_invalid)} (of {len(letters)} matching)")

"""docs/operations.md stays true: its commands exist, its figures are performance.md's, its defaults the code's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from hub.core.config import HubConfig
from hub.ops.cli import app

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
PERFORMANCE = ROOT / "docs" / "performance.md"
DOC = OPERATIONS.read_text(encoding="utf-8")
PERF = PERFORMANCE.read_text(encoding="utf-8")
# For phrase checks: line breaks and runs of spaces as one space (a re-wrapped paragraph still matches).
FLAT_DOC, FLAT_PERF = (" ".join(text.split()) for text in (DOC, PERF))
CLI = typer.main.get_command(app)
GLOBAL_OPTIONS_WITH_VALUE = {"-c", "--config"}

# Figures operations.md quotes from performance.md: each must be in both, as written (a changed
# measurement in performance.md then fails here until operations.md follows).
QUOTED = [
    "roughly 1,700 events/s",
    "around 13,000 events/s",
    "49 million",
    "1.6 billion",
    "about 25 million",
    "about 6,000 events/s end to end",
    "300 MB",
    "548 MB",
    "44 B per id",
    "1.1 GB",
    "70 GB",
    "about 14 GB each with 5",
    "8,102",
    "12,245",
    "11,460",
    "about 10 MB/s",
    "30 MB/s with replication",
    "80 MB/s",
    "240 MB/s",
    "about 11 s",
    "eduhub bench scale --workers 1,2,3 -n 60000",
]


def _inline_code(text: str) -> list[str]:
    without_fences = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    return [span for span in re.findall(r"`([^`\n]+)`", without_fences)]


def _fenced_lines(text: str) -> list[str]:
    """Lines of fenced code blocks, with backslash continuations joined."""
    lines = []
    for block in re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", text, flags=re.S | re.M):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    return lines


def eduhub_commands(text: str) -> list[list[str]]:
    """Every `eduhub …` command of the page as arguments after `eduhub` (env assignments, `.venv/bin/`
    and comments dropped): command lines of code blocks, and inline code spans that are a command."""
    found = []
    candidates = _fenced_lines(text) + [s for s in _inline_code(text) if re.match(r"(\.venv/bin/)?eduhub( |$)", s)]
    for line in candidates:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]
        if words and words[0] in ("eduhub", ".venv/bin/eduhub"):
            found.append(words[1:])
    return found


COMMANDS = eduhub_commands(DOC)


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's subcommands by name; None for a command (Typer has its own copy of click: duck typing)."""
    return getattr(command, "commands", None)


def resolve(args: list[str]) -> tuple[list[str], Any, list[str]]:
    """(command path, the click command, the words after it), following subcommands from the root."""
    command = CLI
    path: list[str] = []
    words = list(args)
    while words and words[0] in GLOBAL_OPTIONS_WITH_VALUE:
        words = words[2:]
    while words and _subcommands(command) is not None and not words[0].startswith("-"):
        sub = _subcommands(command).get(words[0])
        if sub is None:
            raise AssertionError(f"`eduhub {' '.join(path + words[:1])}`: no such command")
        command, path, words = sub, [*path, words[0]], words[1:]
    return path, command, words


def test_the_page_names_the_commands_an_operator_needs():
    paths = {" ".join(resolve(args)[0]) for args in COMMANDS}
    for needed in ("deploy k8s", "schemas check", "schemas publish", "connectors status", "connectors offsets",
                   "connectors list", "dlq list", "dlq replay", "acl apply", "tail"):
        assert needed in paths, f"docs/operations.md no longer shows `eduhub {needed}`"


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_every_command_line_parses_with_the_real_cli(args):
    path, command, rest = resolve(args)
    if _subcommands(command) is not None:
        assert not rest, f"`eduhub {' '.join(args)}`: {' '.join(path) or 'eduhub'} is a group, not a command"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in rest:
        if word.startswith("-") and word != "-":
            assert word.split("=", 1)[0] in options, (
                f"`eduhub {' '.join(args)}`: `eduhub {' '.join(path)}` has no option {word} (it has {sorted(options)})")
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output


def test_the_command_parser_catches_a_wrong_command_and_a_wrong_option():
    with pytest.raises(AssertionError, match="no such command"):
        resolve(["connectors", "statuss", "x"])
    _, command, rest = resolve(["connectors", "offsets", "x", "--reset"])
    assert command.name == "offsets" and rest == ["x", "--reset"]
    assert eduhub_commands("```bash\nEDUHUB_X=1 .venv/bin/eduhub schemas check   # note\n```\n`eduhub tail t --max 5`, "
                           "`eduhub-validate` and `eduhub_x`") == [["schemas", "check"], ["tail", "t", "--max", "5"]]


@pytest.mark.parametrize("figure", QUOTED)
def test_figures_quoted_from_performance_md_are_in_both(figure):
    assert figure in FLAT_PERF, f"docs/performance.md no longer says {figure!r}: update docs/operations.md"
    assert figure in FLAT_DOC, f"docs/operations.md no longer quotes {figure!r}: update QUOTED here"


def test_config_defaults_the_page_names_are_the_codes():
    config = HubConfig()
    assert config.kafka.ingest_partitions == config.kafka.canonical_partitions == 12
    assert "both 12 by default" in FLAT_DOC
    assert config.kafka.dlq_retention_days == 30 and "`kafka.dlq_retention_days`, default 30 days" in FLAT_DOC
    assert config.worker.shutdown_timeout_s == 30 and "`worker.shutdown_timeout_s` (30 s)" in FLAT_DOC
    assert config.worker.stall_timeout_s == 120 and "over 120 seconds (`worker.stall_timeout_s`)" in FLAT_DOC
    assert config.worker.dedup_window_s == 7 * 86_400 and "8 days with the default 7-day `worker.dedup_window_s`" in FLAT_DOC
    assert config.worker.batch_max_records == 20_000 and "`worker.batch_max_records` (default 20,000)" in FLAT_DOC
    assert config.connect.offsets_topic == "hub.connect.offsets"


def test_topic_retentions_the_page_names_are_what_the_hub_sets():
    from hub.ops.topology import topic_plan

    config = HubConfig.model_validate(yaml.safe_load((ROOT / "hub.yaml").read_text(encoding="utf-8")))
    plan = {spec.name: spec for spec in topic_plan(config)}
    assert plan["hub.audit"].configs == {"retention.ms": "-1"}
    assert plan["eduhub-validate-dedup-changelog"].configs["retention.ms"] == str(8 * 86_400_000)
    assert plan["hub.dlq.smas"].configs == {"retention.ms": str(30 * 86_400_000)}
    assert plan["hub.connect.offsets"].configs == {"cleanup.policy": "compact"}
    assert plan["hub.connect.offsets"].partitions == 12 and "compacted topic (12 partitions)" in FLAT_DOC
    for name in ("ingest.smas", "edu.school.score", "sub.moet-sync.school.score"):
        assert "retention.ms" not in plan[name].configs, f"{name}: the page says the broker's default applies"
    # a score reaches three subscribers: the page's arithmetic counts three copies and three audit records
    copies = [name for name in plan if name.startswith("sub.") and name.endswith(".school.score")]
    assert len(copies) == 3 and "three subscriber copies" in FLAT_DOC


def test_the_worked_estimates_add_up():
    """The per-event total and the disk table's figures, from the record sizes the page states."""
    ingest, canonical, audit, changelog = 0.55, 0.25, 0.45, 0.04
    per_event = ingest + canonical + 3 * canonical + 3 * audit + changelog
    assert f"**{per_event:.2f} kB**" in FLAT_DOC
    seven_days = ingest + canonical + 3 * canonical
    assert f"25 M × {seven_days:.2f} kB" in FLAT_DOC and f"1.6 G × {seven_days:.2f} kB" in FLAT_DOC
    assert f"| {round(25e6 * seven_days / 1e6)} GB | {round(3 * 25e6 * seven_days / 1e6)} GB |" in FLAT_DOC
    audit_per_term = 49e6 * 3 * audit / 1e6  # GB
    assert f"| {round(audit_per_term)} GB per term | {round(3 * audit_per_term)} GB per term |" in FLAT_DOC
    assert f"{1700 * per_event / 1000:.1f} MB/s" in FLAT_DOC and f"{13000 * per_event / 1000:.0f} MB/s" in FLAT_DOC
    assert f"{round(25e6 * 44 / 1e9, 1)} GB" in FLAT_DOC and f"{round(1.6e9 * 44 / 1e9)} GB" in FLAT_DOC


def test_grace_period_outlasts_the_shutdown_timeout():
    worker = ROOT / "deploy" / "k8s" / "base" / "worker.yaml"
    if not worker.exists():
        pytest.skip("deploy/k8s/base/worker.yaml is not there")
    spec = yaml.safe_load(worker.read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > HubConfig().worker.shutdown_timeout_s
    assert f"`terminationGracePeriodSeconds: {grace}`" in FLAT_DOC


def test_relative_links_point_at_files_and_headings_that_exist():
    from tests.unit.test_runbooks import anchors

    links = re.findall(r"\]\((?!https?:|#)([^)#\s]+)(?:#([^)\s]+))?\)", DOC)
    assert links
    for target, anchor in links:
        path = (OPERATIONS.parent / target).resolve()
        assert path.exists(), f"docs/operations.md links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path.read_text(encoding="utf-8")), f"{target} has no heading #{anchor}"

"""Every alert rule links to its runbook section in docs/operations.md, and every runbook section has its rule."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from tests.unit.test_operator_files import ALERT_RULES, ALERT_TESTS, run_promtool

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOK_PREFIX = "docs/operations.md#"
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercase, punctuation dropped (letters, digits, '_', '-' and spaces
    stay), each space a hyphen. Inline markup (`code`, *emphasis*, [links](...)) counts by its text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = "".join(ch for ch in text
                   if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N", "M"))
    return kept.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code blocks."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(markdown: str) -> set[str]:
    """Every anchor of the page, with GitHub's -1, -2 … suffixes for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for _, text in headings(markdown):
        anchor = github_anchor(text)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        result.add(anchor)
    return result


def runbook_sections(markdown: str) -> list[str]:
    """The level-3 headings under the level-2 heading `Runbook`."""
    sections, inside = [], False
    for level, text in headings(markdown):
        if level <= 2:
            inside = text == "Runbook"
        elif inside and level == 3:
            sections.append(text)
    return sections


def alert_rules() -> list[dict]:
    document = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


DOC = OPERATIONS.read_text(encoding="utf-8")
RULES = alert_rules()


def test_the_anchor_function_matches_githubs_rules():
    assert github_anchor("EduhubConnectorDown") == "eduhubconnectordown"
    assert github_anchor("Upgrade and rollback") == "upgrade-and-rollback"
    assert github_anchor("2. Workers, rolling") == "2-workers-rolling"
    assert github_anchor("Disk: the worker's dedup store") == "disk-the-workers-dedup-store"
    assert github_anchor("The `cluster` profile — one host") == "the-cluster-profile--one-host"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_the_runbook_has_sections_and_the_rules_exist():
    assert len(RULES) >= 10
    assert runbook_sections(DOC), "docs/operations.md has no `## Runbook` with `### <alert>` sections"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_every_rule_links_to_its_own_runbook_section(rule):
    link = rule.get("annotations", {}).get("runbook")
    assert link, f"{rule['alert']} has no `runbook` annotation"
    assert link.startswith(RUNBOOK_PREFIX), f"{rule['alert']}: runbook {link!r} is not {RUNBOOK_PREFIX}<anchor>"
    anchor = link.removeprefix(RUNBOOK_PREFIX)
    assert anchor in anchors(DOC), f"{rule['alert']}: {link} names no heading of docs/operations.md"
    assert anchor == github_anchor(rule["alert"]), f"{rule['alert']} links to another alert's section: {link}"
    assert rule["alert"] in runbook_sections(DOC), f"{rule['alert']}'s section is not under `## Runbook`"


def test_every_runbook_section_belongs_to_a_rule():
    names = {rule["alert"] for rule in RULES}
    stale = [section for section in runbook_sections(DOC) if section not in names]
    assert not stale, f"runbook sections without an alert rule (renamed or removed?): {stale}"
    sections = runbook_sections(DOC)
    assert len(sections) == len(set(sections)), "a runbook section appears twice"


def test_links_inside_operations_md_point_at_its_headings():
    """`[text](#anchor)` links of the page (the runbook cross-links to other alerts and sections)."""
    targets = re.findall(r"\]\(#([^)]+)\)", DOC)
    assert targets
    missing = sorted(set(targets) - anchors(DOC))
    assert not missing, f"links to anchors docs/operations.md does not have: {missing}"


def test_promtool_tests_expect_the_runbook_annotation():
    """promtool compares annotations exactly: every expected alert must list the runbook it carries."""
    document = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    by_name = {rule["alert"]: rule["annotations"]["runbook"] for rule in RULES}
    checked = 0
    for case in document["tests"]:
        for test in case.get("alert_rule_test", []):
            for expected in test.get("exp_alerts") or []:
                if "exp_annotations" in expected:
                    assert expected["exp_annotations"].get("runbook") == by_name[test["alertname"]]
                    checked += 1
    assert checked >= len(RULES)
    run_promtool("test", "rules", str(ALERT_TESTS.relative_to(ROOT)))

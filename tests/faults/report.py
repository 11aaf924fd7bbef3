"""The fault scenarios' table: ingested, canonical, DLQ, subscriber, lost and duplicated counts per scenario."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

COLUMNS = ("scenario", "ingested", "canonical", "dlq", "sub", "lost", "duplicated", "order_kept")


@dataclass
class ScenarioResult:
    """What one fault scenario measured; `sub` is None when the scenario does not route to subscribers."""

    scenario: str
    ingested: int
    canonical: int
    dlq: int
    lost: int
    duplicated: int
    order_kept: bool
    sub: int | None = None
    notes: list[str] = field(default_factory=list)


RESULTS: list[ScenarioResult] = []


def record(result: ScenarioResult) -> ScenarioResult:
    """Keep a scenario's figures for the table printed at the end of the run (and in test-artifacts/)."""
    RESULTS.append(result)
    artifacts = os.environ.get("EDUHUB_TEST_ARTIFACTS")
    if artifacts:
        path = Path(artifacts) / "faults.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    return result


def table(results: list[ScenarioResult] | None = None) -> list[str]:
    """The results as a Markdown table (the same lines go into the issue notes and docs/guarantees.md)."""
    rows = [COLUMNS] + [(r.scenario, r.ingested, r.canonical, r.dlq, "-" if r.sub is None else r.sub, r.lost,
                         r.duplicated, "yes" if r.order_kept else "NO") for r in (results or RESULTS)]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines

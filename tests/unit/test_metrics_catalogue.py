"""The metrics catalogue: naming and label conventions, docs/metrics.md up to date, the status page's numbers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Histogram

from hub.core.config import HubConfig
from hub.contract.docs import metrics_markdown
from hub.core.metrics import HubMetrics
from hub.runtime.status import StatusSampler

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"source", "entity", "subscriber", "stage", "rule", "group", "topic", "partition", "connector", "operation",
          "error"}
UNITS = ("_seconds", "_records", "_total", "_up", "_open", "_partitions", "_info")


def test_docs_metrics_md_is_generated_from_the_code():
    assert (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8") == metrics_markdown(), (
        "docs/metrics.md is stale: run `eduhub docs metrics -o docs/metrics.md`")


def test_every_metric_is_eduhub_prefixed_with_shared_label_names_and_a_unit():
    for metric in vars(HubMetrics()).values():
        if not hasattr(metric, "_name"):
            continue
        assert metric._name.startswith("eduhub_"), metric._name
        assert set(metric._labelnames) <= LABELS, (metric._name, metric._labelnames)
        names = [m.name for m in metric.describe()]
        exposed = names[0] + ("_total" if metric._type == "counter" else "_info" if metric._type == "info" else "")
        if isinstance(metric, Histogram):
            assert exposed.endswith("_seconds"), exposed
        elif not exposed.startswith("eduhub_events_") and not exposed.endswith(UNITS):
            raise AssertionError(f"{exposed}: no unit in the name")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_status_rates_are_per_second_over_the_window_and_totals_since_start():
    metrics, clock = HubMetrics(), Clock()
    config = HubConfig.model_validate({"sources": [{"id": "smas"}, {"id": "exam-reg"}]})
    sampler = StatusSampler(config, metrics, [{"id": "parent-app", "entities": ["school.score"],
                                               "delivery": {"kind": "http"}}], clock=clock)
    sampler.sample()
    metrics.ingested.labels("smas", "school.score").inc(100)
    metrics.invalid.labels("smas", "school.score", "schema.type").inc(10)
    metrics.dlq_writes.labels("smas", "validate").inc(10)
    metrics.delivered.labels("parent-app", "school.score").inc(40)
    metrics.consumer_lag.labels("eduhub-validate", "ingest.smas", "0").set(5)
    metrics.consumer_lag.labels("eduhub-validate", "ingest.smas", "1").set(2)
    metrics.circuit_open.labels("parent-app").set(1)
    clock.now = 10.0
    status = sampler.snapshot([], None)
    smas = next(s for s in status["sources"] if s["id"] == "smas")
    assert smas["ingested_per_s"] == 10.0 and smas["invalid_per_s"] == 1.0
    assert smas["dlq_total"] == 10 and smas["lag"] == 7
    (parent,) = status["subscribers"]
    assert parent["delivered_per_s"] == 4.0 and parent["circuit_open"] is True and parent["delivery"] == "http"
    assert status["hub"]["ingested_per_s"] == 10.0 and status["hub"]["delivered_per_s"] == 4.0
    assert next(s for s in status["sources"] if s["id"] == "exam-reg")["ingested_per_s"] == 0.0

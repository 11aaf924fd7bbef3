"""The status page's data: flow rates, DLQ counts, lag and connector states, from the worker's own metrics."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import httpx

from hub.core import __version__
from hub.core.config import ConfigError, HubConfig
from hub.core.metrics import HubMetrics
from hub.contract.topics import ingest_topic

WINDOW_S = 30.0  # rates are averaged over this long: steady enough to read, recent enough to matter


# The samples the page needs, and the labels it keeps of each (the others are summed over).
WANTED = {
    "eduhub_events_ingested_total": ("source",), "eduhub_events_valid_total": ("source",),
    "eduhub_events_invalid_total": ("source",), "eduhub_events_deduplicated_total": ("source",),
    "eduhub_events_delivered_total": ("subscriber",), "eduhub_delivery_failures_total": ("subscriber",),
    "eduhub_delivery_dead_letters_total": ("subscriber",), "eduhub_dlq_writes_total": ("source", "stage"),
    "eduhub_delivery_circuit_open": ("subscriber",), "eduhub_consumer_lag_records": ("group", "topic"),
    "eduhub_assigned_partitions": ("stage",),
}


def _totals(metrics: HubMetrics) -> dict[tuple[str, ...], float]:
    """The WANTED samples of the hub as (metric, label values...) → value."""
    totals: dict[tuple[str, ...], float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = WANTED.get(sample.name)
            if labels is None:
                continue
            key = (sample.name, *(sample.labels.get(label, "") for label in labels))
            totals[key] = totals.get(key, 0.0) + sample.value  # summed over the labels left out
    return totals


def _sum(totals: dict[tuple[str, ...], float], name: str, **match: str) -> float:
    positions = {label: i + 1 for i, label in enumerate(WANTED[name])}
    return sum(v for k, v in totals.items() if k[0] == name
               and all(k[positions[label]] == value for label, value in match.items()))


class StatusSampler:
    """Samples the metrics every few seconds and answers the status page with rates over `WINDOW_S`."""

    def __init__(self, config: HubConfig, metrics: HubMetrics, subscriptions: Iterable[Any] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.metrics = metrics
        self.subscriptions = list(subscriptions)
        self.clock = clock
        self.samples: deque[tuple[float, dict[tuple[str, ...], float]]] = deque()

    def sample(self) -> None:
        now = self.clock()
        self.samples.append((now, _totals(self.metrics)))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW_S:
            self.samples.popleft()

    def _rate(self, name: str, **match: str) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        return max(0.0, (_sum(last, name, **match) - _sum(first, name, **match)) / (t1 - t0)) if t1 > t0 else 0.0

    def _batch_p99(self, stage: str) -> float | None:
        histogram = self.metrics.batch_seconds.labels(stage)
        buckets = [(s.labels["le"], s.value) for m in histogram.collect() for s in m.samples if s.name.endswith("_bucket")]
        total = buckets[-1][1] if buckets else 0
        if not total:
            return None
        for bound, count in buckets:
            if count >= 0.99 * total:
                return None if bound == "+Inf" else float(bound)
        return None

    def snapshot(self, connectors: list[dict[str, Any]], connectors_error: str | None) -> dict[str, Any]:
        self.sample()
        totals = self.samples[-1][1]
        sources = []
        for source in self.config.sources:
            sources.append({
                "id": source.id, "description": source.description,
                "ingested_per_s": self._rate("eduhub_events_ingested_total", source=source.id),
                "valid_per_s": self._rate("eduhub_events_valid_total", source=source.id),
                "invalid_per_s": self._rate("eduhub_events_invalid_total", source=source.id),
                "ingested_total": _sum(totals, "eduhub_events_ingested_total", source=source.id),
                "dlq_total": _sum(totals, "eduhub_dlq_writes_total", source=source.id, stage="validate"),
                "lag": _sum(totals, "eduhub_consumer_lag_records", group="eduhub-validate",
                            topic=ingest_topic(source.id)),
            })
        subscribers = []
        for item in self.subscriptions:
            kind = (item.get("delivery") or {}).get("kind", "kafka")
            sid = item["id"]
            subscribers.append({
                "id": sid, "delivery": kind, "entities": item.get("entities", []),
                "delivered_per_s": self._rate("eduhub_events_delivered_total", subscriber=sid),
                "delivered_total": _sum(totals, "eduhub_events_delivered_total", subscriber=sid),
                "failures_total": _sum(totals, "eduhub_delivery_failures_total", subscriber=sid),
                "circuit_open": _sum(totals, "eduhub_delivery_circuit_open", subscriber=sid) > 0,
                "lag": _sum(totals, "eduhub_consumer_lag_records", group=f"eduhub-deliver-{sid}") if kind == "http"
                else None,
                "dlq_total": _sum(totals, "eduhub_delivery_dead_letters_total", subscriber=sid),
            })
        stages = [{"stage": stage, "assigned_partitions": int(_sum(totals, "eduhub_assigned_partitions", stage=stage)),
                   "batch_p99_s": self._batch_p99(stage)} for stage in ("validate", "route")]
        hub = {
            "ingested_per_s": self._rate("eduhub_events_ingested_total"),
            "valid_per_s": self._rate("eduhub_events_valid_total"),
            "invalid_per_s": self._rate("eduhub_events_invalid_total"),
            "delivered_per_s": self._rate("eduhub_events_delivered_total"),
            "ingested_total": _sum(totals, "eduhub_events_ingested_total"),
            "valid_total": _sum(totals, "eduhub_events_valid_total"),
            "invalid_total": _sum(totals, "eduhub_events_invalid_total"),
            "deduplicated_total": _sum(totals, "eduhub_events_deduplicated_total"),
            "dlq_total": _sum(totals, "eduhub_dlq_writes_total"),
            "lag": _sum(totals, "eduhub_consumer_lag_records"),
            "stages": stages,
        }
        return {"generated_at": datetime.now(timezone.utc).isoformat(), "version": __version__,
                "instance": self.config.worker.instance_id, "hub": hub, "sources": sources,
                "subscribers": subscribers, "connectors": connectors, "connectors_error": connectors_error}


def connect_url(config: HubConfig) -> str:
    if config.worker.connect_url:
        return config.worker.connect_url.rstrip("/")
    host = config.connect.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    scheme = "https" if config.connect.tls_cert_file else "http"
    return f"{scheme}://{host}:{config.connect.port}"


def connect_options(config: HubConfig, token: str | None = None) -> dict[str, Any]:
    """httpx client options for the connector runtime's REST API: its base URL, the bearer token (`token`, else
    the variable connect.token_env names) and the CA of worker.connect_ca_file."""
    token = (token or os.environ.get(config.connect.token_env, "")).strip()
    ca = config.worker.connect_ca_file
    try:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"worker.connect_ca_file: cannot load {ca} ({exc}) — expected a PEM file of the CA that "
                          "signed the connector runtime's certificate") from None
    return {"base_url": connect_url(config), "verify": verify, "token_env": config.connect.token_env,
            "headers": {"Authorization": f"Bearer {token}"} if token else {}}


async def connector_states(options: dict[str, Any], timeout_s: float = 1.5) -> tuple[list[dict[str, Any]], str | None]:
    """Every connector's status from the connector runtime's REST API (`connect_options`), or the reason it could
    not answer (never the token)."""
    base_url, token_env = options["base_url"], options["token_env"]
    if not options["headers"]:
        return [], f"no token for the connector runtime at {base_url}: set {token_env} (connect.token_env) to its token"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=options["headers"],
                                     verify=options["verify"]) as client:
            first = await client.get("/connectors")
            if first.status_code in (401, 403):
                reason = first.json().get("reason", first.status_code) if first.headers.get(
                    "content-type", "").startswith("application/json") else first.status_code
                return [], f"connector runtime at {base_url} refused the status page ({reason}): check {token_env} " \
                           "and connect.allowed_hosts"
            names = first.raise_for_status().json()
            answers = await asyncio.gather(*(client.get(f"/connectors/{name}/status") for name in names))
            return [a.raise_for_status().json() for a in answers], None
    except (httpx.HTTPError, ValueError) as exc:
        return [], f"connector runtime unreachable at {base_url} ({type(exc).__name__})"

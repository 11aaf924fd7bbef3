"""HTTP endpoints of a worker: /metrics (Prometheus), /healthz (alive) and /readyz (can work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.metrics import HubMetrics

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def install(app: faust.App, metrics: HubMetrics, readiness: ReadinessCheck) -> None:
    """Register the endpoints on the Faust app's web server."""

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            checks = await readiness()
            ready = all(checks.values())
            return self.json({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)

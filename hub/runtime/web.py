"""HTTP endpoints of a worker: the status page (/ and /status.json), /metrics, /healthz (alive) and /readyz (can work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.core.metrics import HubMetrics

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]
LivenessCheck = Callable[[], dict[str, bool]]
StatusSource = Callable[[], Awaitable[dict[str, Any]]]
STATUS_PAGE = Path(__file__).parent / "static" / "status.html"


def install(app: faust.App, metrics: HubMetrics, readiness: ReadinessCheck, status: StatusSource,
            liveness: LivenessCheck = dict) -> None:
    """Register the endpoints on the Faust app's web server."""
    page = STATUS_PAGE.read_bytes()  # one self-contained file: no CDN, works without internet

    @app.page("/")
    class StatusPageView(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset here; the page declares <meta charset="utf-8"> itself.
            return self.bytes(page, content_type="text/html")

    @app.page("/status.json")
    class StatusView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await status())

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            # A stage whose loop stopped turning (stalled) makes the process unhealthy: restart it.
            stages = liveness()
            alive = all(stages.values())
            return self.json({"status": "ok" if alive else "stalled", "stages": stages}, status=200 if alive else 503)

    @app.page("/readyz")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            checks = await readiness()
            ready = all(checks.values())
            return self.json({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)

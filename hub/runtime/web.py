"""HTTP endpoints of a worker: the status page (/ and /status.json), /metrics, /healthz (alive) and /readyz (can work)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.core.metrics import HubMetrics
from hub.core.websec import add_security_headers

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]
LivenessCheck = Callable[[], dict[str, bool]]
StatusSource = Callable[[], Awaitable[dict[str, Any]]]
STATUS_PAGE = Path(__file__).parent / "static" / "status.html"


def _hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", html, re.S | re.I)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
                    for b in blocks) or "'none'"


def page_policy(page: bytes) -> str:
    """The status page's Content-Security-Policy: its inline script and style allowed by hash (computed from the
    file, so editing the page keeps it working), data from its own origin, never framed."""
    html = page.decode("utf-8")
    return (f"default-src 'none'; script-src {_hashes(html, 'script')}; style-src {_hashes(html, 'style')}; "
            "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def install(app: faust.App, metrics: HubMetrics, readiness: ReadinessCheck, status: StatusSource,
            liveness: LivenessCheck = dict) -> None:
    """Register the endpoints on the Faust app's web server, every answer with the security headers."""
    page = STATUS_PAGE.read_bytes()  # one self-contained file: no CDN, works without internet
    page_headers = {"Content-Security-Policy": page_policy(page)}
    add_security_headers(app.web.web_app)

    @app.page("/")
    class StatusPageView(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset here; the page declares <meta charset="utf-8"> itself.
            return self.bytes(page, content_type="text/html", headers=dict(page_headers))

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

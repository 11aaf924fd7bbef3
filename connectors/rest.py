"""The connector runtime's REST API (Kafka Connect's shape) behind a bearer token, and /healthz, /readyz, /metrics."""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.runtime import ConnectService
from hub.core.websec import add_security_headers, allowed_hosts, bearer_matches, cross_site, host_name
from hub.kafka.admin import broker_reachable

# Answered to anyone, for probes and Prometheus: no state changes, no personal data, no token (state it in
# the docs). Everything else needs the bearer token, a known Host and no cross-site browser.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDLE_TIMEOUT_S = 30.0  # a connection that sends no complete request for this long is closed


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _refused(status: int, reason: str, error: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status, headers=headers)


def guard(token: bytes, hosts: frozenset[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: a request other than a probe needs a Host of `hosts`, no cross-site Origin, the bearer
    token, and (when it changes something) no body other than JSON."""

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path in PROBES:
            return await handler(request)
        if host_name(request.headers.get("Host")) not in hosts:
            return _refused(403, "host_not_allowed", f"this API does not answer to the host {request.host!r}; "
                            "add it to connect.allowed_hosts (EDUHUB_CONNECT_ALLOWED_HOSTS)")
        if cross_site(request):
            return _refused(403, "cross_site", "requests from another web origin are refused")
        if not bearer_matches(request.headers.get("Authorization"), token):
            return _refused(401, "unauthorized", "send Authorization: Bearer <the token of the environment variable "
                            "connect.token_env names, EDUHUB_CONNECT_TOKEN by default>",
                            {"WWW-Authenticate": 'Bearer realm="eduhub-connect"'})
        if request.method in CHANGING and (request.body_exists or "Content-Type" in request.headers) \
                and request.content_type != "application/json":
            return _refused(415, "unsupported_media_type", "send no body, or JSON with Content-Type: application/json")
        return await handler(request)

    return check


def make_app(service: ConnectService, *, token: bytes, hosts: frozenset[str] | None = None) -> web.Application:
    """Routes: GET /connectors, GET /connectors/{name}/status, PUT …/pause, …/resume, …/stop,
    POST …/restart, GET/PATCH/DELETE …/offsets (changes only while STOPPED, as KIP-875).

    `hosts`: the names the Host header may carry (default: loopback names)."""
    if not token:
        raise ValueError("the REST API needs a bearer token")
    routes = web.RouteTableDef()

    def runtime(request: web.Request):
        name = request.match_info["name"]
        try:
            return service.get(name)
        except KeyError:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no connector named {name!r}"}),
                                   content_type="application/json") from None

    @routes.get("/connectors")
    async def list_connectors(request: web.Request) -> web.Response:
        return _json(sorted(service.runtimes))

    @routes.get("/connectors/{name}/status")
    async def status(request: web.Request) -> web.Response:
        return _json(runtime(request).status.as_dict())

    @routes.put("/connectors/{name}/pause")
    async def pause(request: web.Request) -> web.Response:
        runtime(request).pause()
        return _json(runtime(request).status.as_dict(), 202)

    @routes.put("/connectors/{name}/resume")
    async def resume(request: web.Request) -> web.Response:
        target = runtime(request)
        if target.status.state == "STOPPED":
            await target.restart()
        else:
            target.resume()
        return _json(target.status.as_dict(), 202)

    @routes.put("/connectors/{name}/stop")
    async def stop(request: web.Request) -> web.Response:
        await runtime(request).stop()
        return _json(runtime(request).status.as_dict(), 202)

    @routes.post("/connectors/{name}/restart")
    async def restart(request: web.Request) -> web.Response:
        await runtime(request).restart()
        return _json(runtime(request).status.as_dict(), 202)

    @routes.get("/connectors/{name}/offsets")
    async def offsets(request: web.Request) -> web.Response:
        target = runtime(request)
        stored = (await service.offsets.read_all()).get(target.config.name)
        return _json({"connector": target.config.name, "offset": stored})

    async def _change(request: web.Request, offset: dict | None) -> web.Response:
        target = runtime(request)
        try:
            await target.reset_offset(offset)
        except RuntimeError as exc:
            return _json({"error": str(exc)}, 409)
        return _json({"connector": target.config.name, "offset": offset})

    @routes.patch("/connectors/{name}/offsets")
    async def alter_offsets(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _json({"error": "body must be JSON: {\"offset\": {...}}"}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("offset"), (dict, type(None))):
            return _json({"error": "body must be {\"offset\": {...}} or {\"offset\": null}"}, 400)
        return await _change(request, body["offset"])

    @routes.delete("/connectors/{name}/offsets")
    async def reset_offsets(request: web.Request) -> web.Response:
        return await _change(request, None)

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        states = {name: r.status.state for name, r in service.runtimes.items()}
        producers = list(service.producers.values())  # one per Kafka principal
        broker = bool(producers) and all([await broker_reachable(p.client) for p in producers])
        # Ready = this process serves: the broker answers and every connector was handed to its loop. A
        # connector RETRYING (its source down) still is: that is EduhubConnectorDown's business, and an
        # unready pod would also take the REST API and the http connector's intake out of service.
        ready = broker and bool(states) and all(s != "UNASSIGNED" for s in states.values())
        return _json({"status": "ready" if ready else "not ready", "checks": {"broker": broker},
                      "connectors": states}, 200 if ready else 503)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(service.metrics.registry),
                            content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app = web.Application(middlewares=[guard(token, allowed_hosts("") if hosts is None else hosts)])
    add_security_headers(app)
    app.add_routes(routes)
    return app


async def serve(service: ConnectService, host: str, port: int, *, token: bytes, extra_hosts: Iterable[str] = (),
                ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Listen on host:port (HTTPS with `ssl_context`); the Host header may name `host`, loopback or `extra_hosts`."""
    runner = web.AppRunner(make_app(service, token=token, hosts=allowed_hosts(host, extra_hosts)),
                           keepalive_timeout=IDLE_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner

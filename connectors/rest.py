"""The connector runtime's REST API (Kafka Connect's shape), with /healthz, /readyz and /metrics."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.runtime import ConnectService
from hub.kafka.admin import broker_reachable


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def make_app(service: ConnectService) -> web.Application:
    """Routes: GET /connectors, GET /connectors/{name}/status, PUT …/pause, …/resume, …/stop,
    POST …/restart, GET/PATCH/DELETE …/offsets (changes only while STOPPED, as KIP-875)."""
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
        broker = await broker_reachable(service.producer.client)
        ready = broker and bool(states) and all(s in ("RUNNING", "PAUSED", "STOPPED") for s in states.values())
        return _json({"status": "ready" if ready else "not ready", "checks": {"broker": broker},
                      "connectors": states}, 200 if ready else 503)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(service.metrics.registry),
                            content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app = web.Application()
    app.add_routes(routes)
    return app


async def serve(service: ConnectService, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(service))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner

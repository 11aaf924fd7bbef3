"""A real HTTP subscriber endpoint for the delivery tests: an aiohttp server in a thread that checks
signatures, records what it accepted, and answers as each test scripts it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web


class Receiver:
    """`answer(body) -> status` decides each response; accepted bodies (2xx) are kept in order."""

    def __init__(self, port: int, secret: bytes, answer: Callable[[dict[str, Any]], int] = lambda body: 200) -> None:
        self.port = port
        self.secret = secret
        self.answer = answer
        self.accepted: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/events"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        timestamp = request.headers.get("X-EduHub-Timestamp", "")
        expected = "sha256=" + hmac.new(self.secret, f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-EduHub-Signature", "")):
            with self._lock:
                self.bad_signatures += 1
            return web.Response(status=401)
        body = json.loads(raw)
        status = self.answer(body)
        with self._lock:
            self.requests.append(body)
            if 200 <= status < 300:
                self.accepted.append(body)
        return web.Response(status=status, text="ok" if status < 300 else "scripted failure")

    def start(self) -> "Receiver":
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/hub/events", self._handle)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError(f"receiver did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            return list(self.accepted), list(self.requests)

"""HTTP push ingest: `POST /ingest/{source}` with HMAC-signed bodies, answered 202 once Kafka holds the events."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field

from connectors.base import ConnectorConfig, SourceConnector, SourceRecord, register
from connectors.http_request import Rejected as _Rejected
from connectors.http_request import TokenBucket, answer, read_body, signature_headers
from hub.contract.envelope import Problem, check_envelope, read_json, text_problems
from hub.contract.schemas import Catalogue
from hub.contract.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, sign
from hub.core.websec import add_security_headers, server_ssl_context

__all__ = ["HEADER_SIGNATURE", "HEADER_TIMESTAMP", "HttpConnector", "HttpConnectorConfig", "sign"]

log = logging.getLogger(__name__)

# Seen signatures are swept of expired entries at most this often (seconds).
_SWEEP_EVERY_S = 1.0


class HttpConnectorConfig(ConnectorConfig):
    """Keys of an `http` connector in hub.yaml. The HMAC key itself never is one: it is read from
    the environment variable `secret_env` names."""

    host: str = Field("127.0.0.1", description="address the ingest server listens on; 0.0.0.0 for every interface")
    port: int = Field(8088, ge=0, le=65535, description="TCP port of the ingest server (0: any free port)")
    secret_env: str = Field(
        "EDUHUB_HTTP_SECRET",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the HMAC-SHA256 key shared with the source",
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1, le=64 * 1024 * 1024,
                                description="largest request body accepted, bytes; larger ones get 413")
    max_events: int = Field(1000, ge=1, le=100_000, description="most envelopes in one request; more get 400")
    rate_per_s: float = Field(50.0, gt=0, le=100_000,
                              description="sustained requests per second of the source (token bucket refill)")
    burst: int = Field(100, ge=1, le=1_000_000,
                       description="requests the source may send at once before the rate applies (bucket size)")
    max_skew_s: int = Field(300, ge=1, le=3600,
                            description="how far X-EduHub-Timestamp may be from the hub's clock, seconds; "
                                        "also how long a signature is remembered to refuse replays")
    ack_timeout_s: float = Field(30.0, gt=0, le=600,
                                 description="how long a request waits for Kafka to hold its events before 503")
    read_timeout_s: float = Field(30.0, gt=0, le=600,
                                  description="longest a client may take to send a request's headers, and again its "
                                              "body; slower ones are disconnected (the body: 408)")
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain of the ingest server; with "
                                                         "tls_key_file it serves HTTPS")
    tls_key_file: Path | None = Field(None, description="PEM private key (unencrypted) of tls_cert_file")


def _problem(index: int | None, problem: Problem) -> dict[str, Any]:
    return {"index": index, **problem.as_dict()}


@register
class HttpConnector(SourceConnector):
    """Receives envelopes pushed by a source over HTTP and answers once Kafka holds them.

    A request is `POST /ingest/{source}` whose body is one envelope (a JSON object) or a JSON
    array of envelopes, with two headers:

    - `X-EduHub-Timestamp`: the unix time of sending, in seconds;
    - `X-EduHub-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the shared secret,
      of the timestamp, a dot, and the body bytes exactly as sent.

    Order of checks: the signature headers (presence, format, freshness) before any byte of the
    body is read; the body under `max_body_bytes` and `read_timeout_s`; the HMAC; replay; only
    then the source's rate budget, so nobody without the key can spend it; then the envelopes.

    Answers (every refusal is JSON with a machine-readable `reason`): 202 `{"accepted": n,
    "event_ids": [...]}` once Kafka holds every event; 400 (reason "invalid", with `problems`,
    each with the `index` of its envelope) when the signed body is not JSON, not UTF-8 text or
    not envelopes, and then none of the request is published, or "bad_body" for a body framed
    wrongly; 401 for missing headers, a timestamp more than `max_skew_s` away (reason "stale")
    or a signature seen before (reason "replayed"); 403 for a wrong signature; 404 for another
    source; 408 for a body slower than `read_timeout_s` (the connection is closed); 413 for a
    body over `max_body_bytes`; 415 for a compressed body (Content-Encoding); 429 with
    Retry-After over the rate; 503 when Kafka did not take the events in `ack_timeout_s` —
    retry: event ids make the retry idempotent. Re-sign a retry with a fresh timestamp; an
    identical resend is accepted only after a 503 or a 429.

    How a client signs a request (Python)::

        import hashlib, hmac, json, os, time, httpx

        secret = os.environ["EDUHUB_HTTP_SECRET"].encode()
        body = json.dumps([envelope, ...], ensure_ascii=False).encode("utf-8")
        ts = int(time.time())
        signature = "sha256=" + hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        httpx.post("http://hub:8088/ingest/exam-portal", content=body,
                   headers={"Content-Type": "application/json",
                            "X-EduHub-Timestamp": str(ts), "X-EduHub-Signature": signature})

    (`connectors.http.sign(secret, ts, body)` returns the same header value.)

    For the runtime: `poll` hands out the queued records; set each record's `acknowledged`
    future (result True, or an exception) once Kafka acknowledged or failed it, checking
    `acknowledged.done()` first — `stop` fails the futures still pending.
    """

    kind = "http"
    config_model = HttpConnectorConfig

    def __init__(self, config: HttpConnectorConfig) -> None:
        super().__init__(config)
        self.config: HttpConnectorConfig = config
        self._secret: bytes | None = None
        self._entities: frozenset[str] = frozenset()
        self._queue: asyncio.Queue[SourceRecord] = asyncio.Queue()
        self._pending: set[asyncio.Future] = set()
        self._buckets: dict[str, TokenBucket] = {}
        self._seen: dict[str, float] = {}  # signature -> wall time after which it is stale anyway
        self._swept = 0.0
        self._received = 0
        self._runner: web.AppRunner | None = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, offset: dict[str, Any] | None) -> None:
        """Read the secret, load the entity names and listen; `offset` only continues the counter."""
        secret = os.environ.get(self.config.secret_env, "")
        if not secret:
            raise RuntimeError(
                f"http connector {self.config.name!r}: environment variable {self.config.secret_env} is not set; "
                f"it must hold the HMAC key shared with source {self.config.source!r}"
            )
        tls = server_ssl_context(self.config.tls_cert_file, self.config.tls_key_file,
                                 f"connectors[{self.config.name}]")
        self._secret = secret.encode("utf-8")
        self._entities = Catalogue.load().names
        self._received = int((offset or {}).get("received", 0))
        self._queue = asyncio.Queue()
        self._stopping = False
        self._buckets = {self.config.source: TokenBucket(self.config.rate_per_s, self.config.burst)}

        app = web.Application(client_max_size=self.config.max_body_bytes)
        add_security_headers(app)
        app.router.add_post("/ingest/{source}", self._ingest)
        app.router.add_get("/healthz", self._healthz)
        # keepalive_timeout bounds how long a connection may take to send a complete request head (aiohttp
        # closes one still waiting for it); the body has its own deadline. No decompression: the signature
        # covers the bytes as sent.
        runner = web.AppRunner(app, shutdown_timeout=5.0, keepalive_timeout=self.config.read_timeout_s,
                               auto_decompress=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=tls)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("http connector %s listening on %s:%s for source %s", self.config.name, self.config.host,
                 self.bound_port, self.config.source)

    @property
    def bound_port(self) -> int | None:
        """The port actually listened on (useful with port 0), or None when not started."""
        if self._runner is None:
            return None
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        return None

    async def stop(self) -> None:
        """Refuse new requests, fail what waits for Kafka (its callers get 503), close the server."""
        self._stopping = True
        stopped = ConnectionError(f"http connector {self.config.name} stopped")
        for future in list(self._pending):
            if not future.done():
                future.set_exception(stopped)
        while not self._queue.empty():  # their futures just failed: nobody waits for them any more
            self._queue.get_nowait()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def poll(self) -> list[SourceRecord]:
        """What is queued now, at most `batch_size`; waits up to `poll_interval_s` for a first one."""
        records: list[SourceRecord] = []
        if self._queue.empty():
            if self._stopping:
                return records
            getter = asyncio.ensure_future(self._queue.get())
            try:
                await asyncio.wait({getter}, timeout=self.config.poll_interval_s)
            finally:
                if not getter.done():
                    getter.cancel()  # Queue.get leaves the item queued when cancelled before it returns
                    await asyncio.wait({getter})
            if not getter.cancelled():
                self._keep(records, getter.result())
        while len(records) < self.config.batch_size and not self._queue.empty():
            self._keep(records, self._queue.get_nowait())
        return records

    @staticmethod
    def _keep(records: list[SourceRecord], record: SourceRecord) -> None:
        if record.acknowledged is None or not record.acknowledged.done():  # done: failed by stop()
            records.append(record)

    # -- HTTP ------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ingest(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except _Rejected as rejected:
            level = logging.INFO if rejected.status in (400, 404, 408, 413, 415, 429) else logging.WARNING
            log.log(level, "http connector %s: %s %s from %s: %s", self.config.name, rejected.status,
                    rejected.reason, request.remote, rejected.error)
            return await answer(request, rejected)

    async def _handle(self, request: web.Request) -> web.Response:
        config = self.config
        source = request.match_info["source"]
        if source != config.source:
            raise _Rejected(404, "unknown_source", f"this endpoint ingests source {config.source!r}, not {source!r}")
        if self._stopping or self._secret is None:
            raise _Rejected(503, "stopping", "the connector is stopping; retry later")

        # The headers first: a request that is not signed, or signed long ago, costs no body read.
        now = time.time()
        timestamp, signature = signature_headers(request, config.max_skew_s, now)
        body = await read_body(request, config.max_body_bytes, config.read_timeout_s)
        if not hmac.compare_digest(sign(self._secret, timestamp, body), signature):
            raise _Rejected(403, "bad_signature", f"{HEADER_SIGNATURE} does not match the body and timestamp")
        self._sweep_seen(now)
        if signature in self._seen:
            raise _Rejected(401, "replayed", "this signed request was received before; re-sign with a new timestamp",
                            headers={"WWW-Authenticate": "EduHub-HMAC"})
        # Only a request signed with the source's key spends the source's budget: nobody else can exhaust it.
        wait = self._buckets[source].take()
        if wait > 0:
            raise _Rejected(429, "rate_limited", f"over {config.rate_per_s:g} requests/s (burst {config.burst})",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
        self._seen[signature] = timestamp + config.max_skew_s

        envelopes = self._envelopes(body)
        futures = self._enqueue(envelopes)
        response = await self._await_acks(futures, envelopes)
        if response.status == 503:
            self._seen.pop(signature, None)  # nothing or part of it published: an identical resend may retry
        return response

    def _sweep_seen(self, now: float) -> None:
        if now - self._swept < _SWEEP_EVERY_S:
            return
        self._swept = now
        expired = [sig for sig, until in self._seen.items() if until < now]
        for sig in expired:
            del self._seen[sig]

    def _envelopes(self, body: bytes) -> list[dict[str, Any]]:
        """The request's envelopes, all of them passing the envelope checks, or a 400."""
        doc, problem = read_json(body)
        if problem is not None:
            raise _Rejected(400, "invalid", "the body is not JSON", problems=[_problem(None, problem)])
        if isinstance(doc, dict):
            docs = [doc]
        elif isinstance(doc, list):
            docs = doc
        else:
            raise _Rejected(400, "invalid", "the body must be an envelope (object) or an array of envelopes",
                            problems=[_problem(None, Problem("", "ingest.not_envelope",
                                                             f"expected an object or array, got {type(doc).__name__}"))])
        if not docs:
            raise _Rejected(400, "invalid", "the array holds no envelope",
                            problems=[_problem(None, Problem("", "ingest.empty", "at least one envelope is required"))])
        if len(docs) > self.config.max_events:
            raise _Rejected(400, "invalid", f"more than {self.config.max_events} envelopes in one request",
                            problems=[_problem(None, Problem("", "ingest.too_many_events",
                                                             f"{len(docs)} envelopes; at most {self.config.max_events} "
                                                             "per request"))])
        problems: list[dict[str, Any]] = []
        sources = {self.config.source}
        for index, item in enumerate(docs):
            _, found = check_envelope(item, entities=self._entities, sources=sources, topic_source=self.config.source)
            # Text that cannot be written as UTF-8 (a lone surrogate) could never be published: refuse it here.
            # A control character inside `data` is the validator's to dead-letter, like any data problem.
            found += [p for p in text_problems(body, item) if p.rule != "schema.control_char"]
            problems.extend(_problem(index, p) for p in found)
        if problems:
            bad = len({p["index"] for p in problems})
            raise _Rejected(400, "invalid", f"{bad} of {len(docs)} envelope(s) invalid; nothing was accepted",
                            problems=problems)
        return docs

    def _enqueue(self, envelopes: Iterable[dict[str, Any]]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future] = []
        for envelope in envelopes:
            future = loop.create_future()
            future.add_done_callback(self._settled)
            self._pending.add(future)
            self._received += 1
            self._queue.put_nowait(SourceRecord(envelope=envelope, offset={"received": self._received},
                                                acknowledged=future))
            futures.append(future)
        return futures

    def _settled(self, future: asyncio.Future) -> None:
        self._pending.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved, so a failure nobody awaits any more is not logged as lost

    async def _await_acks(self, futures: list[asyncio.Future], envelopes: list[dict[str, Any]]) -> web.Response:
        # asyncio.wait, not wait_for(gather): a timeout must not cancel futures the runtime still holds.
        _, not_done = await asyncio.wait(futures, timeout=self.config.ack_timeout_s)
        if not_done:
            error = f"Kafka did not acknowledge {len(not_done)} of {len(futures)} event(s) in " \
                    f"{self.config.ack_timeout_s:g} s; retry (event ids make it idempotent)"
            log.warning("http connector %s: 503: %s", self.config.name, error)
            return web.json_response({"error": error, "reason": "timeout"}, status=503, headers={"Retry-After": "5"})
        failures = [f for f in futures if f.cancelled() or f.exception() is not None]
        if failures:
            first = failures[0]
            cause = "cancelled" if first.cancelled() else f"{type(first.exception()).__name__}: {first.exception()}"
            error = f"{len(failures)} of {len(futures)} event(s) not published ({cause}); retry " \
                    "(event ids make it idempotent)"
            log.warning("http connector %s: 503: %s", self.config.name, error)
            return web.json_response({"error": error, "reason": "publish_failed"}, status=503,
                                     headers={"Retry-After": "5"})
        event_ids = [envelope["event_id"] for envelope in envelopes]
        log.debug("http connector %s: accepted %d event(s)", self.config.name, len(event_ids))
        return web.json_response({"accepted": len(event_ids), "event_ids": event_ids}, status=202)

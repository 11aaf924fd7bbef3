"""The main job on the embedded default (`make run`): local parts, the seed systems, their connectors,
a worker, a subscriber printing what reaches the canonical topics, and the HTTP subscribers' webhooks."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.core.config import HubConfig
from hub.contract.envelope import parse_timestamp
from hub.demo.local import LocalStack
from hub.contract.registry import SchemaRegistry
from hub.contract.schemas import Catalogue, to_json
from hub.kafka.admin import partitions_of
from hub.kafka.clients import KafkaClients

DEMO_DIR = Path(".eduhub/demo")  # where hub.yaml's demo connectors find their databases and folders
SECRET_ENV = "EDUHUB_HTTP_SECRET"
DEMO_PSEUDONYM_KEY = "eduhub-demo-pseudonym-key-not-for-production"
DEMO_WEBHOOK_PORT = 8090  # hub.yaml's HTTP subscribers point here: the demo plays their endpoints
CONNECT_TOKEN_FILE = "connect.token"  # in local.state_dir while `make run` runs: `eduhub connectors` reads it


def connect_token_file(config: HubConfig) -> Path:
    """Where `make run` leaves the REST API token it made (owner-only), for `eduhub connectors` in another shell."""
    return Path(config.local.state_dir) / CONNECT_TOKEN_FILE


def hand_out_connect_token(config: HubConfig, env: dict[str, str]) -> Path | None:
    """Unless the environment already has one, make a random REST API token for this run: the children get it
    in `env` (the connector runtime requires it, the worker's status page sends it) and the CLI finds it in
    `connect_token_file` (mode 0600). Returns the file to remove at the end, if one was written."""
    if env.get(config.connect.token_env, "").strip():
        return None
    env[config.connect.token_env] = token = secrets.token_urlsafe(32)
    path = connect_token_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token)
    os.chmod(path, 0o600)  # an older file keeps its mode through O_TRUNC
    return path


class Child:
    """A child process of ours (worker, connector runtime), stopped by its pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def wait_ready(self, url: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready within {timeout_s:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def summary(topic: str, record: dict) -> str:
    """One line about a canonical record, for people watching the demo."""
    name = record.get("full_name") or record.get("name") or ""
    detail = {
        "edu.school.score": lambda r: f"{r['subject']} {r['kind']} {r.get('score') or r.get('pass_result')}",
        "edu.school.term_result": lambda r: f"term {r['term']} {r['learning_rating']}/{r['conduct_rating']}",
        "edu.exam.registration": lambda r: " ".join(r["subjects"]),
        "edu.enrollment.application": lambda r: f"{r['level']} → " + ", ".join(p["school_code"] for p in r["preferences"]),
        "edu.enrollment.result": lambda r: f"{r['outcome']} {r.get('admitted_school_code') or ''}",
    }.get(topic, lambda r: r.get("status", ""))
    return f"{name} {detail(record)}".strip()


async def subscribe(bootstrap: str, registry_url: str, topics: list[str], stop: asyncio.Event,
                    echo: Callable[[str], None], started: float, since_ms: int, counts: dict[str, int]) -> None:
    """A downstream app: a plain Kafka consumer of every canonical topic, printing each record
    written since `since_ms` (so the systems' first snapshot shows, and older runs do not)."""
    partitions = [TopicPartition(t, p) for t in topics for p in await partitions_of(KafkaClients.plain(bootstrap), t)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(partitions)
        found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, found[tp].offset if found[tp] is not None else ends[tp])
        async with SchemaRegistry(registry_url) as registry:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for message in messages:
                        counts[message.topic] = counts.get(message.topic, 0) + 1
                        if message.value is None:
                            echo(f"[+{time.monotonic() - started:5.1f}s] {message.topic:27} {message.key.decode()} deleted")
                            continue
                        record = to_json(await registry.decode(message.value))
                        echo(f"[+{time.monotonic() - started:5.1f}s] {message.topic:27} {message.key.decode()}  "
                             f"{summary(message.topic, record)}")
    finally:
        await consumer.stop()


async def drive_systems(config: HubConfig, secret: bytes, stop: asyncio.Event, rate: float) -> None:
    """Make the seed systems change: school records, exam registrations, applications, spreadsheets."""
    from hub.demo.simulators import (AdmissionPortal, ExamRegistrationOutbox, SchoolManagementDatabase,
                                     SchoolSpreadsheets)

    smas = SchoolManagementDatabase(f"sqlite:///{DEMO_DIR / 'smas.db'}")
    exams = ExamRegistrationOutbox(f"sqlite:///{DEMO_DIR / 'exam-reg.db'}")
    http = next(c for c in config.connectors if c["kind"] == "http")
    portal = AdmissionPortal(f"http://127.0.0.1:{http.get('port', 8088)}", secret, source=http["source"])
    sheets = SchoolSpreadsheets(DEMO_DIR / "sheets" / "inbox")
    tick = 0
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            tick += 1
            await asyncio.to_thread(smas.step, max(1, int(rate)))
            await asyncio.to_thread(exams.submit, max(1, int(rate / 2)))
            if tick % 2 == 0:
                await portal.post(portal.applications(max(1, int(rate / 2))), client)
            results = portal.results(2) if tick % 6 == 0 else []  # admission results (enrollment.result)
            if results:
                await portal.post(results, client)
            if tick % 5 == 0:
                await asyncio.to_thread(exams.publish_results, 2)  # exam results, through the same outbox
            if tick % 15 == 1:
                await asyncio.to_thread(sheets.write_scores_csv, 20, 1)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass


async def serve_webhooks(subscribers: dict[str, bytes], port: int, stop: asyncio.Event,
                         echo: Callable[[str], None], started: float, since_ms: int, counts: dict[str, int],
                         listening: Callable[[], None] = lambda: None) -> None:
    """The HTTP subscribers' side: checks each POST's signature and prints what arrived."""
    from aiohttp import web

    from hub.contract.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, sign

    async def hook(request: web.Request) -> web.Response:
        subscriber = request.match_info["subscriber"]
        body = await request.read()
        secret = subscribers.get(subscriber)
        if secret is None or request.headers.get(HEADER_SIGNATURE) != sign(
                secret, int(request.headers.get(HEADER_TIMESTAMP, "0")), body):
            return web.Response(status=401, text="bad signature")
        event = json.loads(body)
        name = f"webhook {subscriber}"
        counts[name] = counts.get(name, 0) + 1
        occurred = parse_timestamp(event.get("occurred_at"))
        if occurred is None or occurred.timestamp() * 1000 < since_ms:
            return web.Response(status=204)  # a backlog of earlier runs: counted, not printed
        echo(f"[+{time.monotonic() - started:5.1f}s] {name:27} {event['key']}  {event['entity']} {event['op']} "
             f"(event {event['event_id'][:8]}…)")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/{subscriber}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    listening()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


class Webhooks(threading.Thread):
    """The webhooks in a thread of their own, listening before the worker starts delivering (a worker
    that finds them closed would open its circuit breaker and wait out its pause)."""

    def __init__(self, hooks: dict[str, bytes], echo: Callable[[str], None], started: float, since_ms: int,
                 counts: dict[str, int]) -> None:
        super().__init__(name="demo-webhooks", daemon=True)
        self.args = (hooks, DEMO_WEBHOOK_PORT)
        self.rest = (echo, started, since_ms, counts)
        self.listening = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None

    def run(self) -> None:
        async def serve() -> None:
            self.stopping = asyncio.Event()
            await serve_webhooks(*self.args, self.stopping, *self.rest, listening=self.listening.set)

        self.loop.run_until_complete(serve())

    def start_listening(self) -> None:
        self.start()
        if not self.listening.wait(10):
            raise RuntimeError(f"the demo webhooks could not listen on port {DEMO_WEBHOOK_PORT}")

    def stop(self) -> None:
        if self.is_alive() and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
            self.join(10)


def http_subscribers(config: HubConfig) -> dict[str, tuple[str, str]]:
    """subscriber id → (url, secret_env) of the HTTP subscriptions in hub.yaml."""
    return {s["id"]: (s["delivery"]["url"], s["delivery"]["secret_env"]) for s in config.subscriptions
            if isinstance(s.get("delivery"), dict) and s["delivery"].get("kind") == "http"}


def prepare_systems() -> None:
    """Create the demo databases and folders on first run, with a seeded cohort of a few schools."""
    from hub.demo.simulators import ExamRegistrationOutbox, SchoolManagementDatabase

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "sheets" / "inbox").mkdir(parents=True, exist_ok=True)
    smas = SchoolManagementDatabase(f"sqlite:///{DEMO_DIR / 'smas.db'}", seed=2026)
    smas.create_schema()
    if smas.count("schools") == 0:
        smas.seed(schools=3, classes_per_school=2, students_per_class=15, teachers_per_school=4)
    ExamRegistrationOutbox(f"sqlite:///{DEMO_DIR / 'exam-reg.db'}", seed=2026).create_schema()


def run_demo(config: HubConfig, config_path: Path | None, *, rate: float = 5.0,
             echo: Callable[[str], None] = print) -> None:
    """Start everything, print the URLs, stream until Ctrl-C, then stop what we started."""
    started = time.monotonic()
    since_ms = int(time.time() * 1000)
    stack = LocalStack(config.local)
    before = {name: part["pid"] for name, part in stack.status().items() if part["running"]}
    parts = stack.up(echo=echo)
    ours_local = any(before.get(name) != part.pid for name, part in parts.items())
    prepare_systems()
    secret = secrets.token_hex(16)
    env = {**os.environ, "EDUHUB_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
           "EDUHUB_REGISTRY_URL": stack.registry_url, SECRET_ENV: secret}
    # Pseudonyms must be stable across runs, so the demo's key is fixed; a real deployment sets its own.
    env.setdefault(config.routing.key_env, DEMO_PSEUDONYM_KEY)
    hooks = {}
    for subscriber, (url, secret_env) in http_subscribers(config).items():
        env.setdefault(secret_env, secrets.token_hex(16))  # the demo's webhooks share it with the worker
        if url.startswith(f"http://127.0.0.1:{DEMO_WEBHOOK_PORT}/"):
            hooks[subscriber] = env[secret_env].encode()
    if config_path is not None:
        env["EDUHUB_CONFIG"] = str(config_path)
    token_file = hand_out_connect_token(config, env)
    logs = Path(config.local.state_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    counts: dict[str, int] = {}
    webhooks = Webhooks(hooks, echo, started, since_ms, counts) if hooks else None
    try:
        if webhooks is not None:
            webhooks.start_listening()
        worker = Child("worker", [sys.executable, "-m", "hub", "worker"], env, logs / "worker.log")
        children.append(worker)
        connect = Child("connectors", [sys.executable, "-m", "hub", "connect"], env, logs / "connect.log")
        children.append(connect)
        web = f"http://{config.worker.web_host}:{config.worker.web_port}"
        api = f"http://{config.connect.host}:{config.connect.port}"
        worker.wait_ready(f"{web}/readyz")
        connect.wait_ready(f"{api}/readyz")
        echo(f"status page {web}/  (Vietnamese; English by the button)")
        echo(f"worker      {web}/metrics  {web}/readyz  log {worker.log}")
        echo(f"connectors  {api}/connectors  {api}/metrics  log {connect.log}")
        echo(f"            REST API token: {token_file or '$' + config.connect.token_env} "
             "(`eduhub connectors list` reads it)")
        echo(f"ready after {time.monotonic() - started:.1f} s; the seed systems are changing (Ctrl-C stops everything)")
        asyncio.run(_stream(stack, config, secret.encode(), rate, echo, started, since_ms, counts))
    except KeyboardInterrupt:
        pass
    finally:
        echo("stopping…")
        if webhooks is not None:
            webhooks.stop()
        for child in reversed(children):
            child.stop()
            echo(f"stopped {child.name} (pid {child.process.pid})")
        if token_file is not None:
            token_file.unlink(missing_ok=True)
        if ours_local:
            stack.down(echo=echo)


async def _stream(stack: LocalStack, config: HubConfig, secret: bytes, rate: float,
                  echo: Callable[[str], None], started: float, since_ms: int, counts: dict[str, int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    topics = sorted(e.topic for e in Catalogue.load().entities.values())
    subscriber = asyncio.create_task(subscribe(stack.bootstrap_servers, stack.registry_url, topics, stop, echo,
                                               started, since_ms, counts))
    systems = asyncio.create_task(drive_systems(config, secret, stop, rate))
    tasks = {subscriber, systems}
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception():
            raise task.exception()
    echo("received per topic: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))

"""Reusable pieces of the fault scenarios: a keyed event stream, a paced feeder, workers, the tally of what came out.

A scenario (the `scenario` fixture of tests/faults/conftest.py gives a `Scenario`) makes a `Stream` for a
fresh source (keys with 1-4 events in sequence, about 5 % invalid), feeds it to `ingest.<source>` with a
`Feeder` while it does harm to a worker, the broker or the registry, waits (bounded) until every event is
accounted for, and takes one final `tally` from a fresh read of the canonical topic, the source's DLQ and
the scenario's Kafka subscriber topic: how many arrived, and how many were lost, duplicated or out of
order per key. Everything is read back from the real broker with read_committed consumers, never from
the workers' own counters. The scenario's row goes to the table printed at the end of the run.

Example::

    def test_something_nasty(scenario):
        stream = scenario.stream()                      # EDUHUB_FAULT_EVENTS events, default 20 000
        worker = scenario.worker()                      # one subscription: sub.<id>.exam.registration
        with scenario.feeder(stream, duration_s=20) as feeder:
            feeder.wait_produced(len(stream.envelopes) // 2)
            ...                                         # kill, stop, restart things
        scenario.finish(stream, "something nasty")      # records the row, asserts 0 lost, 0 dup, order
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

from hub.kafka import io as kafkaio
from hub.demo.local import LocalStack
from hub.kafka.admin import ensure_topics, partitions_of
from hub.kafka.clients import KafkaClients
from tests.conftest import PORT_OFFSET, ROOT, WorkerProcess, write_config
from tests.faults.report import ScenarioResult, record
from tests.kafka_helpers import encode, header, registration_envelope, wait_until

CANONICAL_TOPIC = "edu.exam.registration"
PSEUDONYM_KEY = "fault-scenarios-master-key-0123456789"
DEFAULT_EVENTS = 20_000


def say(line: str) -> None:
    """A progress line of a scenario (pytest -s shows them; the clock helps to read the workers' logs)."""
    print(f"[faults {time.strftime('%H:%M:%S')}] {line}", flush=True)


def events_count() -> int:
    """How many events each scenario streams: EDUHUB_FAULT_EVENTS (`make test-faults EVENTS=100000`)."""
    return int(os.environ.get("EDUHUB_FAULT_EVENTS", DEFAULT_EVENTS))


def scenario_seed(scenario: str) -> int:
    """The seed of a scenario's random choices: EDUHUB_FAULT_SEED replays a run (it is printed)."""
    given = os.environ.get("EDUHUB_FAULT_SEED")
    seed = int(given) if given else random.SystemRandom().randrange(10**9)
    say(f"{scenario}: EDUHUB_FAULT_SEED={seed}")
    return seed


def subscription(sub_id: str) -> list[dict]:
    """The one Kafka subscription every scenario's workers run, so the route stage is under the fault too."""
    return [{"id": sub_id, "entities": ["exam.registration"], "pii_default": "keep"}]


def sub_topic(sub_id: str) -> str:
    return f"sub.{sub_id}.exam.registration"


# ---------------------------------------------------------------- the stream


@dataclass
class Stream:
    """Envelopes in the order they are produced; each key has 1-4 events in sequence (c, then u's)."""

    source: str
    envelopes: list[dict]
    invalid: set[str]                                 # event_ids built to fail validation
    key_of: dict[str, str] = field(init=False)        # event_id → entity key
    ids: set[str] = field(init=False)                 # every event_id of the stream
    valid: set[str] = field(init=False)               # the ones that must reach canonical and sub

    def __post_init__(self) -> None:
        self.key_of = {e["event_id"]: e["key"] for e in self.envelopes}
        self.ids = set(self.key_of)
        self.valid = self.ids - self.invalid

    @property
    def topic(self) -> str:
        return f"ingest.{self.source}"

    def valid_order(self) -> dict[str, list[str]]:
        """Per key, the event_ids of its valid events in produced order (what canonical and sub must show)."""
        order: dict[str, list[str]] = defaultdict(list)
        for envelope in self.envelopes:
            if envelope["event_id"] not in self.invalid:
                order[envelope["key"]].append(envelope["event_id"])
        return order


def make_stream(source: str, count: int, rng: random.Random, bad_ratio: float = 0.05) -> Stream:
    """`count` exam.registration envelopes for `source`: keys get 1-4 events (op c, then u's, each a new
    event_id), keys interleaved at random while each key keeps its sequence; about `bad_ratio` invalid."""
    sizes = []
    while sum(sizes) < count:
        sizes.append(min(rng.randint(1, 4), count - sum(sizes)))
    # Distinct registration ids within the stream (random 8-digit ids would collide at 100 000 events).
    numbers = rng.sample(range(10**8), len(sizes))
    slots = [k for k, size in enumerate(sizes) for _ in range(size)]
    rng.shuffle(slots)
    seen = [0] * len(sizes)
    envelopes, invalid = [], set()
    for k in slots:
        registration_id = f"2026{numbers[k]:08d}"
        first = seen[k] == 0
        seen[k] += 1
        data = {} if first else {"status": "CONFIRMED"}
        bad = rng.random() < bad_ratio
        if bad:
            data["gender"] = "?"  # schema.enum: a dead letter
        envelope = registration_envelope(source, registration_id=registration_id, op="c" if first else "u",
                                         data=data)
        envelopes.append(envelope)
        if bad:
            invalid.add(envelope["event_id"])
    return Stream(source, envelopes, invalid)


# ---------------------------------------------------------------- producing


def prepare_topics(bootstrap: str, source: str, partitions: int = 3) -> None:
    """Create ingest.<source> and hub.dlq.<source> as the workers would (3 partitions, as tests/conftest.py)."""
    asyncio.run(ensure_topics(KafkaClients.plain(bootstrap), [(f"ingest.{source}", partitions), (f"hub.dlq.{source}", partitions)], 1))


class Feeder:
    """Produces a stream to its ingest topic from a thread, in chunks, paced to last about `duration_s`
    (0: as fast as possible), keyed by entity key with one idempotent producer, so per-key order holds
    in Kafka. `produced` counts acknowledged events. The producer waits out a broker outage (long
    delivery timeout) instead of failing; any failure is raised by `join()`.

    Example::

        with Feeder(bootstrap, stream, duration_s=20) as feeder:
            feeder.wait_produced(len(stream.envelopes) // 2)
            ...
    """

    def __init__(self, bootstrap: str, stream: Stream, duration_s: float = 0.0, chunk: int = 500) -> None:
        self.bootstrap = bootstrap
        self.stream = stream
        self.duration_s = duration_s
        self.chunk = chunk
        self.produced = 0
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feeder-{stream.source}", daemon=True)

    @property
    def total(self) -> int:
        return len(self.stream.envelopes)

    def start(self) -> "Feeder":
        self._thread.start()
        return self

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def wait_produced(self, count: int, bound_s: float = 300.0) -> int:
        """Block until `count` events are acknowledged (or the stream ended); returns the count produced."""
        wait_until(lambda: self.produced >= count or self.finished.is_set(), bound_s=bound_s, interval_s=0.05)
        if self.error is not None:
            raise RuntimeError(f"the feeder failed after {self.produced} events") from self.error
        return self.produced

    def join(self, bound_s: float = 600.0) -> None:
        self._resume.set()
        self._thread.join(bound_s)
        if self._thread.is_alive():
            self._stop.set()
            raise RuntimeError(f"the feeder did not finish in {bound_s:.0f} s ({self.produced}/{self.total} produced)")
        if self.error is not None:
            raise RuntimeError(f"the feeder failed after {self.produced} events") from self.error

    def stop(self) -> None:
        self._stop.set()
        self._resume.set()
        self._thread.join(60)

    def __enter__(self) -> "Feeder":
        return self.start()

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.join()
        else:
            self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # reported by join() / wait_produced()
            self.error = exc
        finally:
            self.finished.set()

    async def _produce(self) -> None:
        values = [(e["key"].encode(), encode(e)) for e in self.stream.envelopes]
        # A broker outage of a scenario lasts well under the delivery timeout: the producer retries
        # (idempotently) instead of failing the stream.
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, linger_ms=5,
                                    max_batch_size=256 * 1024, request_timeout_ms=120_000)
        await producer.start()
        try:
            began = started = time.monotonic()
            for offset in range(0, len(values), self.chunk):
                if not self._resume.is_set():
                    paused = time.monotonic()
                    while not self._resume.is_set():
                        await asyncio.sleep(0.05)
                    started += time.monotonic() - paused  # the pace resumes; no burst to catch up
                if self._stop.is_set():
                    return
                part = values[offset:offset + self.chunk]
                sent = [await producer.send(self.stream.topic, value, key=key) for key, value in part]
                await asyncio.gather(*sent)
                self.produced += len(part)
                if self.duration_s:
                    ahead = started + self.duration_s * self.produced / len(values) - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            say(f"{self.stream.source}: {self.produced} events produced in {time.monotonic() - began:.1f} s")
        finally:
            await producer.stop()


# ---------------------------------------------------------------- reading back


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    try:
        return await partitions_of(KafkaClients.plain(bootstrap), topic)
    except LookupError:
        return []  # the topic does not exist (yet)


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    partitions = await _partitions(bootstrap, topic)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _read(bootstrap: str, topic: str, starts: dict[int, int]) -> tuple[list, dict[int, int]]:
    """Committed records of `topic` from `starts` up to the end now, and the positions reached (a topic
    not created yet holds nothing)."""
    if not await _partitions(bootstrap, topic):
        return [], dict(starts)
    return await kafkaio.read_range(KafkaClients.plain(bootstrap), topic, starts, max_partition_fetch_bytes=8 * 1024 * 1024)


@dataclass
class Starts:
    """Where this scenario's records can begin in the shared canonical topic (its end before the
    scenario wrote anything): saves reading every earlier scenario's records again and again."""

    canonical: dict[int, int]

    @classmethod
    def now(cls, bootstrap: str) -> "Starts":
        return cls(asyncio.run(_end_offsets(bootstrap, CANONICAL_TOPIC)))


def _event_ids(records: list, source: str) -> list[str]:
    return [header(r, "eduhub.event_id") for r in records if header(r, "eduhub.source") == source]


def _dead_letter_id(record) -> str | None:
    event_id = header(record, "eduhub.errors.event_id")
    if event_id:
        return event_id
    try:
        return json.loads(record.value)["event_id"]
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Outputs:
    """The event_ids of one scenario's source as read from each output, in topic order."""

    canonical: list[str]
    dlq: list[str]
    sub: list[str]


class Reader:
    """Reads a scenario's outputs incrementally (for polling while waiting), or all at once."""

    def __init__(self, bootstrap: str, stream: Stream, sub_topic_name: str, starts: Starts) -> None:
        self.bootstrap = bootstrap
        self.stream = stream
        self.sub_topic = sub_topic_name
        self.starts = starts
        self._positions = {CANONICAL_TOPIC: dict(starts.canonical), self._dlq: {}, sub_topic_name: {}}
        self._seen = Outputs([], [], [])

    @property
    def _dlq(self) -> str:
        return f"hub.dlq.{self.stream.source}"

    def poll(self) -> Outputs:
        """Everything seen so far, reading only what was committed since the last poll."""
        for topic, out in ((CANONICAL_TOPIC, self._seen.canonical), (self._dlq, self._seen.dlq),
                           (self.sub_topic, self._seen.sub)):
            records, self._positions[topic] = asyncio.run(_read(self.bootstrap, topic, self._positions[topic]))
            out.extend(self._ids(topic, records))
        return self._seen

    def read_all(self) -> Outputs:
        """A fresh read of the three outputs from the scenario's starts (the final tally uses this)."""
        canonical, _ = asyncio.run(_read(self.bootstrap, CANONICAL_TOPIC, self.starts.canonical))
        dlq, _ = asyncio.run(_read(self.bootstrap, self._dlq, {}))
        sub, _ = asyncio.run(_read(self.bootstrap, self.sub_topic, {}))
        return Outputs(self._ids(CANONICAL_TOPIC, canonical), self._ids(self._dlq, dlq),
                       self._ids(self.sub_topic, sub))

    def _ids(self, topic: str, records: list) -> list[str]:
        if topic == self._dlq:
            return [i for i in (_dead_letter_id(r) for r in records) if i is not None]
        # Canonical and subscriber topics are shared: keep this scenario's source only.
        return _event_ids(records, self.stream.source)


# ---------------------------------------------------------------- the tally


@dataclass
class Tally:
    """What one scenario measured; `check()` asserts the promises (0 lost, 0 duplicated, order kept)."""

    stream: Stream
    canonical: int
    dlq: int
    sub: int
    lost_outputs: list[str]      # ingested ids in neither canonical nor DLQ
    lost_sub: list[str]          # valid ids missing from the subscriber topic
    duplicated_outputs: list[str]  # ids more than once across canonical + DLQ
    duplicated_sub: list[str]    # ids more than once in the subscriber topic
    misrouted: list[str]         # valid ids in the DLQ, invalid ids in canonical or sub
    unexpected: list[str]        # ids of this source that were never ingested
    order_broken: list[str]      # keys whose canonical or sub order differs from the produced order
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.lost_outputs) + len(self.lost_sub)

    @property
    def duplicated(self) -> int:
        return len(self.duplicated_outputs) + len(self.duplicated_sub)

    @property
    def order_kept(self) -> bool:
        return not self.order_broken

    @property
    def accounted(self) -> bool:
        return not self.lost_outputs and not self.lost_sub

    def result(self, scenario: str) -> ScenarioResult:
        notes = list(self.notes)
        if self.lost:
            notes.append(f"lost: {len(self.lost_outputs)} in neither canonical nor DLQ, "
                         f"{len(self.lost_sub)} valid missing from sub")
        if self.duplicated:
            notes.append(f"duplicated: {len(self.duplicated_outputs)} in canonical+DLQ, "
                         f"{len(self.duplicated_sub)} in sub")
        if self.misrouted:
            notes.append(f"misrouted: {len(self.misrouted)}")
        if self.order_broken:
            notes.append(f"order broken for {len(self.order_broken)} keys")
        return ScenarioResult(scenario=scenario, ingested=len(self.stream.envelopes), canonical=self.canonical,
                              dlq=self.dlq, sub=self.sub, lost=self.lost, duplicated=self.duplicated,
                              order_kept=self.order_kept, notes=notes)

    def summary(self) -> str:
        sample = lambda ids: ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")  # noqa: E731
        lines = [f"ingested {len(self.stream.envelopes)} ({len(self.stream.invalid)} invalid), canonical "
                 f"{self.canonical}, dlq {self.dlq}, sub {self.sub}"]
        for name in ("lost_outputs", "lost_sub", "duplicated_outputs", "duplicated_sub", "misrouted", "unexpected",
                     "order_broken"):
            ids = getattr(self, name)
            if ids:
                lines.append(f"{name}: {len(ids)} (e.g. {sample(ids)})")
        return "\n".join(lines + self.notes)

    def check(self) -> None:
        assert self.lost == 0, self.summary()
        assert self.duplicated == 0, self.summary()
        assert self.order_kept, self.summary()
        assert not self.misrouted and not self.unexpected, self.summary()


def tally(stream: Stream, outputs: Outputs, notes: list[str] | None = None) -> Tally:
    """Count and compare a scenario's outputs with its stream (see `Tally`)."""
    ingested = stream.ids
    valid = stream.valid
    both = Counter(outputs.canonical) + Counter(outputs.dlq)
    in_sub = Counter(outputs.sub)
    order = stream.valid_order()

    def per_key(ids: list[str]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for event_id in ids:
            if event_id in stream.key_of:
                grouped[stream.key_of[event_id]].append(event_id)
        return grouped

    broken = []
    for got in (per_key(outputs.canonical), per_key(outputs.sub)):
        for key, ids in got.items():
            # Compared on the valid ids that arrived: a missing one counts as lost, a repeated one as
            # duplicated and an invalid one as misrouted, not also as out of order.
            arrived = set(ids)
            expected = [i for i in order.get(key, []) if i in arrived]
            if list(dict.fromkeys(i for i in ids if i in valid)) != expected:
                broken.append(key)
    return Tally(
        stream=stream,
        canonical=len(outputs.canonical),
        dlq=len(outputs.dlq),
        sub=len(outputs.sub),
        lost_outputs=sorted(ingested - set(both)),
        lost_sub=sorted(valid - set(in_sub)),
        duplicated_outputs=sorted(i for i, n in both.items() if n > 1),
        duplicated_sub=sorted(i for i, n in in_sub.items() if n > 1),
        misrouted=sorted((set(outputs.dlq) & valid) | ((set(outputs.canonical) | set(in_sub)) & stream.invalid)),
        unexpected=sorted((set(both) | set(in_sub)) - ingested),
        order_broken=sorted(set(broken)),
        notes=list(notes or []),
    )


def wait_accounted(bootstrap: str, stream: Stream, sub_topic_name: str, starts: Starts, bound_s: float = 300.0,
                   notes: list[str] | None = None) -> Tally:
    """Wait (bounded) until every ingested event is in canonical or DLQ and every valid one in the
    subscriber topic, then take one final tally from a fresh read of the three topics."""
    reader = Reader(bootstrap, stream, sub_topic_name, starts)
    ingested, valid = stream.ids, stream.valid

    def accounted() -> bool:
        seen = reader.poll()
        return ingested <= set(seen.canonical) | set(seen.dlq) and valid <= set(seen.sub)

    say(f"{stream.source}: waiting until every event is accounted for")
    began = time.monotonic()
    done = wait_until(accounted, bound_s=bound_s, interval_s=2.0)
    say(f"{stream.source}: {'all accounted for' if done else 'NOT all accounted for'} "
        f"{time.monotonic() - began:.1f} s after the stream ended")
    outputs = reader.read_all()
    say(f"{stream.source}: final read of canonical, DLQ and sub done")
    return tally(stream, outputs, notes)


# ---------------------------------------------------------------- consumer groups

REBALANCING = ("PreparingRebalance", "CompletingRebalance")


class _DescribeGroups(Request[DescribeGroupsRequest_v2]):
    """DescribeGroups pinned to v2: aiokafka 0.14 decodes a v3 answer with the v2 schema and fails."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[DescribeGroupsRequest_v2]) -> DescribeGroupsRequest_v2:
        return request_struct_class(self._groups)


async def _group_states(admin: AIOKafkaAdminClient, groups: list[str]) -> dict[str, tuple[str, int]]:
    """group → (state, member count), as the coordinator reports it now."""
    states = {}
    for group_id in groups:
        node = await admin.find_coordinator(group_id)
        response = await admin._send_request(_DescribeGroups([group_id]), node)
        for error_code, name, state, _protocol_type, _protocol, members in response.groups:
            states[name] = (f"error {error_code}" if error_code else state, len(members))
    return states


def wait_rebalancing(bootstrap: str, groups: list[str], bound_s: float = 90.0,
                     until: Callable[[], bool] | None = None) -> tuple[str, str] | None:
    """Poll the groups' states until one of them is rebalancing; returns (group, state) at that moment,
    or None when the bound passed or `until()` became true first."""

    async def watch() -> tuple[str, str] | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            deadline = time.monotonic() + bound_s
            while time.monotonic() < deadline and not (until and until()):
                for group, (state, _) in (await _group_states(admin, groups)).items():
                    if state in REBALANCING:
                        return group, state
                await asyncio.sleep(0.02)
            return None
        finally:
            await admin.close()

    return asyncio.run(watch())


# ---------------------------------------------------------------- workers and the scenario's context


# Faust's own consumer group (its leader assignor; the stages have their own groups) keeps a killed
# member for broker_session_timeout, 60 s by default, and a worker's stages start only once Faust
# says "Worker ready": every restart after kill -9 would wait a minute. The fault runs use 10 s
# (Faust reads BROKER_SESSION_TIMEOUT from the environment); the stages' own consumers keep their
# defaults. EDUHUB_FAULT_FAUST_SESSION_TIMEOUT=default runs with Faust's default instead.
FAUST_SESSION_TIMEOUT = os.environ.get("EDUHUB_FAULT_FAUST_SESSION_TIMEOUT", "10")
WORKER_ENV = {} if FAUST_SESSION_TIMEOUT == "default" else {"BROKER_SESSION_TIMEOUT": FAUST_SESSION_TIMEOUT}


class FaultWorker(WorkerProcess):
    """A worker process that can also be started without waiting for readiness, and killed."""

    def spawn(self) -> "FaultWorker":
        """Start the process and return at once (`start()` would wait for /readyz)."""
        env = {**os.environ, **WORKER_ENV, "EDUHUB_CONFIG": str(self.config_path)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "hub", "worker"], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        return self

    def wait_ready(self, bound_s: float = 120.0) -> "FaultWorker":
        """Wait for /readyz 200; fails at once (with the log's end) if the process exits meanwhile."""
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"worker pid {self.pid} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.get("/readyz") == 200:
                return self
            time.sleep(0.25)
        raise AssertionError(f"worker pid {self.pid} not ready in {bound_s:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str) -> int | None:
        """The status code of GET `path` on the worker's web port (None when nothing answers)."""
        try:
            return httpx.get(f"{self.url}{path}", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def kill9(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


_ports = itertools.cycle(range(26110 + PORT_OFFSET, 26160 + PORT_OFFSET))


class Scenario:
    """One fault scenario's fresh source, its subscriber, its workers and the local stack it may harm.

    `close()` (the `scenario` fixture calls it, also when the test failed) starts again any part of
    the stack the scenario stopped — broker first, the registry needs it — and then stops every worker
    the scenario started, by pid.
    """

    def __init__(self, name: str, stack: LocalStack, tmp_path: Path) -> None:
        self.name = name
        self.stack = stack
        self.tmp_path = tmp_path
        self.source = f"flt-{uuid.uuid4().hex[:10]}"
        self.sub_id = f"sub-{self.source}"
        self.sub_topic = sub_topic(self.sub_id)
        self.seed = scenario_seed(name)
        self.rng = random.Random(self.seed)
        self.workers: list[FaultWorker] = []
        self.feeders: list[Feeder] = []
        self.notes: list[str] = [f"seed {self.seed}"]
        self.starts = Starts({})

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap_servers

    def stream(self, count: int | None = None) -> Stream:
        """A fresh stream for this scenario's source, its topics created (3 partitions, as the workers' config)."""
        prepare_topics(self.bootstrap, self.source)
        self.starts = Starts.now(self.bootstrap)  # before anything of this scenario is written
        return make_stream(self.source, count or events_count(), self.rng)

    def feeder(self, stream: Stream, duration_s: float = 0.0) -> Feeder:
        feeder = Feeder(self.bootstrap, stream, duration_s=duration_s)
        self.feeders.append(feeder)
        return feeder

    def worker(self, instance_id: str | None = None, *, ready: bool = True, bound_s: float = 120.0,
               subscriptions: list[dict] | None = None) -> FaultWorker:
        """A worker for this scenario's source and its Kafka subscription (or `subscriptions`); `ready=False`
        returns once the process started."""
        port = next(_ports)
        config = write_config(self.tmp_path / f"hub-{port}.yaml", self.stack, [self.source], web_port=port,
                              instance_id=instance_id or f"flt-{uuid.uuid4().hex[:8]}",
                              subscriptions=subscriptions or subscription(self.sub_id))
        worker = FaultWorker(config, self.tmp_path / f"worker-{port}.log")
        self.workers.append(worker)
        worker.spawn()
        say(f"worker pid {worker.pid} started ({worker.config.worker.instance_id}, port {port})")
        if ready:
            worker.wait_ready(bound_s)
            say(f"worker pid {worker.pid} ready")
        return worker

    def note(self, line: str) -> None:
        say(f"{self.name}: {line}")
        self.notes.append(line)

    def finish(self, stream: Stream, label: str, bound_s: float = 300.0, check: bool = True) -> Tally:
        """Wait until everything is accounted for, record the scenario's row (as `label`) and assert the
        promises (`check=False`: the caller asserts, e.g. something else first)."""
        final = wait_accounted(self.bootstrap, stream, self.sub_topic, self.starts, bound_s, notes=self.notes)
        record(final.result(label))
        say(f"{self.name}: {final.summary()}")
        if not final.accounted or not final.order_kept or final.duplicated:
            for worker in self.workers:
                print(f"--- worker pid {worker.process.pid if worker.process else '-'} log {worker.log_path} ---\n"
                      f"{worker.log_tail()}", flush=True)
        if check:
            final.check()
        return final

    def close(self) -> None:
        problems = []
        for feeder in self.feeders:
            feeder.stop()
        for name in ("kafka", "registry"):  # the rest of the session needs both
            if not self.stack.status().get(name, {}).get("running"):
                try:
                    self.stack.start_part(name, echo=lambda line: say(f"restored {line}"))
                except Exception as exc:  # noqa: BLE001 — report every part, then fail
                    problems.append(f"{name}: {exc}")
        for worker in self.workers:
            if worker.process is not None:
                worker.stop()
        if problems:
            raise RuntimeError("could not restore the local stack: " + "; ".join(problems))

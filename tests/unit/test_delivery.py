"""HTTP delivery without a broker: the circuit breaker, backoff, the body, poison records, Kafka failures,
liveness, and the bounded read of a real server's huge answer."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable

import fastavro
import httpx
import pytest
from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError, RequestTimedOutError
from aiokafka.structs import ConsumerRecord

from hub.core.backoff import backoff_s, full_jitter
from hub.stages.breaker import CircuitBreaker
from hub.stages.delivery import DeliveryGroup, HttpDeliverer
from hub.kafka.clients import KafkaClients
from hub.stages.http_support import MAX_RESPONSE_BYTES
from hub.core.metrics import HubMetrics
from hub.contract.registry import SchemaRegistry
from hub.contract.schemas import Catalogue, encode_wire
from hub.contract.signing import sign
from hub.routing.policy import SubscriptionPolicy
from hub.routing.subscriptions import SubscriptionConfig
from hub.contract.topics import ROUTE_DLQ_TOPIC


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_and_probes_once_when_half_open():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_s=30, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() == (True, 0.0)
    breaker.failure()
    assert breaker.state == "open" and breaker.allow() == (False, 30)
    clock.now += 30
    assert breaker.allow() == (True, 0.0)  # the probe
    assert breaker.allow()[0] is False  # only one probe at a time
    breaker.failure()  # the probe failed: open again at once
    assert breaker.state == "open"
    clock.now += 30
    assert breaker.allow() == (True, 0.0)
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() == (True, 0.0)


def test_a_success_resets_the_consecutive_count():
    breaker = CircuitBreaker(failures=2, open_s=1, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    upper = lambda low, high: high  # noqa: E731 - the top of the jitter range
    jitter = lambda rand: lambda delay: full_jitter(delay, rand)  # noqa: E731 - full jitter drawn with `rand`
    assert [backoff_s(n, 0.5, 4, jitter(upper)) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]
    assert backoff_s(3, 0.5, 4, jitter(lambda low, high: low)) == 0


class Message:
    topic = "sub.parent-app.school.student"
    key = b"031309001234"
    headers = [("eduhub.event_id", b"e-1"), ("eduhub.op", b"u"), ("eduhub.source", b"smas"),
               ("eduhub.occurred_at", b"2026-09-05T08:00:00+07:00")]


def test_the_body_carries_the_event_identity_and_the_projected_record_and_is_signed():
    config = SubscriptionConfig.model_validate({
        "id": "parent-app", "entities": ["school.student"],
        "delivery": {"kind": "http", "url": "https://example.invalid/hook", "secret_env": "X"}})
    policy = SubscriptionPolicy(config, Catalogue.load(), b"k" * 32)

    async def body() -> bytes:
        deliverer = HttpDeliverer(policy, secret=b"s", kafka=KafkaClients.plain("127.0.0.1:1"), registry=None,
                                  metrics=HubMetrics())
        try:
            return deliverer.body(Message(), {"student_id": "031309001234"})
        finally:
            await deliverer.client.aclose()

    raw = asyncio.run(body())
    assert json.loads(raw) == {"event_id": "e-1", "subscriber": "parent-app", "entity": "school.student",
                               "key": "031309001234", "op": "u", "occurred_at": "2026-09-05T08:00:00+07:00",
                               "source": "smas", "record": {"student_id": "031309001234"}}
    assert sign(b"s", 1767225600, raw).startswith("sha256=")


def test_offsets_commit_only_up_to_the_oldest_unfinished_record():
    from hub.stages.key_queues import OffsetTracker

    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.add(offset)
    assert tracker.committable() is None
    tracker.done(11)
    tracker.done(12)  # other keys are done, but 10 still retries
    assert tracker.committable() is None
    tracker.done(10)
    assert tracker.committable() == 13
    tracker.done(13)
    assert tracker.committable() == 14


# --- Per-record isolation, Kafka failures, liveness and the bounded response read ---

TOPIC = "sub.parent-app.school.student"
TP = TopicPartition(TOPIC, 0)
STUDENT = {"type": "record", "name": "Student", "fields": [{"name": "student_id", "type": "string"},
                                                          {"name": "class_name", "type": "string"}]}
WITH_BYTES = {"type": "record", "name": "Blob", "fields": [{"name": "blob", "type": "bytes"}]}
SCHEMAS = {1: STUDENT, 2: WITH_BYTES}  # what the fake registry knows; 403 for id 3, 404 for the rest


def policy(**delivery) -> SubscriptionPolicy:
    config = SubscriptionConfig.model_validate({
        "id": "parent-app", "entities": ["school.student"],
        "delivery": {"kind": "http", "url": "https://receiver.invalid/hook", "secret_env": "X", **delivery}})
    return SubscriptionPolicy(config, Catalogue.load(), b"k" * 32)


def wire(schema_id: int, record: dict, schema: dict = STUDENT) -> bytes:
    return encode_wire(schema_id, fastavro.parse_schema(schema), record)


def student(n: int) -> bytes:
    return wire(1, {"student_id": f"0313090{n:05d}", "class_name": "10A1"})


def record(offset: int, key: bytes | None, value: bytes | None, event_id: str, **extra_headers) -> ConsumerRecord:
    headers = [("eduhub.event_id", event_id.encode()), ("eduhub.source", b"smas"), ("eduhub.op", b"u"),
               ("eduhub.occurred_at", b"2026-09-05T08:00:00+07:00"), *extra_headers.items()]
    return ConsumerRecord(TOPIC, 0, offset, 0, 0, key, value, None, 0, 0, headers)


class FakeRegistry(SchemaRegistry):
    """The real decode_record over a scripted registry: `unavailable` first answers are 503."""

    def __init__(self, unavailable: int = 0) -> None:
        super().__init__("http://registry.invalid")
        self.unavailable = unavailable
        self._client = httpx.AsyncClient(base_url=self.url, transport=httpx.MockTransport(self._answer))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        schema_id = int(request.url.path.rsplit("/", 1)[1])
        if self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503, json={"message": "starting"})
        if schema_id == 3:
            return httpx.Response(403, json={"message": "forbidden"})
        if schema_id not in SCHEMAS:
            return httpx.Response(404, json={"message": f"no schema {schema_id}"})
        return httpx.Response(200, json={"schema": json.dumps(SCHEMAS[schema_id])})


class FakeConsumer:
    """Hands out `batches` once, then nothing; `failures[name]` are raised by the next calls of `name`."""

    def __init__(self, batches: list[list[ConsumerRecord]]) -> None:
        self.batches = deque({TP: b} for b in batches)
        self.committed: dict[TopicPartition, int] = {}
        self.failures: dict[str, deque[BaseException]] = {"getmany": deque(), "commit": deque()}
        self.hang_commits = False

    def _fail(self, name: str) -> None:
        if self.failures[name]:
            raise self.failures[name].popleft()

    def subscribe(self, topics, listener=None) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int):
        self._fail("getmany")
        if self.batches:
            return self.batches.popleft()
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets) -> None:
        self._fail("commit")
        if self.hang_commits:  # an unreachable broker: aiokafka waits for a coordinator forever
            await asyncio.Event().wait()
        self.committed.update(offsets)

    def assignment(self):
        return {TP}

    def pause(self, *partitions) -> None:
        pass

    def resume(self, *partitions) -> None:
        pass

    def paused(self):
        return set()

    def last_stable_offset(self, tp):
        return None

    def highwater(self, tp):
        return None

    async def stop(self) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list]] = []
        self.dead_letter_failures: deque[BaseException] = deque()

    async def send(self, topic, value=None, key=None, headers=None):
        self.sent.append((topic, value, key, list(headers or ())))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_and_wait(self, topic, value=None, key=None, headers=None):
        if self.dead_letter_failures:
            raise self.dead_letter_failures.popleft()
        return await (await self.send(topic, value, key, headers))

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def letters(self, topic: str = ROUTE_DLQ_TOPIC) -> dict[str, tuple]:
        """Dead letters by event id: (rule, value, key, headers)."""
        out = {}
        for sent_topic, value, key, headers in self.sent:
            if sent_topic == topic:
                h = dict(headers)
                out[h["eduhub.errors.event_id"].decode()] = (h["eduhub.errors.rule"].decode(), value, key, headers)
        return out

    def audit(self) -> dict[str, str]:
        return {json.loads(v)["event_id"]: json.loads(v)["outcome"] for t, v, _, _ in self.sent if t == "hub.audit"}


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


async def deliverer_with(batches: list[list[ConsumerRecord]], *, answer: Callable[[dict], int] = lambda body: 200,
                   registry: SchemaRegistry | None = None, **delivery) -> tuple[HttpDeliverer, list[dict]]:
    """A deliverer on fakes (call inside a running loop); the list fills with the bodies the receiver accepted."""
    accepted: list[dict] = []

    def receive(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        status = answer(body)
        if status < 300:
            accepted.append(body)
        return httpx.Response(status, stream=httpx.ByteStream(b"ok"))  # streamed, as from a network

    deliverer = HttpDeliverer(policy(**delivery), secret=b"s", kafka=KafkaClients.plain("127.0.0.1:1"),
                              registry=registry or FakeRegistry(), metrics=HubMetrics(), sleep=no_sleep)
    await deliverer.consumer.stop()  # the real clients, never started, make way for the fakes
    await deliverer.producer.stop()
    await deliverer.client.aclose()
    deliverer.consumer = FakeConsumer(batches)
    deliverer.producer = FakeProducer()
    deliverer.client = httpx.AsyncClient(transport=httpx.MockTransport(receive))
    deliverer.kafka_backoff_s = (0.01, 0.05)
    return deliverer, accepted


async def run_until_committed(deliverer: HttpDeliverer, offset: int) -> None:
    """Run the loop until `offset` is committed (bounded), then stop; run() must return, not raise."""
    task = asyncio.create_task(deliverer.run())
    for _ in range(1000):
        if deliverer.consumer.committed.get(TP, -1) >= offset or task.done():
            break
        await asyncio.sleep(0.01)
    await deliverer.stop()
    await asyncio.wait_for(task, 10)


def sample(deliverer: HttpDeliverer, name: str, **labels) -> float | None:
    return deliverer.metrics.registry.get_sample_value(name, labels)


POISON = {  # event id: (key, value, the rule it must be dead-lettered with)
    "not-wire": (b"031309000001", b"{\"student_id\": \"031309000001\"}", "record.not_wire_format"),
    "truncated": (b"031309000001", student(1)[:8], "record.avro_decode"),
    "unknown-schema": (b"031309000001", b"\x00\x00\x00\x03\xe7" + student(1)[5:], "record.unknown_schema"),
    "null-key": (None, student(1), "record.null_key"),
    "bad-key": (b"\xff\xfe0313", student(1), "record.invalid_key"),
}


def test_poison_records_are_dead_lettered_with_their_rule_and_the_records_around_them_go_in_order():
    sequence = [("v0", b"031309000001", student(1))]  # (event id, key, value)
    for n, (event_id, (key, value, _)) in enumerate(POISON.items(), start=1):
        # a valid record of the same learner after each poison record: its key must go on
        sequence += [(event_id, key, value), (f"v{n}", b"031309000001", student(1))]
    sequence.append(("other-key", b"031309000002", student(2)))
    messages = [record(offset, key, value, event_id) for offset, (event_id, key, value) in enumerate(sequence)]
    valid = [f"v{n}" for n in range(len(POISON) + 1)]

    async def scenario():
        deliverer, accepted = await deliverer_with([messages[:5], messages[5:]])
        await run_until_committed(deliverer, len(messages))
        return deliverer, accepted

    deliverer, accepted = asyncio.run(scenario())
    assert [b["event_id"] for b in accepted if b["key"] == "031309000001"] == valid
    assert {b["event_id"] for b in accepted} == {*valid, "other-key"}
    letters = deliverer.producer.letters()
    assert {event_id: letter[0] for event_id, letter in letters.items()} == {e: p[2] for e, p in POISON.items()}
    for event_id, (key, value, _) in POISON.items():
        rule, sent_value, sent_key, headers = letters[event_id]
        assert (sent_value, sent_key) == (value, key)  # the original, untouched
        assert ("eduhub.errors.stage", b"deliver") in headers and ("eduhub.source", b"smas") in headers
    assert deliverer.consumer.committed[TP] == len(messages)  # commits moved past every poison record
    assert sample(deliverer, "eduhub_dlq_writes_total", source="smas", stage="deliver") == len(POISON)
    audit = deliverer.producer.audit()
    assert all(audit[e] == "dead_lettered" for e in POISON) and all(audit[e] == "delivered" for e in valid)


def test_a_registry_that_cannot_answer_is_waited_out_and_the_record_delivered():
    async def scenario():
        deliverer, accepted = await deliverer_with([[record(0, b"031309000001", student(1), "e-1")]],
                                             registry=FakeRegistry(unavailable=3))
        await run_until_committed(deliverer, 1)
        return deliverer, accepted

    deliverer, accepted = asyncio.run(scenario())
    assert [b["event_id"] for b in accepted] == ["e-1"]
    assert deliverer.producer.letters() == {}
    assert sample(deliverer, "eduhub_stage_errors_total", stage="deliver", error="registry") == 3


def test_a_body_that_cannot_be_built_and_a_crash_in_a_drain_are_dead_lettered_and_the_loop_goes_on(caplog):
    messages = [record(0, b"k1", wire(2, {"blob": b"\x00\x01"}, WITH_BYTES), "bytes-field"),  # json.dumps fails
                record(1, b"k2", wire(3, {"student_id": "x", "class_name": "y"}), "registry-refuses"),  # 403
                record(2, b"k3", student(3), "post-crashes"),
                record(3, b"k4", student(4), "fine", **{"eduhub.trace_id": None}),  # a null header value is no harm
                record(4, b"k1", student(5), "after")]

    async def scenario():
        deliverer, accepted = await deliverer_with([messages])
        post = deliverer._post

        async def crashing_post(body: bytes):
            if json.loads(body)["event_id"] == "post-crashes":
                raise RuntimeError("boom")
            return await post(body)

        deliverer._post = crashing_post
        await run_until_committed(deliverer, 5)
        return deliverer, accepted

    with caplog.at_level("WARNING", logger="hub.stages.delivery"):
        deliverer, accepted = asyncio.run(scenario())
    assert sorted(b["event_id"] for b in accepted) == ["after", "fine"]
    letters = deliverer.producer.letters()
    assert {e: letter[0] for e, letter in letters.items()} == {e: "record.internal_error" for e in
                                                               ("bytes-field", "registry-refuses", "post-crashes")}
    message = dict(letters["post-crashes"][3])["eduhub.errors.message"].decode()
    assert message == "RuntimeError: boom"
    assert dict(letters["bytes-field"][3])["eduhub.errors.message"].startswith(b"TypeError: ")
    assert sample(deliverer, "eduhub_stage_errors_total", stage="deliver", error="RuntimeError") == 1
    crash_logs = [r for r in caplog.records if "post-crashes" in r.getMessage()]
    assert len(crash_logs) == 1 and crash_logs[0].exc_info is not None  # once, with the traceback
    assert "record.internal_error" in crash_logs[0].getMessage()
    assert deliverer.breaker.allow() == (True, 0.0)


def test_kafka_failures_in_fetch_commit_and_dead_letter_send_are_waited_out_and_counted():
    messages = [record(0, b"k1", student(1), "e-1"), record(1, None, student(2), "keyless"),
                record(2, b"k1", student(3), "e-2")]

    async def scenario():
        deliverer, accepted = await deliverer_with([messages])
        deliverer.consumer.failures["getmany"].extend([KafkaConnectionError("broker gone"), RequestTimedOutError()])
        deliverer.consumer.failures["commit"].append(KafkaConnectionError("coordinator gone"))
        deliverer.producer.dead_letter_failures.append(NotLeaderForPartitionError())
        await run_until_committed(deliverer, 3)
        return deliverer, accepted

    deliverer, accepted = asyncio.run(scenario())
    assert [b["event_id"] for b in accepted] == ["e-1", "e-2"]
    assert list(deliverer.producer.letters()) == ["keyless"]  # once, after its failed send was retried
    assert deliverer.consumer.committed[TP] == 3
    for error, count in (("KafkaConnectionError", 2), ("RequestTimedOutError", 1), ("NotLeaderForPartitionError", 1)):
        assert sample(deliverer, "eduhub_stage_errors_total", stage="deliver", error=error) == count


def test_stop_ends_when_the_final_commit_cannot_reach_the_broker():
    async def scenario():
        deliverer, accepted = await deliverer_with([[record(0, b"k1", student(1), "e-1")]])
        deliverer.close_timeout_s = 0.2
        deliverer.consumer.hang_commits = True
        task = asyncio.create_task(deliverer.run())
        for _ in range(500):
            if accepted:
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(deliverer.stop(), 30)  # bounded wait: it must not hang on the commit
        await asyncio.wait_for(task, 30)
        return deliverer, accepted

    deliverer, accepted = asyncio.run(scenario())
    assert [b["event_id"] for b in accepted] == ["e-1"]
    assert TP not in deliverer.consumer.committed
    assert sample(deliverer, "eduhub_stage_errors_total", stage="deliver", error="KafkaTimeoutError") >= 1


def test_every_turn_of_the_loop_is_visible_and_the_group_reports_its_stalest_deliverer():
    async def scenario():
        first, _ = await deliverer_with([])
        second, _ = await deliverer_with([])
        before = first.turned_at
        task = asyncio.create_task(first.run())
        for _ in range(500):
            if first.turned_at > before:
                break
            await asyncio.sleep(0.01)
        await first.stop()
        await asyncio.wait_for(task, 10)
        await second.client.aclose()
        return first, second, before

    first, second, before = asyncio.run(scenario())
    assert first.turned_at > before
    assert sample(first, "eduhub_stage_last_turn_timestamp_seconds", stage="deliver:parent-app") > 0
    assert DeliveryGroup([first, second]).turned_at == second.turned_at < first.turned_at


def test_a_probe_that_got_no_answer_lets_another_probe_go():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, open_s=30, clock=clock)
    breaker.failure()
    clock.now += 30
    assert breaker.allow() == (True, 0.0)  # the probe, then cancelled by a rebalance
    breaker.abandon()
    assert breaker.allow() == (True, 0.0)


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real HTTP transport that counts the body bytes the client pulled off the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.pulled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        transport = self

        class Counted(httpx.AsyncByteStream):
            async def __aiter__(self):
                async for chunk in response.stream:
                    transport.pulled += len(chunk)
                    yield chunk

            async def aclose(self) -> None:
                await response.stream.aclose()

        return httpx.Response(response.status_code, headers=response.headers, stream=Counted(),
                              extensions=response.extensions)


@pytest.mark.parametrize("status", [500, 200])
def test_only_the_first_kib_of_a_huge_answer_are_read(status):
    chunk, total = b"x" * 65536, 20 * 1024 * 1024
    written = []

    async def huge(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=status)
        await response.prepare(request)
        sent = 0
        try:
            while sent < total:
                await response.write(chunk)
                sent += len(chunk)
        except ConnectionError:  # the deliverer hung up after its few KiB
            pass
        finally:
            written.append(sent)
        return response

    async def scenario():
        app = web.Application()
        app.router.add_post("/hook", huge)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        deliverer = HttpDeliverer(policy(url=f"http://127.0.0.1:{port}/hook"), secret=b"s",
                                  kafka=KafkaClients.plain("127.0.0.1:1"), registry=None, metrics=HubMetrics())
        transport = CountingTransport()
        await deliverer.client.aclose()
        deliverer.client = httpx.AsyncClient(transport=transport, timeout=30)
        try:
            result = await asyncio.wait_for(deliverer._post(b"{}"), 60)
            for _ in range(500):  # the server notices the closed connection on its next writes
                if written:
                    break
                await asyncio.sleep(0.01)
        finally:
            await deliverer.client.aclose()
            await runner.cleanup()
        return result, transport.pulled

    result, pulled = asyncio.run(scenario())
    # 4 KiB kept, out of one network read at most (httpcore reads 64 KiB at a time) of a 20 MiB body.
    assert MAX_RESPONSE_BYTES <= pulled <= MAX_RESPONSE_BYTES + 64 * 1024
    assert written and written[0] < total  # the connection was closed, not drained
    if status == 200:
        assert result is None
    else:
        assert result == (False, True, "HTTP 500: " + "x" * 200)

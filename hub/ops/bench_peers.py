"""The benchmark's peers of the validate stage: a Quix Streams exactly-once app and a naive Faust agent, same work.

Run by the benchmark as a subprocess, one peer a process:

    python -m hub.ops.bench_peers quix|faust --spec '<json>'

The spec (JSON object): "bootstrap" (host:port, PLAINTEXT), "input" (the ingest topic: envelopes as JSON bytes,
keyed by the envelope's key), "output_prefix" (outputs go to prefix + canonical topic, dead letters to prefix +
the source's DLQ), "source", "schema_ids" ({entity: registry schema id}), "group" (consumer group),
"count" (N > 0: stop after N input records; 0: run until SIGTERM/SIGINT) and "state_dir" (the peer's own state).

On exit the peer prints exactly one JSON line on stdout, everything else goes to stderr:
{"row": "quix"|"faust", "events": <input records processed>, "seconds": <first record to last>,
 "rss_kb": <VmRSS>, "rss_peak_kb": <VmHWM>}. With a count, "seconds" ends once every output of the last record is
written (Quix: its transaction committed; Faust: the producer flushed); on a signal, at the last record processed.

Both peers do the validate stage's exact work on each record (ValidateStage._output itself, then the dead letter
as ValidateStage.process builds it), and every output record carries the header eduhub.event_id when the event
id is known: dead letters get it too (the hub's carry it as eduhub.errors.event_id), since the benchmark
measures latency by it. quixstreams is an optional extra: pip install 'eduhub[bench]'.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from hub.contract import dlq
from hub.contract.envelope import HEADER_EVENT_ID
from hub.contract.schemas import Catalogue
from hub.contract.topics import dlq_topic
from hub.ops.bench_setup import memory
from hub.stages.validate import STAGE, ValidateStage, Validator

ROWS = ("quix", "faust")
INSTALL_HINT = "pip install 'eduhub[bench]'"
# After the stop began (count reached or a signal), the process prints its result and exits this much later
# at the latest: a peer's framework that hangs in its shutdown cannot hold the benchmark.
STOP_GRACE_S = 30.0
# The Quix row's commit interval in its latency run: its exactly-once output is visible only once committed,
# every 5 s by default; a latency-minded Quix user commits often (the hub commits every batch).
QUIX_LATENCY_COMMIT_S = 0.1
SPEC_KEYS = {"bootstrap": str, "input": str, "output_prefix": str, "source": str, "schema_ids": dict,
             "group": str, "count": int, "state_dir": str}
log = logging.getLogger(__name__)

Routed = tuple[str, "bytes | None", "bytes | None", list[tuple[str, bytes]]]  # topic, key, value, headers


class MissingExtraError(RuntimeError):
    """A peer's framework is not installed."""


@dataclass(frozen=True)
class Spec:
    """What the benchmark asks of one peer run (the --spec JSON)."""

    bootstrap: str
    input: str
    output_prefix: str
    source: str
    schema_ids: dict[str, int]
    group: str
    count: int
    state_dir: str
    # Quix's commit interval in seconds (its default, 5 s, when absent): the latency run sets it low, since
    # exactly-once output is visible only once committed.
    commit_interval: float | None = None

    @classmethod
    def parse(cls, text: str) -> Spec:
        """The spec from its JSON text; ValueError naming what is wrong."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"--spec is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("--spec must be a JSON object")
        missing = sorted(set(SPEC_KEYS) - set(doc))
        if missing:
            raise ValueError(f"--spec lacks {', '.join(missing)}")
        for key, kind in SPEC_KEYS.items():
            value = doc[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"--spec: {key} must be a JSON {kind.__name__}, not {json.dumps(value)}")
            if kind is str and key != "output_prefix" and not value:
                raise ValueError(f"--spec: {key} is empty")
        if doc["count"] < 0:
            raise ValueError("--spec: count must be 0 (run until a signal) or more")
        ids = doc["schema_ids"]
        if not ids or not all(isinstance(v, int) and not isinstance(v, bool) for v in ids.values()):
            raise ValueError("--spec: schema_ids must map each entity to its registry schema id (an integer)")
        interval = doc.get("commit_interval")
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                     or interval < 0):
            raise ValueError("--spec: commit_interval must be a number of seconds, 0 or more")
        return cls(**{key: doc[key] for key in SPEC_KEYS}, commit_interval=interval)


class Work:
    """The validate stage's work on one ingest record, for one source: its canonical record, or its dead letter.

    `_output` IS ValidateStage._output (bound to this object, which has the attributes it reads), so the
    peers validate and encode through the hub's own code path; the dead letter is built as in
    ValidateStage.process."""

    __slots__ = ("validator", "schema_ids", "_refused", "source", "prefix", "dead_letters", "outputs")
    _output = ValidateStage._output

    def __init__(self, spec: Spec, catalogue: Catalogue | None = None) -> None:
        catalogue = catalogue or Catalogue.load()
        self.validator = Validator(catalogue, {spec.source})
        self.schema_ids = spec.schema_ids
        self._refused = None
        self.source = spec.source
        self.prefix = spec.output_prefix
        self.dead_letters = spec.output_prefix + dlq_topic(spec.source)
        self.outputs = [spec.output_prefix + e.topic for e in catalogue.entities.values()] + [self.dead_letters]

    def __call__(self, message: Any) -> Routed:
        """`message` has topic, partition, offset, key, value and headers (an aiokafka or Faust record)."""
        output = self._output(message, self.source, datetime.now(timezone.utc), self.prefix)
        if output is not None:
            topic, key, value, headers, _entity, _event_id = output
            return topic, key, value, headers
        refused = self._refused
        headers = dlq.dead_letter_headers(
            refused.problems, stage=STAGE, topic=message.topic, partition=message.partition,
            offset=message.offset, event_id=refused.event_id, original=message.headers or (),
        )
        if refused.event_id is not None and not any(k == HEADER_EVENT_ID for k, _ in headers):
            headers.append((HEADER_EVENT_ID, refused.event_id.encode("utf-8", "backslashreplace")))
        return self.dead_letters, message.key, dlq.fit(message.value, message.key, headers), headers


@dataclass(slots=True)
class Record:
    """An input record as Work reads it (Quix hands over value, key and headers, the context the rest)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


class Tally:
    """Input records done, and when; printed once as the result line."""

    def __init__(self, row: str, count: int, out: Callable[[str], None]) -> None:
        self.row = row
        self.count = count
        self.events = 0
        self.first: float | None = None
        self.last: float | None = None
        self.finished = False  # count reached
        self._out = out
        self._printed = False
        self._stopping = False
        self._lock = threading.RLock()  # re-entrant: a signal handler may stop the run while print_once holds it

    def add(self) -> bool:
        """One input record done; True when it is the count-th."""
        self.events += 1
        self.last = time.perf_counter()
        return self.events == self.count

    def result(self) -> dict[str, Any]:
        seconds = self.last - self.first if self.first is not None and self.last is not None else 0.0
        status = memory()
        return {"row": self.row, "events": self.events, "seconds": round(seconds, 6),
                "rss_kb": status.get("VmRSS", 0), "rss_peak_kb": status.get("VmHWM", 0)}

    def print_once(self) -> None:
        with self._lock:
            if not self._printed:
                self._printed = True
                self._out(json.dumps(self.result()))

    def stop_soon(self, grace_s: float = STOP_GRACE_S) -> None:
        """The stop began: print the result and exit `grace_s` from now unless the process has exited by then
        (a watchdog thread: a framework blocked in its shutdown cannot hold it). Once: later calls do nothing."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True

        def expire() -> None:
            log.warning("%s: not stopped %.0f s after the stop began; printing the result and exiting",
                        self.row, grace_s)
            self.print_once()
            os._exit(0)  # the result is printed; the framework's unfinished shutdown does not change it

        timer = threading.Timer(grace_s, expire)
        timer.daemon = True
        timer.start()


def require_quix() -> Any:
    """The quixstreams module, or MissingExtraError saying how to install it."""
    try:
        import quixstreams
    except ImportError as exc:
        raise MissingExtraError(f"the quix peer needs Quix Streams, an optional extra: {INSTALL_HINT} "
                                f"({type(exc).__name__}: {exc})") from exc
    return quixstreams


def run_quix(spec: Spec, work: Work, tally: Tally) -> None:
    """A Quix Streams app as its users write one: exactly-once, a StreamingDataFrame, to_topic with a topic callable."""
    quixstreams = require_quix()
    from quixstreams.models.serializers import Serializer

    class RoutedValue(Serializer):
        """The dataframe's value is the routed record (topic, key, value, headers); Kafka gets its bytes as they are."""

        def __call__(self, value: Routed, ctx: Any) -> bytes | None:
            return value[2]

    class App(quixstreams.Application):
        def stop(self, fail: bool = False) -> None:  # the count, SIGTERM and SIGINT all stop through here
            tally.stop_soon()
            super().stop(fail)

    tuning = {} if spec.commit_interval is None else {"commit_interval": spec.commit_interval}
    app = App(broker_address=spec.bootstrap, consumer_group=spec.group, auto_offset_reset="earliest",
              processing_guarantee="exactly-once", state_dir=spec.state_dir, loglevel="WARNING", **tuning)
    source = app.topic(spec.input, key_deserializer="bytes", value_deserializer="bytes")
    serializer = RoutedValue()
    outputs = {name: app.topic(name, key_serializer="bytes", value_serializer=serializer) for name in work.outputs}
    context = quixstreams.message_context
    count = spec.count

    def validate(value: bytes, key: bytes, timestamp: int, headers: Any) -> Routed:
        if tally.first is None:
            tally.first = time.perf_counter()
        ctx = context()
        routed = work(Record(ctx.topic, ctx.partition, ctx.offset, key, value, headers))
        if tally.add() and count:
            tally.finished = True
            app.stop()  # the loop ends after this record; its final checkpoint commits the transaction
        return routed

    sdf = app.dataframe(source)
    sdf = sdf.apply(validate, metadata=True)
    sdf = sdf.set_headers(lambda routed, key, timestamp, headers: routed[3])
    sdf.to_topic(lambda routed, key, timestamp, headers: outputs[routed[0]], key=lambda routed: routed[1])
    app.run()
    if tally.finished:
        tally.last = time.perf_counter()  # the last transaction committed (and the clients closed)


def run_faust(spec: Spec, work: Work, tally: Tally) -> None:
    """A naive Faust agent: its own Kafka consumer group, at-least-once, one awaited send per event."""
    import faust

    class Worker(faust.Worker):
        def _schedule_shutdown(self, signal_: Any) -> None:  # the count and the signals stop through here
            tally.stop_soon()
            super()._schedule_shutdown(signal_)

    app = faust.App(spec.group, broker=f"kafka://{spec.bootstrap}", datadir=spec.state_dir, web_enabled=False,
                    consumer_auto_offset_reset="earliest", key_serializer="raw", value_serializer="raw")
    source = app.topic(spec.input, key_serializer="raw", value_serializer="raw")
    outputs = {name: app.topic(name, key_serializer="raw", value_serializer="raw") for name in work.outputs}
    count = spec.count

    @app.agent(source)
    async def validate(stream: Any) -> None:
        async for event in stream.events():
            if tally.finished:
                continue  # past the count: the worker is stopping
            if tally.first is None:
                tally.first = time.perf_counter()
            topic, key, value, headers = work(event.message)
            await outputs[topic].send(key=key, value=value, headers=headers)
            if tally.add() and count:
                tally.finished = True
                await app.producer.flush()
                tally.last = time.perf_counter()
                os.kill(os.getpid(), signal.SIGTERM)  # stop as on the benchmark's own signal: one shutdown path

    worker = Worker(app, loglevel="WARNING", quiet=True, stdout=sys.stderr, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit:  # how a mode worker returns, even after a clean stop
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.ops.bench_peers",
                                     description="Run one benchmark peer of the validate stage.")
    parser.add_argument("row", choices=ROWS)
    parser.add_argument("--spec", required=True, help="the run's spec as a JSON object (see the module's docstring)")
    args = parser.parse_args(argv)
    try:
        spec = Spec.parse(args.spec)
    except ValueError as exc:
        parser.error(str(exc))
    if args.row == "quix":
        try:
            require_quix()
        except MissingExtraError as exc:
            print(f"bench_peers: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Stdout carries the result line only: whatever else writes to file descriptor 1 (a framework's banner,
    # librdkafka) lands in stderr.
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def out(line: str) -> None:
        result.write(line + "\n")
        result.flush()

    os.makedirs(spec.state_dir, exist_ok=True)
    tally = Tally(args.row, spec.count, out)
    (run_quix if args.row == "quix" else run_faust)(spec, Work(spec), tally)
    tally.print_once()
    return 0


if __name__ == "__main__":
    sys.exit(main())

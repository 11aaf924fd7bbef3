"""Latency at a fixed rate: the bench's parent paces a producer and matches a row's output to it by event id."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hub.contract.envelope import HEADER_EVENT_ID, header_value
from hub.kafka.clients import KafkaClients

READY_TIMEOUT_S = 180.0  # a row's process start, group join and first output
PRIME_EVERY_S = 0.25  # one priming record this often until the row's first output arrives
IDLE_DRAIN_S = 8.0  # after the paced send: stop waiting once no output came for this long (Quix commits every 5 s)
SATURATED_BELOW = 0.95  # output below this share of the paced rate: the row could not keep up


@dataclass(slots=True)
class Paced:
    """One record the parent sends at the paced rate; `expected`: the row should output it."""

    event_id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] | None
    expected: bool


class RowGone(RuntimeError):
    """The row's process exited during the measurement."""


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (share in 0..1)."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def measure(kafka: KafkaClients, *, send_topic: str, out_topic: str, records: Sequence[Paced],
                  priming: Sequence[Paced], rate: float, seconds: float, warmup_s: float,
                  alive: Callable[[], bool]) -> dict[str, Any]:
    """Prime the row until its first output, send `records` at `rate`/s for `seconds`, read `out_topic`
    read_committed, and match by the event id header: latency = receive time − send time, both taken here.
    Records sent in the first `warmup_s` are left out of the figures."""
    # A short fetch wait: whether the broker answers a waiting read_committed fetch at once when a transaction
    # commits must not add to the figures.
    consumer = kafka.consumer(out_topic, group_id=None, isolation_level="read_committed",
                              auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=20)
    producer = kafka.producer(enable_idempotence=True, linger_ms=5)
    await kafka.start(consumer)
    await kafka.start(producer)
    received: dict[str, float] = {}
    duplicates = 0
    reading = True

    async def read() -> None:
        nonlocal duplicates
        while reading:
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    event_id = header_value(message.headers, HEADER_EVENT_ID)
                    if event_id is None:
                        continue
                    if event_id in received:
                        duplicates += 1
                    else:
                        received[event_id] = now

    reader = asyncio.create_task(read())

    def check() -> None:
        if not alive():
            raise RowGone("the row's process exited during the latency measurement")
        if reader.done():
            reader.result()

    sent_at: dict[str, float] = {}
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for record in priming:  # unique event ids, one a PRIME_EVERY_S (enough for READY_TIMEOUT_S)
            check()
            if received:
                break
            if time.monotonic() > deadline:
                break
            await producer.send(send_topic, record.value, key=record.key, headers=record.headers)
            await asyncio.sleep(PRIME_EVERY_S)
        if not received:
            raise TimeoutError(f"no output on {out_topic} within {READY_TIMEOUT_S:.0f} s of the row's start")
        total = min(len(records), max(1, int(rate * seconds)))
        started = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                record = records[sent]
                sent_at[record.event_id] = time.perf_counter()
                await producer.send(send_topic, record.value, key=record.key, headers=record.headers)
                sent += 1
            check()
            await asyncio.sleep(0.001)
        ended = time.perf_counter()
        await producer.flush()
        measured = [r for r in records[:total] if r.expected and sent_at[r.event_id] >= started + warmup_s]
        last, idle_since = -1, time.perf_counter()
        while time.perf_counter() < ended + max(10.0, seconds):  # drain what is still on its way
            check()
            missing = sum(1 for r in measured if r.event_id not in received)
            if not missing:
                break
            if missing != last:
                last, idle_since = missing, time.perf_counter()
            elif time.perf_counter() - idle_since > IDLE_DRAIN_S:
                break
            await asyncio.sleep(0.1)
    finally:
        reading = False
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    return figures([r for r in records[:total] if r.expected], sent_at, received, started=started,
                   ended=ended, rate=rate, warmup_s=warmup_s, sent=total, duplicates=duplicates)


def figures(paced: Sequence[Paced], sent_at: dict[str, float], received: dict[str, float], *, started: float,
            ended: float, rate: float, warmup_s: float, sent: int, duplicates: int) -> dict[str, Any]:
    """Percentiles over the records the row should output that were sent after the warm-up, and whether the row
    kept up: the records that came out within the paced window (warm-up excluded) against those sent in it,
    as a rate comparable with `rate` (saturated below SATURATED_BELOW of it)."""
    window_start = started + warmup_s
    measured = [r for r in paced if sent_at[r.event_id] >= window_start]
    latencies = sorted((received[r.event_id] - sent_at[r.event_id]) * 1000 for r in measured if r.event_id in received)
    sent_in_window = len(measured)
    out_in_window = sum(1 for r in paced if window_start <= received.get(r.event_id, math.inf) < ended)
    share = out_in_window / sent_in_window if sent_in_window else 0.0
    send_rate = sent / (ended - started) if ended > started else rate
    return {
        "p50_ms": _round(percentile(latencies, 0.50)), "p95_ms": _round(percentile(latencies, 0.95)),
        "p99_ms": _round(percentile(latencies, 0.99)), "max_ms": _round(latencies[-1] if latencies else math.nan),
        "matched": len(latencies), "expected": len(measured), "sent": sent, "duplicates": duplicates,
        "rate": round(rate, 1), "send_rate": round(send_rate, 1), "output_rate": round(share * send_rate, 1),
        "saturated": share < SATURATED_BELOW,
    }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)

"""The bench's report: one JSON document with every figure, the machine and the parameters, and its table."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any

from hub.ops.bench_peers import QUIX_LATENCY_COMMIT_S
from hub.ops.bench_setup import ENTITY, ROUTED, TITLES, bench_subscriptions, measured_subscriber

if TYPE_CHECKING:
    from hub.ops.bench_all import Bench

# (name, numerator row, denominator row or None for a latency, comparison, target) — the targets
TARGETS = (("validate/plain", "validate", "plain", ">=", 0.8),
           ("e2e/quix", "e2e", "quix", ">=", 2.0),
           ("e2e/faust", "e2e", "faust", ">=", 6.0),
           ("e2e p99 ms", "e2e", None, "<=", 100.0))


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mb(kb: Any) -> float | None:
    return round(kb / 1024, 1) if kb else None


def row_doc(bench: Bench, row: str) -> dict[str, Any]:
    run = bench.runs[row]
    result = run.throughput
    seconds = result.get("seconds") or 0
    doc = {"row": row, "title": TITLES[row], "status": run.status if run.status == "ok" else run.status.split("\n")[0],
           "events": result.get("events"), "seconds": seconds or None,
           "events_per_s": round(result["events"] / seconds, 1) if seconds else None,
           "ratio_to_plain": None, "rss_peak_mb": _mb(result.get("rss_peak_kb")), "rss_mb": _mb(result.get("rss_kb")),
           "latency": run.latency, "latency_error": run.latency_error,
           "latency_rss_peak_mb": _mb((run.latency_result or {}).get("rss_peak_kb")),
           "latency_run": run.latency_result}  # the row's own result line of its latency run
    if run.status != "ok":
        doc["error"] = run.status
    for extra in ("valid", "routed"):
        if extra in result:
            doc[extra] = result[extra]
    return doc


def build_report(bench: Bench, deleted: list[str]) -> dict[str, Any]:
    config, options = bench.config, bench.options
    rows = [row_doc(bench, row) for row in options.rows]
    by_row = {r["row"]: r for r in rows}
    plain = (by_row.get("plain") or {}).get("events_per_s")
    for doc in rows:
        if plain and doc["events_per_s"]:
            doc["ratio_to_plain"] = round(doc["events_per_s"] / plain, 3)
    targets = []
    for name, top, bottom, comparison, target in TARGETS:
        if bottom is None:
            value = ((by_row.get(top) or {}).get("latency") or {}).get("p99_ms")
        else:
            a, b = (by_row.get(top) or {}).get("events_per_s"), (by_row.get(bottom) or {}).get("events_per_s")
            value = round(a / b, 3) if a and b else None
        met = None if value is None else (value >= target if comparison == ">=" else value <= target)
        targets.append({"name": name, "value": value, "target": f"{comparison} {target:g}", "met": met})
    subscriptions, turned = bench_subscriptions(config)
    measured = measured_subscriber(bench.policies).config.id if bench.policies else None
    return {
        "bench": bench.id,
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
                    "platform": platform.platform(), "kafka_bootstrap": config.kafka.bootstrap_servers,
                    "kafka_security": config.kafka.security_protocol},
        "parameters": {
            "events": options.events, "bad_ratio": options.bad_ratio, "entity": ENTITY,
            "latency_seconds": options.latency_seconds if options.latency else None,
            "warmup_seconds": options.warmup_s if options.latency else None,
            "rate": round(bench.rate, 1) if bench.rate else None,
            "rate_from": None if not bench.rate else "--rate" if options.rate else "half of the e2e row's events/s",
            "rows": list(options.rows), "ingest_partitions": config.kafka.ingest_partitions,
            "canonical_partitions": config.kafka.canonical_partitions,
            "batch_max_records": config.worker.batch_max_records, "batch_max_wait_ms": config.worker.batch_max_wait_ms,
            "dedup_window_s": config.worker.dedup_window_s,
            "subscribers": [s.get("id") for s in subscriptions], "http_delivered_by_kafka": turned,
            "latency_measured_on": {"routed": f"sub.{measured}.{ENTITY}" if measured else None,
                                    "others": f"edu.{ENTITY}"},
            "fill_events_per_s": {k: round(v, 1) for k, v in bench.filled.items()},
        },
        "rows": rows,
        "targets": targets,
        "topics_deleted": len(deleted),
        "processes": sorted(bench.children.logs),
    }


def _num(value: Any, digits: int = 0, width: int = 8) -> str:
    if value is None:
        return "—".rjust(width)
    return f"{value:,.{digits}f}".rjust(width)


def table(report: dict[str, Any]) -> list[str]:
    """The report as the table `eduhub bench all` prints, with its footnotes and the targets."""
    p, machine = report["parameters"], report["machine"]
    lines = [f"eduhub bench — {p['events']:,} exam registrations ({p['bad_ratio']:.0%} invalid), "
             f"{p['ingest_partitions']} ingest / {p['canonical_partitions']} canonical partitions, "
             f"Kafka {machine['kafka_security']} {machine['kafka_bootstrap']}, {machine['cpu_count']} CPUs, "
             f"Python {machine['python']}", ""]
    lines.append(f"{'':30} {'events/s':>9} {'× plain':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'RSS MB':>7}")
    notes = []
    for n, doc in enumerate(report["rows"], 1):
        label = f"{n} {doc['title']}"[:30]
        if doc["status"] != "ok":
            lines.append(f"{label:30} {doc['status']}")
            continue
        latency = doc["latency"] or {}
        line = (f"{label:30} {_num(doc['events_per_s'], 0, 9)} {_num(doc['ratio_to_plain'], 2)} "
                f"{_num(latency.get('p50_ms'), 1)} {_num(latency.get('p95_ms'), 1)} {_num(latency.get('p99_ms'), 1)} "
                f"{_num(doc['rss_peak_mb'], 0, 7)}")
        if latency.get("saturated"):
            line += f"  saturated (output {latency['output_rate']:,.0f}/s)"
        if latency.get("expected") and latency["matched"] < latency["expected"]:
            line += f"  {latency['matched'] / latency['expected']:.0%} received"
        if doc["latency_error"]:
            line += "  latency: failed"
            notes.append(f"{doc['row']} latency: {doc['latency_error']}")
        lines.append(line)
    lines.append("")
    lines.append(f"events/s: input records over the same {p['events']:,} pre-filled ones (the route row: the canonical "
                 "records of the valid ones, written by the bench as the validate stage writes them), first batch to "
                 "last commit; each row in its own process, with its own consumer group and output topics.")
    if p["rate"]:
        routed = p["latency_measured_on"]["routed"]
        lines.append(f"latency: at {p['rate']:,.0f} events/s ({p['rate_from']}) of fresh events for "
                     f"{p['latency_seconds']:g} s, the first {p['warmup_seconds']:g} s left out as warm-up; sent → "
                     f"read_committed receipt of the row's output ({p['latency_measured_on']['others']}"
                     + (f"; route and e2e: {routed}" if routed else "") + "), matched by the eduhub.event_id header.")
        lines.append("saturated: the row's output fell below the paced rate, so its latencies grow with its backlog; "
                     "% received: the share of the measured events it output before the bench stopped waiting (the "
                     "percentiles are of those).")
        if "quix" in p["rows"]:
            lines.append(f"Quix commits every {QUIX_LATENCY_COMMIT_S:g} s in its latency run (its default, 5 s, in the "
                         "throughput run): its "
                         "exactly-once output is visible to read_committed readers only once committed.")
    elif p["latency_seconds"]:
        lines.append("latency: not measured (the e2e row gave no rate; pass --rate)")
    lines.append("RSS: peak (VmHWM) of the row's process in the throughput run.")
    if any(r in ROUTED for r in p["rows"]):
        lines.append(f"subscribers: {', '.join(map(str, p['subscribers']))} (hub.yaml)"
                     + (f"; {', '.join(p['http_delivered_by_kafka'])} are HTTP subscribers, delivered to Kafka topics "
                        "here (the bench runs no web server)" if p["http_delivered_by_kafka"] else ""))
    lines += notes
    lines += ["", "targets of the issue (reported, never asserted):"]
    for target in report["targets"]:
        verdict = {True: "met", False: "missed", None: "n/a"}[target["met"]]
        value = "—" if target["value"] is None else f"{target['value']:g}"
        lines.append(f"  {target['name']:16} {value:>10}   target {target['target']:8} {verdict}")
    if report.get("logs"):
        lines.append(f"logs of the row processes: {report['logs']}")
    return lines

"""`eduhub bench all` as a user runs it, tiny: six rows with figures, and nothing left running or lying around."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from hub.kafka.clients import KafkaClients
from tests.conftest import ROOT, write_config

pytestmark = pytest.mark.integration

ROWS = ["plain", "validate", "route", "e2e", "quix", "faust"]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _leftovers(bootstrap: str, marker: str) -> list[str]:
    """The topics and consumer groups whose names hold `marker`."""
    kafka = KafkaClients.plain(bootstrap)
    admin = kafka.admin()
    await kafka.start(admin)
    try:
        names = list(await admin.list_topics()) + [group for group, _ in await admin.list_consumer_groups()]
    finally:
        await admin.close()
    return [name for name in names if marker in name]


def test_bench_all_tiny(local_stack, tmp_path):
    subscriptions = yaml.safe_load((ROOT / "hub.yaml").read_text())["subscriptions"]  # the five demo subscribers
    config = write_config(tmp_path / "hub.yaml", local_stack, [], web_port=26099, instance_id="bench-test",
                          subscriptions=subscriptions)
    env = {**os.environ, "EDUHUB_CONFIG": str(config)}
    done = subprocess.run([sys.executable, "-m", "hub", "bench", "all", "-n", "2000", "--latency-seconds", "5",
                           "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-6000:]}"
    report = json.loads(done.stdout)

    assert [r["row"] for r in report["rows"]] == ROWS
    for row in report["rows"]:
        assert row["status"] == "ok", row  # quixstreams is installed wherever this runs (.[test,bench])
        assert row["events_per_s"] > 0, row
        assert row["rss_peak_mb"] > 0, row
        latency = row["latency"]
        assert latency is not None and row["latency_error"] is None, row
        assert latency["matched"] > 0, row
        assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"], row
    assert report["rows"][0]["ratio_to_plain"] == 1.0
    assert report["parameters"]["rate"] > 0 and report["parameters"]["rate_from"] == "half of the e2e row's events/s"
    assert report["parameters"]["http_delivered_by_kafka"] == ["admission-results", "parent-app"]
    assert {t["name"] for t in report["targets"]} == {"validate/plain", "e2e/quix", "e2e/faust", "e2e p99 ms"}
    assert report["machine"]["cpu_count"] and report["machine"]["kafka_bootstrap"] == local_stack.bootstrap_servers

    # Every row process was stopped, and the bench's topics and consumer groups are gone.
    assert len(report["processes"]) == 2 * len(ROWS)
    assert [pid for pid in report["processes"] if _running(pid)] == []
    assert report["topics_deleted"] > 0
    for _ in range(50):  # deletion reaches the metadata a moment later
        left = asyncio.run(_leftovers(local_stack.bootstrap_servers, report["bench"]))
        if not left:
            break
        time.sleep(0.2)
    assert left == []

"""`eduhub dlq list|show|replay` on the real broker: filters, full details, and a replay that re-validates,
goes through the hub again once, and does nothing the second time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.kafka_helpers import encode, header, produce_raw, read_to_end, registration_envelope, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def eduhub(config: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "hub", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "EDUHUB_CONFIG": ""}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def canonical_ids(local_stack, source: str) -> list[str]:
    return [header(r, "eduhub.event_id") for r in read_to_end(local_stack.bootstrap_servers, "edu.exam.registration")
            if header(r, "eduhub.source") == source]


def test_list_show_and_an_idempotent_replay_after_the_fix(local_stack, start_worker, unique_source):
    instance = f"it-dlq-{uuid.uuid4().hex[:6]}"
    worker = start_worker([unique_source], instance_id=instance)  # the hub's council is 03
    other_council = registration_envelope(unique_source, data={"council_code": "05"})
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}",
                [(other_council["key"].encode(), encode(other_council))])
    dlq = f"hub.dlq.{unique_source}"
    wait_until(lambda: len(read_to_end(local_stack.bootstrap_servers, dlq)) == 1, bound_s=120)

    listed = [json.loads(line) for line in eduhub(worker.config_path, "dlq", "list", "--source", unique_source,
                                                   "--json").stdout.splitlines()]
    assert [(e["rule"], e["event_id"], e["stage"]) for e in listed] == [
        ("exam.council_code.mismatch", other_council["event_id"], "validate")]
    assert eduhub(worker.config_path, "dlq", "list", "-s", unique_source, "--rule", "exam.", "--json").stdout
    assert not eduhub(worker.config_path, "dlq", "list", "-s", unique_source, "--rule", "schema.", "--json").stdout
    assert not eduhub(worker.config_path, "dlq", "list", "-s", unique_source, "--since", "2999-01-01", "--json").stdout
    shown = json.loads(eduhub(worker.config_path, "dlq", "show", listed[0]["ref"]).stdout)
    assert shown["value"] == other_council and shown["reasons"][0]["field"] == "data.council_code"
    assert json.loads(eduhub(worker.config_path, "dlq", "show", other_council["event_id"]).stdout)["ref"] == listed[0]["ref"]

    # Still wrong under today's rules: reported, nothing re-sent (the DLQ does not grow).
    out = eduhub(worker.config_path, "dlq", "replay", "--source", unique_source).stdout
    assert "replayed 0" in out and "still invalid 1" in out and "exam.council_code.mismatch" in out

    # The operator fixes the council code and restarts the worker; then replays.
    assert worker.stop() == 0
    fixed = start_worker([unique_source], instance_id=instance, extra={"exam": {"council_code": "05"}})
    assert "replayed 1, already replayed 0, still invalid 0" in eduhub(fixed.config_path, "dlq", "replay", "-s",
                                                                      unique_source).stdout
    wait_until(lambda: other_council["event_id"] in canonical_ids(local_stack, unique_source), bound_s=120)

    # Again: skipped; forced: re-sent but the worker's event_id dedup drops it.
    assert "replayed 0, already replayed 1" in eduhub(fixed.config_path, "dlq", "replay", "-s", unique_source).stdout
    assert "replayed 1" in eduhub(fixed.config_path, "dlq", "replay", "-s", unique_source, "--force").stdout
    marker = registration_envelope(unique_source, registration_id=other_council["key"],
                                   data={"council_code": "05"})
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}", [(marker["key"].encode(), encode(marker))])
    wait_until(lambda: marker["event_id"] in canonical_ids(local_stack, unique_source), bound_s=120)
    assert canonical_ids(local_stack, unique_source) == [other_council["event_id"], marker["event_id"]]
    assert len(read_to_end(local_stack.bootstrap_servers, dlq)) == 1

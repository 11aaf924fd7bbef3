"""On the real broker: after valid records of every entity flowed to Kafka and HTTP subscribers, `hub.audit`
holds no personal id or entity key in clear (keys and values), `who-received` still answers, and a subscriber
that pseudonymises persons gets no person-level key in clear."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hub.contract.schemas import Catalogue
from tests.conftest import PORT_OFFSET
from tests.kafka_helpers import encode, header, produce_raw, read_to_end, wait_until
from tests.receiver import Receiver
from tests.unit.test_contract import examples

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KEY = "integration-test-master-key-0123456789"
SECRET = "audit-privacy-test-secret-abcdef"
RECEIVER_PORT = 27301 + PORT_OFFSET
PERSONAL_ID = re.compile(rb"(?<![0-9a-f])[0-9]{12}(?![0-9a-f])")  # alone, not a digit run inside a hex reference
PERSON_KEYS = ("application_id", "registration_id", "candidate_number", "teacher_id", "student_id")


def test_the_audit_trail_holds_no_personal_id_in_clear(local_stack, start_worker, unique_source, monkeypatch):
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("EDUHUB_TEST_SUB_SECRET", SECRET)
    full, hook, warehouse = f"all-{unique_source}", f"hook-{unique_source}", f"wh-{unique_source}"
    receiver = Receiver(RECEIVER_PORT, SECRET.encode()).start()
    try:
        start_worker([unique_source], subscriptions=[
            {"id": full, "entities": ["*"], "pii_default": "keep"},
            {"id": hook, "entities": ["*"], "pii_default": "keep",
             "delivery": {"kind": "http", "url": receiver.url, "secret_env": "EDUHUB_TEST_SUB_SECRET",
                          "backoff_initial_s": 0.05, "backoff_max_s": 0.5}},
            {"id": warehouse, "entities": ["*"], "pii_default": "pseudonymise"},
        ])
        sent = []
        for envelope in examples():
            envelope = copy.deepcopy(envelope)
            envelope["source"], envelope["event_id"] = unique_source, str(uuid.uuid4())
            sent.append(envelope)
        assert {e["entity"] for e in sent} == set(Catalogue.load().names)
        produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}",
                    [(e["key"].encode(), encode(e)) for e in sent])
        ids = {e["event_id"] for e in sent}

        def ours() -> list:
            return [r for r in read_to_end(local_stack.bootstrap_servers, "hub.audit")
                    if r.value and json.loads(r.value)["event_id"] in ids]

        # every event audited for each of the three subscribers (the HTTP one once delivered)
        wait_until(lambda: len(ours()) >= 3 * len(sent), bound_s=180, interval_s=1)
    finally:
        receiver.stop()

    records = ours()
    assert {(json.loads(r.value)["subscriber"], json.loads(r.value)["event_id"]) for r in records} == {
        (s, i) for s in (full, hook, warehouse) for i in ids}
    clear = {e["key"].encode() for e in sent} | {
        str(e["data"][f]).encode() for e in sent for f in ("student_id", "national_id", "applicant_id")
        if e["data"].get(f)}
    for r in records:
        for part in (r.key or b"", r.value):
            assert not PERSONAL_ID.search(part), part
            assert not [c for c in clear if c in part], part
        assert r.key is not None and r.key.decode() == json.loads(r.value)["key_ref"]

    # who-received still answers from a personal id
    student = next(e for e in sent if e["entity"] == "school.student")
    done = subprocess.run([sys.executable, "-m", "hub", "audit", "who-received", student["key"], "--json"],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "EDUHUB_CONFIG": "", "EDUHUB_KAFKA_BOOTSTRAP_SERVERS":
                               local_stack.bootstrap_servers, "EDUHUB_PSEUDONYM_KEY": KEY})
    assert done.returncode == 0, done.stderr
    got = {(g["subscriber"], g["event_id"]) for g in map(json.loads, done.stdout.splitlines())}
    assert {(s, student["event_id"]) for s in (full, hook, warehouse)} <= got

    # the pseudonymising subscriber: no person-level key in clear, in its record keys or values
    for envelope in sent:
        topic = f"sub.{warehouse}.{envelope['entity']}"
        (mine,) = [r for r in read_to_end(local_stack.bootstrap_servers, topic)
                   if header(r, "eduhub.event_id") == envelope["event_id"]]
        for name in PERSON_KEYS:
            value = envelope["data"].get(name)
            if value:
                assert value.encode() not in mine.key and value.encode() not in mine.value, (topic, name)

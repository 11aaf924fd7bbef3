"""Secrets and personal ids stay where the policy puts them: a full flow, then every log line, /metrics, the
status page, every DLQ and audit record and every subscriber's copy is searched for them."""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import time
import uuid

import httpx
import pytest

from hub.contract.signing import signed_headers
from hub.demo.run import Child
from tests.conftest import PORT_OFFSET, WorkerProcess, write_config
from tests.kafka_helpers import encode, produce_raw, read_topic, wait_until
from tests.receiver import Receiver
from tests.unit.test_contract import examples

pytestmark = pytest.mark.integration
SECRETS = {
    "EDUHUB_PSEUDONYM_KEY": "leak-test-master-key-7f3a9c1e5b2d4f60",
    "EDUHUB_TEST_LEAK_SUB_SECRET": "leak-test-subscriber-secret-91c2",
    "EDUHUB_TEST_LEAK_HTTP_SECRET": "leak-test-ingest-secret-5e8d",
    "EDUHUB_CONNECT_TOKEN": "leak-test-connect-token-c0ffee42",
}
WORKER_PORT, CONNECT_PORT, INGEST_PORT, RECEIVER_PORT = (26140 + PORT_OFFSET, 28189 + PORT_OFFSET,
                                                         28191 + PORT_OFFSET, 27140 + PORT_OFFSET)
STUDENTS = 12


def student(source: str, student_id: str, **data) -> dict:
    envelope = copy.deepcopy(next(e for e in examples() if e["entity"] == "school.student"))
    envelope.update(source=source, event_id=str(uuid.uuid4()), key=student_id)
    envelope["data"].update(student_id=student_id, **data)
    return envelope


def _texts(records) -> list[str]:
    """Every key, value and header of Kafka records as text (bytes that are not UTF-8 as latin-1)."""
    out = []
    for r in records:
        for part in (r.key, r.value, *(v for _, v in (r.headers or ()))):
            if part:
                out.append(part.decode("utf-8", errors="replace") + part.decode("latin-1"))
    return out


@pytest.fixture(scope="module")
def flow(local_stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leaks")
    source, portal = f"it-{uuid.uuid4().hex[:8]}", f"it-{uuid.uuid4().hex[:8]}"
    ids = [f"0313091{n:05d}" for n in range(70000, 70000 + STUDENTS)]
    subs = {name: f"leak-{name}-{source[3:]}" for name in ("keep", "drop", "pseudo", "hook")}
    receiver = Receiver(RECEIVER_PORT, SECRETS["EDUHUB_TEST_LEAK_SUB_SECRET"].encode()).start()
    subscriptions = [
        {"id": subs["keep"], "entities": ["school.student"], "pii_default": "keep"},
        {"id": subs["drop"], "entities": ["school.student"], "pii_default": "drop"},
        {"id": subs["pseudo"], "entities": ["school.student"], "pii_default": "pseudonymise"},
        {"id": subs["hook"], "entities": ["school.student"], "pii_default": "mask",
         "delivery": {"kind": "http", "url": receiver.url, "secret_env": "EDUHUB_TEST_LEAK_SUB_SECRET"}},
    ]
    extra = {
        "connect": {"port": CONNECT_PORT, "offsets_topic": f"{source}.connect-offsets"},
        "connectors": [{"name": f"portal-{portal}", "kind": "http", "source": portal, "port": INGEST_PORT,
                        "secret_env": "EDUHUB_TEST_LEAK_HTTP_SECRET"}],
    }
    config_path = write_config(tmp / "hub.yaml", local_stack, [source, portal], web_port=WORKER_PORT,
                               instance_id=f"it-leak-{uuid.uuid4().hex[:6]}", subscriptions=subscriptions, extra=extra)
    environment = pytest.MonkeyPatch()  # module-scoped: undone in the finally below
    for name, value in SECRETS.items():  # the worker and the connector runtime read their secrets from the environment
        environment.setenv(name, value)
    env = {**os.environ, "EDUHUB_CONFIG": str(config_path)}
    worker = WorkerProcess(config_path, tmp / "worker.log")
    connect = Child("connect", [sys.executable, "-m", "hub", "connect"], env, tmp / "connect.log")
    try:
        worker.start()
        connect.wait_ready(f"http://127.0.0.1:{CONNECT_PORT}/readyz")
        # valid learners, one refused by a rule (its id is in the DLQ's original bytes, by design), one repeat
        batch = [student(source, i) for i in ids[:-2]]
        batch += [student(source, ids[-2], grade=99), batch[0]]
        produce_raw(local_stack.bootstrap_servers, f"ingest.{source}", [(e["key"].encode(), encode(e)) for e in batch])
        body = json.dumps(student(portal, ids[-1])).encode()
        answer = httpx.post(f"http://127.0.0.1:{INGEST_PORT}/ingest/{portal}", content=body, timeout=30,
                            headers={"Content-Type": "application/json", **signed_headers(
                                SECRETS["EDUHUB_TEST_LEAK_HTTP_SECRET"].encode(), int(time.time()), body)})
        assert answer.status_code == 202, answer.text
        valid = STUDENTS - 1
        topics = {name: read_topic(local_stack.bootstrap_servers, f"sub.{sub}.school.student",
                                   lambda rs: len(rs) >= valid) for name, sub in subs.items() if name != "hook"}
        assert all(len(records) >= valid for records in topics.values()), {k: len(v) for k, v in topics.items()}
        assert wait_until(lambda: len(receiver.accepted) >= valid), len(receiver.accepted)
        dlq = read_topic(local_stack.bootstrap_servers, f"hub.dlq.{source}", lambda rs: len(rs) >= 1)
        audit = read_topic(local_stack.bootstrap_servers, "hub.audit", lambda rs: False, bound_s=10)
        web = f"http://127.0.0.1:{WORKER_PORT}"
        time.sleep(3)  # the status sampler runs every 2 s: let it see the flow
        pages = {path: httpx.get(web + path, timeout=10).text for path in ("/", "/status.json", "/metrics")}
        pages["connect /metrics"] = httpx.get(f"http://127.0.0.1:{CONNECT_PORT}/metrics", timeout=10).text
        yield {"ids": ids, "topics": topics, "dlq": dlq, "audit": audit, "pages": pages,
               "hook": [json.dumps(b) for b in receiver.accepted], "tmp": tmp, "subs": subs}
    finally:
        connect.stop()
        worker.stop()
        receiver.stop()
        environment.undo()


def _logs(flow) -> list[str]:
    return [(flow["tmp"] / name).read_text(errors="replace") for name in ("worker.log", "connect.log")]


def test_no_secret_appears_in_logs_pages_metrics_dlq_audit_or_any_copy(flow):
    haystacks = {"logs": _logs(flow), "pages": list(flow["pages"].values()), "dlq": _texts(flow["dlq"]),
                 "audit": _texts(flow["audit"]), "http subscriber": flow["hook"],
                 **{f"sub {name}": _texts(records) for name, records in flow["topics"].items()}}
    for where, texts in haystacks.items():
        for text in texts:
            for name, secret in SECRETS.items():
                assert secret not in text, f"{name} in {where}"


def test_personal_ids_appear_only_where_the_policy_keeps_them(flow):
    ids = set(flow["ids"])
    twelve = re.compile(r"(?<!\d)\d{12}(?!\d)")

    def clear_ids(texts):
        return {m for text in texts for m in twelve.findall(text)} & ids

    # the check can see them: the subscriber that keeps PII has them, and the DLQ keeps the original bytes
    assert clear_ids(_texts(flow["topics"]["keep"])) >= set(flow["ids"][:-2])
    assert flow["ids"][-2] in clear_ids(_texts(flow["dlq"]))
    forbidden = {"worker and connector logs": _logs(flow), "pages and metrics": list(flow["pages"].values()),
                 "hub.audit": _texts(flow["audit"]), "the http subscriber (mask)": flow["hook"],
                 "the drop subscriber": _texts(flow["topics"]["drop"]),
                 "the pseudonymise subscriber": _texts(flow["topics"]["pseudo"])}
    for where, texts in forbidden.items():
        assert clear_ids(texts) == set(), f"personal ids in clear in {where}"

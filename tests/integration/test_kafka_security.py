"""Kafka security on the secure local broker (SASL_SSL, SCRAM, StandardAuthorizer): a worker, a connector with its own
user and a CLI tool end to end; a wrong password or CA fails fast, naming the listener and the user, never the secret."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from connectors.runtime import ConnectService
from hub.core.config import load_config
from hub.demo.simulators import SchoolSpreadsheets, file_connector_config
from hub.kafka.admin import partitions_of
from hub.kafka.clients import KafkaClients, KafkaSecurityError
from hub.ops.acl import apply, plan
from tests.conftest import PORT_OFFSET, SECURE_TEST_PORTS, WorkerProcess
from tests.kafka_helpers import header, read_to_end, wait_until
from tests.tls_certs import make_certs

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CONNECTOR_USER, CONNECTOR_ENV = "conn-b", "CONN_B_KAFKA_PASSWORD"
WEB_PORT = 26150 + PORT_OFFSET


def document(stack, source: str, inbox: Path | None = None, **kafka) -> dict:
    """hub.yaml for the secure stack: the hub as User:hub, the file connector (if `inbox`) as User:conn-b, and a
    Kafka subscriber of the scores (so that the route stage runs too)."""
    doc = {
        "kafka": {"bootstrap_servers": stack.bootstrap_servers, "security_protocol": "SASL_SSL", "username": "hub",
                  "ssl_cafile": str(stack.secure.tls.ca_cert), "ingest_partitions": 3, "canonical_partitions": 3,
                  **kafka},
        "registry": {"url": stack.registry_url},
        "worker": {"instance_id": f"sec-{uuid.uuid4().hex[:6]}", "web_port": WEB_PORT},
        "sources": [{"id": source}],
        "local": {"state_dir": str(stack.state_dir), **SECURE_TEST_PORTS},
        "connect": {"port": 28190 + PORT_OFFSET, "offsets_topic": f"it.connect.offsets.{source}"},
        "subscriptions": [{"id": f"sub-{source}", "entities": ["school.score"],
                           "pii": {"student_id": "pseudonymise"}}],
    }
    if inbox is not None:
        doc["connectors"] = [{**file_connector_config(inbox, source=source, name=f"sheets-{source}"),
                              "poll_interval_s": 0.1, "settle_s": 0,
                              "kafka_username": CONNECTOR_USER, "kafka_password_env": CONNECTOR_ENV}]
    return doc


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def admin_clients(stack) -> KafkaClients:
    """The operator (a super user): reads what the test checks, DLQ included."""
    return KafkaClients(stack.bootstrap_servers, "SASL_SSL", username="admin",
                        password=SecretStr(stack.secure.password("admin")), ssl_cafile=str(stack.secure.tls.ca_cert))


def hub_env(stack) -> dict[str, str]:
    return {"EDUHUB_KAFKA_PASSWORD": stack.secure.password("hub"), "EDUHUB_CONNECT_TOKEN": secrets.token_urlsafe(24),
            "EDUHUB_PSEUDONYM_KEY": "test-pseudonym-key-of-the-security-test"}


def test_a_worker_a_connector_with_its_own_user_and_a_cli_tool_run_over_sasl_ssl(secure_stack, tmp_path, monkeypatch):
    stack = secure_stack
    source = f"sec-{uuid.uuid4().hex[:8]}"
    inbox = tmp_path / "inbox"
    full = load_config(write(tmp_path / "hub-connect.yaml", document(stack, source, inbox)), environ=hub_env(stack))
    apply(plan(full), stack.secure.confluent_config(stack.bootstrap_servers))  # least privilege, as in production
    worker = WorkerProcess(write(tmp_path / "hub.yaml", document(stack, source)), tmp_path / "worker.log",
                           env=hub_env(stack)).start()
    try:
        monkeypatch.setenv(CONNECTOR_ENV, stack.secure.password(CONNECTOR_USER))
        SchoolSpreadsheets(inbox, seed=11).write_scores_csv(12, bad_rows=1)

        async def connect() -> list[str]:
            service = ConnectService(full)
            await service.start()
            try:
                runtime = service.get(f"sheets-{source}")
                deadline = time.monotonic() + 60
                while runtime.status.published < 12:
                    assert time.monotonic() < deadline, runtime.status.as_dict()
                    await asyncio.sleep(0.1)
            finally:
                await service.stop()
            return [kafka.username for kafka in service.producers]

        # The hub may not write ingest.*: the records arrive because Kafka took them from User:conn-b.
        assert asyncio.run(connect()) == [CONNECTOR_USER]
        admin = admin_clients(stack)

        def mine(topic: str) -> int:
            try:
                return len([r for r in read_to_end(admin, topic) if header(r, "eduhub.source") == source])
            except LookupError:
                return 0

        def outputs() -> tuple[int, int, int]:  # validated, dead-lettered, routed to the subscriber
            return (mine("edu.school.score"), len(read_to_end(admin, f"hub.dlq.{source}")),
                    mine(f"sub.sub-{source}.school.score"))

        wait_until(lambda: outputs() == (11, 1, 11), bound_s=120)
        assert outputs() == (11, 1, 11), worker.log_path.read_text()[-3000:]
    finally:
        worker.stop()
    tail = subprocess.run([sys.executable, "-m", "hub", "tail", "edu.school.score", "--from-beginning", "--max", "1",
                           "--timeout", "20"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **hub_env(stack), "EDUHUB_CONFIG": str(worker.config_path)})
    assert tail.returncode == 0 and '"value"' in tail.stdout, tail.stderr[-3000:]
    log = worker.log_path.read_text()
    for secret in (stack.secure.password("hub"), stack.secure.password(CONNECTOR_USER)):
        assert secret not in log and secret not in tail.stdout + tail.stderr


def _refusal(clients: KafkaClients) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError) as error:
        asyncio.run(partitions_of(clients, "edu.school.score"))
    return str(error.value), time.monotonic() - started


def test_a_wrong_password_fails_fast_naming_the_listener_and_the_user(secure_stack):
    stack = secure_stack
    wrong = f"wrong-{uuid.uuid4().hex}"
    clients = KafkaClients(stack.bootstrap_servers, "SASL_SSL", username="hub", password=SecretStr(wrong),
                           ssl_cafile=str(stack.secure.tls.ca_cert))
    text, seconds = _refusal(clients)
    assert text.startswith(f"Kafka refused User:hub on SASL_SSL listener {stack.bootstrap_servers}: authentication "
                           f"failed (check kafka.username and EDUHUB_KAFKA_PASSWORD"), text
    assert wrong not in text and seconds < 30


def test_a_broker_certificate_from_another_ca_fails_fast_naming_the_listener(secure_stack, tmp_path):
    stack = secure_stack
    other = make_certs(tmp_path / "other")
    clients = KafkaClients(stack.bootstrap_servers, "SASL_SSL", username="hub",
                           password=SecretStr(stack.secure.password("hub")), ssl_cafile=str(other.ca))
    text, seconds = _refusal(clients)
    assert text.startswith(f"TLS verification of Kafka SASL_SSL listener {stack.bootstrap_servers} failed for "
                           f"User:hub"), text
    assert "kafka.ssl_cafile" in text and seconds < 30


def _exits(args: list[str], config: Path, env: dict[str, str], bound_s: float = 90) -> tuple[int, str]:
    process = subprocess.run([sys.executable, "-m", "hub", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=bound_s, env={**os.environ, **env, "EDUHUB_CONFIG": str(config)})
    return process.returncode, process.stdout + process.stderr


def test_a_worker_and_a_connect_process_with_a_wrong_password_exit_at_start_up(secure_stack, tmp_path):
    stack = secure_stack
    source = f"sec-{uuid.uuid4().hex[:8]}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = {**hub_env(stack), "EDUHUB_KAFKA_PASSWORD": wrong}
    code, output = _exits(["worker"], write(tmp_path / "hub.yaml", document(stack, source)), env)
    assert code != 0 and f"Kafka refused User:hub on SASL_SSL listener {stack.bootstrap_servers}" in output, output
    assert wrong not in output

    (tmp_path / "inbox").mkdir()
    config = write(tmp_path / "hub-connect.yaml", document(stack, source, tmp_path / "inbox"))
    apply(plan(load_config(config, environ=hub_env(stack))), stack.secure.confluent_config(stack.bootstrap_servers))
    code, output = _exits(["connect"], config, {**hub_env(stack), CONNECTOR_ENV: wrong})
    assert code != 0, output
    assert f"Kafka refused User:{CONNECTOR_USER} on SASL_SSL listener {stack.bootstrap_servers}" in output, output
    assert f"connectors.0.kafka_username and {CONNECTOR_ENV}" in output and wrong not in output

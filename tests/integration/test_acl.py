"""Least privilege on the secure local broker: after `eduhub acl apply`, each principal reaches its own topics only."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (GroupAuthorizationFailedError, KafkaConnectionError, KafkaError,
                             TopicAuthorizationFailedError)

from hub.core.config import HubConfig
from hub.ops.acl import AclError, apply, plan

pytestmark = pytest.mark.integration

# The hub.yaml whose principals tests/conftest.py's secure stack has as users (SECURE_TEST_USERS).
CONFIG = HubConfig.model_validate({
    "sources": [{"id": "src-a"}, {"id": "src-b"}],
    "connectors": [
        {"name": "conn-a", "kind": "sql", "source": "src-a", "kafka_username": "conn-a",
         "kafka_password_env": "CONN_A_KAFKA_PASSWORD"},
        {"name": "conn-b", "kind": "sql", "source": "src-b", "kafka_username": "conn-b",
         "kafka_password_env": "CONN_B_KAFKA_PASSWORD"},
    ],
    "subscriptions": [{"id": "alpha", "entities": ["*"]}, {"id": "beta", "entities": ["*"]}],
    "acl": {"operators": ["User:admin", "User:alice"]},
})
# Canonical and subscriber topics of an entity the catalogue does not have, so that a worker of another test
# on this broker never meets them; hub.audit with the partitions a worker would give it (canonical_partitions: 3).
TOPICS = {"ingest.src-a": 1, "ingest.src-b": 1, "edu.acltest.score": 1, "sub.alpha.acltest.score": 1,
          "sub.beta.acltest.score": 1, "hub.dlq.src-a": 1, "hub.audit": 3}


def kwargs(stack, user: str, password: str | None = None) -> dict:
    return {"bootstrap_servers": stack.bootstrap_servers, **stack.secure.aiokafka_kwargs(user, password)}


async def _setup(stack) -> None:
    admin = AIOKafkaAdminClient(**kwargs(stack, "admin"))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, n, 1) for t, n in TOPICS.items() if t not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**kwargs(stack, "admin"))
    await producer.start()
    try:
        for topic in TOPICS:
            await producer.send_and_wait(topic, f"first record of {topic}".encode(), key=b"k")
    finally:
        await producer.stop()


async def _read(stack, user: str, topic: str, group: str | None = None, timeout_s: float = 20.0) -> bytes:
    """The first record of `topic` as `user` (in consumer group `group`), or the broker's refusal."""
    consumer = AIOKafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                                **kwargs(stack, user))
    try:
        await consumer.start()
        return (await asyncio.wait_for(consumer.getone(), timeout_s)).value
    finally:
        await consumer.stop()


async def _write(stack, user: str, topic: str) -> None:
    producer = AIOKafkaProducer(enable_idempotence=True, acks="all", request_timeout_ms=10_000, **kwargs(stack, user))
    try:
        await producer.start()
        await producer.send_and_wait(topic, b"written", key=b"k")
    finally:
        await producer.stop()


def read(stack, user, topic, group=None) -> bytes:
    return asyncio.run(_read(stack, user, topic, group))


def write(stack, user, topic) -> None:
    asyncio.run(_write(stack, user, topic))


@pytest.fixture(scope="module")
def applied(secure_stack):
    """The test topics with one record each (written by admin), then `acl apply` of CONFIG's plan."""
    asyncio.run(_setup(secure_stack))
    added = apply(plan(CONFIG), secure_stack.secure.confluent_config(secure_stack.bootstrap_servers),
                  describe="the secure test broker as User:admin")
    return secure_stack, added


def test_apply_adds_the_plan_once(applied):
    stack, added = applied
    assert {b.key for b in added} <= {b.key for b in plan(CONFIG)} and added
    again = apply(plan(CONFIG), stack.secure.confluent_config(stack.bootstrap_servers))
    assert again == []  # idempotent: a second run adds nothing


def test_the_acl_apply_command_says_what_it_added(applied, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from hub.ops.cli import app

    stack, _ = applied
    document = {**CONFIG.model_dump(mode="json", include={"sources", "connectors", "subscriptions", "acl"}),
                "kafka": {"bootstrap_servers": stack.bootstrap_servers, "security_protocol": "SASL_SSL",
                          "username": "hub", "ssl_cafile": str(stack.secure.tls.ca_cert)}}
    document["acl"] = {"operators": ["User:admin", "User:alice", "User:bob"]}  # bob is new: his 9 operator ACLs
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("EDUHUB_KAFKA_PASSWORD", stack.secure.password("hub"))
    monkeypatch.setenv("EDUHUB_KAFKA_ADMIN_PASSWORD", stack.secure.password("admin"))
    first = CliRunner().invoke(app, ["--config", str(path), "acl", "apply"])
    assert first.exit_code == 0, first.output
    assert "added 9 of" in first.output and "User:bob" in first.output
    again = CliRunner().invoke(app, ["--config", str(path), "acl", "apply"])
    assert again.exit_code == 0 and "nothing added" in again.output, again.output
    monkeypatch.setenv("EDUHUB_KAFKA_ADMIN_PASSWORD", "not-it")
    refused = CliRunner().invoke(app, ["--config", str(path), "acl", "apply"])
    assert refused.exit_code == 1 and "as User:admin" in refused.output and "not-it" not in refused.output


def test_a_subscriber_reads_its_own_topics_in_its_own_group(applied):
    stack, _ = applied
    assert read(stack, "sub-alpha", "sub.alpha.acltest.score", group="sub.alpha.reader") == \
        b"first record of sub.alpha.acltest.score"


def test_a_subscriber_cannot_read_another_subscribers_topic(applied):
    stack, _ = applied
    with pytest.raises(TopicAuthorizationFailedError):
        read(stack, "sub-alpha", "sub.beta.acltest.score", group="sub.alpha.reader")


def test_a_subscriber_cannot_read_a_canonical_topic(applied):
    stack, _ = applied
    with pytest.raises(TopicAuthorizationFailedError):
        read(stack, "sub-alpha", "edu.acltest.score", group="sub.alpha.reader")


def test_a_subscriber_cannot_use_a_group_outside_its_prefix(applied):
    stack, _ = applied
    with pytest.raises(GroupAuthorizationFailedError):
        read(stack, "sub-alpha", "sub.alpha.acltest.score", group="eduhub-route")


def test_a_connector_writes_its_own_ingest_topic_only(applied):
    stack, _ = applied
    write(stack, "conn-a", "ingest.src-a")
    with pytest.raises(TopicAuthorizationFailedError):
        write(stack, "conn-a", "ingest.src-b")
    with pytest.raises(TopicAuthorizationFailedError):
        write(stack, "conn-a", "edu.acltest.score")


@pytest.mark.parametrize("topic", ["hub.dlq.src-a", "hub.audit"])
def test_only_operators_read_dead_letters_and_the_audit_trail(applied, topic):
    stack, _ = applied
    for outsider in ("sub-alpha", "conn-a", "hub"):
        with pytest.raises(TopicAuthorizationFailedError):
            read(stack, outsider, topic)
    # alice is no super user: the plan's operator ACLs let her read (a worker of another test may have
    # written hub.audit first)
    assert read(stack, "alice", topic)


def test_the_hub_reads_ingest_and_writes_canonical_topics(applied):
    stack, _ = applied
    assert read(stack, "hub", "ingest.src-a", group="eduhub-validate-test") == b"first record of ingest.src-a"
    write(stack, "hub", "edu.acltest.score")


def test_a_wrong_password_fails_fast(secure_stack):
    async def start_admin() -> None:
        admin = AIOKafkaAdminClient(request_timeout_ms=30_000, **kwargs(secure_stack, "hub", "not-the-password"))
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    started = time.monotonic()
    with pytest.raises((KafkaError, KafkaConnectionError)):
        asyncio.run(start_admin())
    assert time.monotonic() - started < 15


def test_acl_apply_with_a_wrong_password_names_the_listener_and_the_user_not_the_secret(secure_stack):
    settings = {**secure_stack.secure.confluent_config(secure_stack.bootstrap_servers), "sasl.password": "wrong-pw-1"}
    who = f"SASL_SSL listener {secure_stack.bootstrap_servers} as User:admin"
    started = time.monotonic()
    with pytest.raises(AclError) as refused:
        apply(plan(CONFIG), settings, timeout_s=30, describe=who)
    assert time.monotonic() - started < 15
    assert who in str(refused.value) and "wrong-pw-1" not in str(refused.value)


def test_a_user_added_to_hub_yaml_later_is_created_on_the_next_up(secure_stack):
    from hub.demo.local import LocalStack
    from hub.demo.secure import User

    later = LocalStack(secure_stack.config, secure=True, users=[User("late-sub", "LATE_SUB_PASSWORD", "test")])
    later.up(echo=lambda line: None)  # both parts run already: reused, not restarted
    assert later.status()["kafka"]["pid"] == secure_stack.status()["kafka"]["pid"]
    assert "LATE_SUB_PASSWORD=" in later.secure.credentials_file.read_text()

    async def login() -> None:
        admin = AIOKafkaAdminClient(**kwargs(later, "late-sub"))
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    asyncio.run(login())


def test_the_registry_stores_schemas_in_kafka_over_sasl_ssl(secure_stack):
    """Registering a schema writes Apicurio's kafkasql journal: only possible with its SASL_SSL login and ACLs."""
    subjects = f"{secure_stack.registry_url}/subjects"
    answer = httpx.post(f"{subjects}/acl-test-value/versions", json={"schema": '{"type": "string"}'}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert "acl-test-value" in httpx.get(subjects, timeout=10).json()

"""`eduhub acl plan`: the ACLs derived from hub.yaml give each principal its own topics and nothing else."""

from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

from hub.core.config import HubConfig, load_config
from hub.ops.acl import Binding, plan, principals, table
from hub.ops.cli import app


def document(**extra) -> dict:
    return {
        "sources": [{"id": "smas"}, {"id": "exam-reg"}],
        "connectors": [
            {"name": "smas-students", "kind": "sql", "source": "smas", "kafka_username": "conn-smas",
             "kafka_password_env": "SMAS_KAFKA_PASSWORD"},
            {"name": "exam-outbox", "kind": "outbox", "source": "exam-reg", "kafka_username": "conn-exam",
             "kafka_password_env": "EXAM_KAFKA_PASSWORD"},
        ],
        "subscriptions": [
            {"id": "moet-sync", "entities": ["*"]},
            {"id": "analytics", "entities": ["*"], "kafka_principal": "User:bi-team"},
            {"id": "parent-app", "entities": ["school.score"],
             "delivery": {"kind": "http", "url": "https://x.example/h", "secret_env": "S"}},
        ],
        **extra,
    }


def config(**extra) -> HubConfig:
    return HubConfig.model_validate(document(**extra))


def of(bindings: list[Binding], principal: str) -> set[tuple[str, str, str, str]]:
    return {(b.resource_type, b.pattern_type, b.resource_name, b.operation) for b in bindings
            if b.principal == principal}


def allowed(bindings: list[Binding], principal: str, rtype: str, name: str, op: str) -> bool:
    """What Kafka's authorizer would decide for this plan (ALLOW only, default deny; DESCRIBE implied by
    READ/WRITE, as Kafka does)."""
    ops = {op} | ({"READ", "WRITE"} if op == "DESCRIBE" else set())
    for b in bindings:
        if b.principal != principal or b.resource_type != rtype or b.operation not in ops:
            continue
        if (b.pattern_type == "LITERAL" and b.resource_name == name) or (
                b.pattern_type == "PREFIXED" and name.startswith(b.resource_name)):
            return True
    return False


def test_a_connector_writes_its_own_ingest_topic_and_offsets_only():
    bindings = plan(config())
    assert of(bindings, "User:conn-smas") == {
        ("TOPIC", "LITERAL", "ingest.smas", "WRITE"), ("TOPIC", "LITERAL", "ingest.smas", "DESCRIBE"),
        ("TOPIC", "LITERAL", "hub.connect.offsets", "WRITE"), ("TOPIC", "LITERAL", "hub.connect.offsets", "DESCRIBE"),
        ("CLUSTER", "LITERAL", "kafka-cluster", "IDEMPOTENT_WRITE"),
    }
    assert not allowed(bindings, "User:conn-smas", "TOPIC", "ingest.exam-reg", "WRITE")
    assert not allowed(bindings, "User:conn-smas", "TOPIC", "ingest.smas", "READ")
    assert not allowed(bindings, "User:conn-smas", "TOPIC", "edu.school.student", "WRITE")
    assert allowed(bindings, "User:conn-exam", "TOPIC", "ingest.exam-reg", "WRITE")


def test_a_connector_without_its_own_user_runs_as_the_hub_which_then_writes_that_source():
    doc = document()
    for connector in doc["connectors"]:
        connector.pop("kafka_username"), connector.pop("kafka_password_env")
    bindings = plan(HubConfig.model_validate(doc))
    assert allowed(bindings, "User:hub", "TOPIC", "ingest.smas", "WRITE")
    assert allowed(bindings, "User:hub", "TOPIC", "hub.connect.offsets", "WRITE")
    assert not allowed(bindings, "User:hub", "TOPIC", "ingest.other-source", "WRITE")
    assert not any(b.principal.startswith("User:conn-") for b in bindings)


def test_a_kafka_subscriber_reads_its_own_prefix_with_its_own_groups_only():
    bindings = plan(config())
    assert of(bindings, "User:sub-moet-sync") == {
        ("TOPIC", "PREFIXED", "sub.moet-sync.", "READ"), ("TOPIC", "PREFIXED", "sub.moet-sync.", "DESCRIBE"),
        ("GROUP", "PREFIXED", "sub.moet-sync.", "READ"),
    }
    assert allowed(bindings, "User:sub-moet-sync", "TOPIC", "sub.moet-sync.exam.registration", "READ")
    assert allowed(bindings, "User:sub-moet-sync", "GROUP", "sub.moet-sync.etl", "READ")
    for topic in ("sub.analytics.school.student", "edu.school.student", "ingest.smas", "hub.audit", "hub.dlq.smas",
                  "sub.moet-sync-2.school.student"):
        assert not allowed(bindings, "User:sub-moet-sync", "TOPIC", topic, "READ"), topic
    assert not allowed(bindings, "User:sub-moet-sync", "GROUP", "eduhub-route", "READ")
    assert not allowed(bindings, "User:sub-moet-sync", "TOPIC", "sub.moet-sync.x", "WRITE")


def test_a_subscription_may_name_its_principal_and_http_subscribers_get_none():
    bindings = plan(config())
    assert allowed(bindings, "User:bi-team", "TOPIC", "sub.analytics.school.score", "READ")
    assert "User:sub-analytics" not in {b.principal for b in bindings}
    assert "User:sub-parent-app" not in {b.principal for b in bindings}
    # the hub's HTTP delivery reads parent-app's queue topics, and no other subscriber's
    assert allowed(bindings, "User:hub", "TOPIC", "sub.parent-app.school.score", "READ")
    assert not allowed(bindings, "User:hub", "TOPIC", "sub.moet-sync.school.score", "READ")


def test_the_hub_uses_its_own_topics_and_never_reads_dead_letters_or_the_audit_trail():
    bindings = plan(config())
    hub = "User:hub"
    for rtype, name, op in [("TOPIC", "ingest.smas", "READ"), ("TOPIC", "edu.school.student", "READ"),
                            ("TOPIC", "edu.school.student", "WRITE"), ("TOPIC", "edu.x.y", "CREATE"),
                            ("TOPIC", "sub.moet-sync.school.student", "WRITE"), ("TOPIC", "hub.dlq.smas", "WRITE"),
                            ("TOPIC", "hub.audit", "WRITE"), ("TOPIC", "eduhub-validate-dedup-changelog", "READ"),
                            ("GROUP", "eduhub-validate", "READ"), ("GROUP", "eduhub-deliver-parent-app", "READ"),
                            ("TRANSACTIONAL_ID", "eduhub-route-3", "WRITE"),
                            ("TOPIC", "hub.connect.offsets", "READ")]:
        assert allowed(bindings, hub, rtype, name, op), (rtype, name, op)
    for name in ("hub.dlq.smas", "hub.dlq.sub.parent-app", "hub.dlq.route", "hub.audit"):
        assert not allowed(bindings, hub, "TOPIC", name, "READ"), name
    assert not allowed(bindings, hub, "TOPIC", "ingest.smas", "WRITE")  # connectors have their own users


def test_only_operators_read_dead_letters_and_audit():
    bindings = plan(config(acl={"operators": ["User:admin", "User:alice"]}))
    everyone = {b.principal for b in bindings}
    for topic in ("hub.dlq.smas", "hub.dlq.sub.parent-app", "hub.dlq.route", "hub.audit"):
        readers = {p for p in everyone if allowed(bindings, p, "TOPIC", topic, "READ")}
        assert readers == {"User:admin", "User:alice"}, topic


def test_the_hub_principal_follows_kafka_username_or_the_acl_setting():
    assert "User:svc-hub" in principals(HubConfig.model_validate({"acl": {"hub_principal": "User:svc-hub"}}))
    assert list(principals(HubConfig()))[0] == "User:hub"


def test_plan_has_no_duplicates_and_is_stable():
    first, second = plan(config()), plan(config())
    assert first == second
    assert len({b.key for b in first}) == len(first)


def test_principals_name_every_user_to_create():
    assert set(principals(config())) == {"User:hub", "User:conn-smas", "User:conn-exam", "User:sub-moet-sync",
                                         "User:bi-team", "User:admin"}


def test_plan_command_prints_a_table_and_json(tmp_path):
    import yaml

    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(document()))
    load_config(path, environ={})  # the file round-trips
    runner = CliRunner()
    text = runner.invoke(app, ["--config", str(path), "acl", "plan"])
    assert text.exit_code == 0, text.output
    assert "User:sub-moet-sync" in text.output and "PREFIXED" in text.output
    assert len(text.output.strip().splitlines()) == len(plan(config())) + 1
    raw = runner.invoke(app, ["--config", str(path), "acl", "plan", "--json"])
    assert raw.exit_code == 0, raw.output
    rows = json.loads(raw.output)
    assert {"principal", "resource_type", "pattern_type", "resource_name", "operation", "why"} <= set(rows[0])
    assert len(rows) == len(plan(config()))


def test_table_aligns_columns():
    lines = table(plan(config())[:3])
    assert lines[0].startswith("PRINCIPAL") and len({line.index("TOPIC") for line in lines[1:] if "TOPIC" in line}) <= 1


def test_the_subscription_model_accepts_the_principal_the_plan_reads():
    """The plan reads `kafka_principal`; the worker validates subscriptions with the same model, so it must accept it."""
    from hub.routing.subscriptions import SubscriptionConfig

    assert SubscriptionConfig.model_validate(
        {"id": "analytics", "entities": ["*"], "kafka_principal": "User:bi-team"}).kafka_principal == "User:bi-team"
    with pytest.raises(ValueError, match="kafka_principal"):
        SubscriptionConfig.model_validate({"id": "analytics", "entities": ["*"], "kafka_principal": "bi-team"})

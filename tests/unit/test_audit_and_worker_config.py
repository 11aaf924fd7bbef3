"""The audit trail's references and the worker's refusals at start-up."""

from __future__ import annotations

import asyncio
import json

import pytest

from hub.routing.audit import audit_key, audit_record, person_ref, who_received
from hub.core.config import ConfigError, HubConfig
from hub.runtime.worker import create_app, master_key

KEY = audit_key(b"unit-test-master-key-0123456789")


def test_audit_records_hold_references_not_ids_and_answer_who_received():
    record = {"student_id": "031309001234", "school_year": "2025-2026"}
    entries = [
        audit_record(KEY, subscriber="moet-sync", entity="school.score", entity_key="031309001234|2025-2026|1",
                     event_id="e1", record=record, at="2026-05-01T00:00:00Z"),
        audit_record(KEY, subscriber="analytics", entity="school.student", entity_key="031309009999",
                     event_id="e2", record={"student_id": "031309009999"}, at="2026-05-01T00:00:01Z"),
    ]
    assert all(b"031309001234" not in e for e in entries)
    found = who_received(KEY, entries, "031309001234")
    assert [(f["subscriber"], f["event_id"]) for f in found] == [("moet-sync", "e1")]
    assert who_received(KEY, entries, "031309001234|2025-2026|1")[0]["event_id"] == "e1"  # by entity key too
    assert person_ref(KEY, "x") != person_ref(audit_key(b"another-master-key-0123456789"), "x")
    assert json.loads(entries[0])["outcome"] == "delivered"


def config(subscriptions, tmp_path):
    return HubConfig.model_validate({"sources": [{"id": "exam-reg"}], "subscriptions": subscriptions})


def test_subscriptions_need_the_master_key(tmp_path, monkeypatch):
    monkeypatch.delenv("EDUHUB_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ConfigError, match="EDUHUB_PSEUDONYM_KEY"):
        master_key(config([{"id": "moet-sync", "entities": ["*"]}], tmp_path))


def test_an_http_subscriber_without_its_secret_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", "unit-test-master-key-0123456789")
    monkeypatch.delenv("X_SECRET", raising=False)
    subscription = {"id": "parent-app", "entities": ["school.score"],
                    "delivery": {"kind": "http", "url": "https://example.invalid/hook", "secret_env": "X_SECRET"}}
    with pytest.raises(ConfigError, match=r"subscriptions\.0\.delivery\.secret_env: the environment variable X_SECRET"):
        create_app(config([subscription], tmp_path))


def test_faust_starts_no_kafka_client_and_makes_no_data_directory(tmp_path, monkeypatch):
    """Faust is the worker's service and web framework only: the stages own every Kafka client."""
    monkeypatch.chdir(tmp_path)
    app = create_app(config([], tmp_path))
    services = list(app.boot_strategy.server())
    # by identity: Faust's managers are Mappings, and two empty ones compare equal
    assert any(s is app.web for s in services)  # the web server still starts
    for kafka_side in (app.producer, app.consumer, app.topics, app.tables, app._leader_assignor):
        assert all(s is not kafka_side for s in services), kafka_side
    asyncio.run(app.on_first_start())
    assert list(tmp_path.iterdir()) == []


def test_dlq_topics_are_created_with_the_configured_retention():
    from hub.runtime.worker import dlq_configs

    assert dlq_configs(HubConfig.model_validate({})) == {"retention.ms": str(30 * 86_400_000)}
    assert dlq_configs(HubConfig.model_validate({"kafka": {"dlq_retention_days": 7}})) == {"retention.ms": "604800000"}
    with pytest.raises(Exception, match="dlq_retention_days"):
        HubConfig.model_validate({"kafka": {"dlq_retention_days": 0}})

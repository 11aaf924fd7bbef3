"""Every topic the hub's processes create, with its partitions and configs: what a cluster must declare."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.runtime import OFFSET_PARTITIONS
from hub.contract.schemas import Catalogue
from hub.contract.topics import (AUDIT_TOPIC, REPLAYS_TOPIC, ROUTE_DLQ_TOPIC, changelog_topic, dlq_topic,
                                 ingest_topic, subscriber_dlq_topic)
from hub.core.config import HubConfig
from hub.routing.policy import load_subscriptions
from hub.routing.subscriptions import HttpDelivery
from hub.runtime.worker import APP_ID, dlq_configs, worker_topics
from hub.stages.dedup import changelog_configs

# Pseudonyms depend on the master key, which topics do not: any key builds the policies' entity lists.
_PLAN_KEY = b"topic-plan: no pseudonym is ever derived from this key"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partition count, the configs the hub sets on it, and which process creates it."""
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    created_by: str = "worker"


def topic_plan(config: HubConfig, catalogue: Catalogue | None = None) -> list[TopicSpec]:
    """The topics `eduhub worker`, `eduhub connect` and `eduhub dlq replay` create for `config`, by name.

    The worker and the connector runtime create them with the same calls this plan reads its
    partitions and configs from (tests/integration/test_deploy_image.py compares the plan with a
    real broker after both ran).
    """
    catalogue = catalogue or Catalogue.load()
    kafka = config.kafka
    specs: dict[str, TopicSpec] = {}

    def add(name: str, partitions: int, configs: dict[str, str] | None = None, created_by: str = "worker") -> None:
        specs.setdefault(name, TopicSpec(name, partitions, dict(configs or {}), created_by))

    for name, partitions in worker_topics(config, catalogue):
        add(name, partitions)
    for source in config.source_ids:
        add(dlq_topic(source), kafka.ingest_partitions, dlq_configs(config))
    if config.worker.dedup_window_s:
        add(changelog_topic(f"{APP_ID}-validate"), kafka.ingest_partitions,
            changelog_configs(config.worker.dedup_window_s))
    if config.subscriptions:
        policies = load_subscriptions(config.subscriptions, catalogue, _PLAN_KEY)
        for policy in policies:
            for entity in sorted(policy.entities):
                add(policy.topic(entity), kafka.canonical_partitions)
        add(ROUTE_DLQ_TOPIC, kafka.canonical_partitions, dlq_configs(config))
        add(AUDIT_TOPIC, kafka.canonical_partitions, {"retention.ms": "-1"})
        for policy in policies:
            if isinstance(policy.config.delivery, HttpDelivery):
                add(subscriber_dlq_topic(policy.config.id), kafka.canonical_partitions, dlq_configs(config))
    if config.connectors:
        add(config.connect.offsets_topic, OFFSET_PARTITIONS, {"cleanup.policy": "compact"}, "connect")
        for source in sorted({c["source"] for c in config.connectors if c.get("source")}):
            add(ingest_topic(source), kafka.ingest_partitions, created_by="connect")
    add(REPLAYS_TOPIC, 1, {"cleanup.policy": "compact"}, "eduhub dlq replay")
    return sorted(specs.values(), key=lambda s: s.name)

"""Shared by the bench's parent and its row processes: row names, topics, subscriber schemas and input records."""

from __future__ import annotations

import copy
import json
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from hub.contract.registry import COMPATIBILITY, SchemaRegistry
from hub.contract.schemas import Catalogue
from hub.contract.topics import AUDIT_TOPIC, ROUTE_DLQ_TOPIC, canonical_topic, dlq_topic, ingest_topic
from hub.core.config import ConfigError, HubConfig
from hub.demo.simulators import ExamRegistrationSimulator
from hub.kafka.admin import ensure_topics
from hub.kafka.clients import KafkaClients
from hub.routing.policy import SubscriptionPolicy, load_subscriptions
from hub.stages.dedup import changelog_configs
from hub.stages.validate import Valid, Validator

ROWS = ("plain", "validate", "route", "e2e", "quix", "faust")
HUB_ROWS = ROWS[:4]  # hub/ops/bench_rows.py runs these
PEER_ROWS = ROWS[4:]  # hub/ops/bench_peers.py runs these
TITLES = {
    "plain": "plain aiokafka loop",
    "validate": "hub validate",
    "route": "hub route",
    "e2e": "hub end to end",
    "quix": "Quix Streams exactly-once",
    "faust": "naive Faust agent",
}
ROUTED = ("route", "e2e")  # rows whose output is a subscriber's topic
DEDUP = ("validate", "e2e")  # rows with a dedup window (its changelog topic)
ENTITY = "exam.registration"
FILL_SEED = 2026
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Event:
    """One ingest record of the bench's input, and whether the hub accepts it (the simulator knows)."""

    event_id: str
    key: bytes
    value: bytes
    valid: bool


def make_events(count: int, bad_ratio: float, source: str, seed: int | None) -> list[Event]:
    """`count` realistic exam registrations of `source` as JSON ingest records, `bad_ratio` of them invalid."""
    simulator = ExamRegistrationSimulator(seed=seed, source=source, bad_ratio=bad_ratio)
    events = []
    for doc in simulator.envelopes(count):
        events.append(Event(str(doc.get("event_id")), str(doc.get("key", "")).encode(),
                            json.dumps(doc, ensure_ascii=False).encode(), simulator.last_bad_kind is None))
    return events


def canonical_records(events: Iterable[Event], source: str, catalogue: Catalogue, schema_ids: dict[str, int],
                      council_code: str = "03") -> list[tuple[Event, bytes, list[tuple[str, bytes]]]]:
    """(event, value, headers) of each valid event as the validate stage writes it to its canonical topic."""
    validator = Validator(catalogue, {source}, council_code=council_code)
    now = datetime.now(timezone.utc)
    records = []
    for event in events:
        result = validator.validate(event.value, topic_source=source, now=now, kafka_key=event.key)
        if isinstance(result, Valid) and result.record is not None:
            value = result.entity.encode(schema_ids[result.entity.entity], result.record)
            records.append((event, value, result.envelope.headers()))
    return records


def bench_subscriptions(config: HubConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """hub.yaml's subscriptions with every HTTP delivery turned into Kafka delivery (the bench runs no web
    server for them), and the ids of the subscribers so turned."""
    subscriptions, turned = [], []
    for item in config.subscriptions:
        item = copy.deepcopy(item)
        delivery = item.get("delivery") if isinstance(item, dict) else None
        if isinstance(delivery, dict) and delivery.get("kind") == "http":
            item["delivery"] = {"kind": "kafka"}
            turned.append(str(item.get("id")))
        subscriptions.append(item)
    return subscriptions, turned


def master_key(config: HubConfig, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(variable, value) of the routing master key: the configured one, else a throwaway key for the bench."""
    environ = os.environ if environ is None else environ
    name = config.routing.key_env
    return name, environ.get(name) or secrets.token_hex(32)


def bench_policies(config: HubConfig, catalogue: Catalogue, key: bytes) -> list[SubscriptionPolicy]:
    subscriptions, _ = bench_subscriptions(config)
    if not subscriptions:
        raise ConfigError("the route rows need subscriptions: the config has none (use the project's hub.yaml)")
    return load_subscriptions(subscriptions, catalogue, key)


def measured_subscriber(policies: list[SubscriptionPolicy]) -> SubscriptionPolicy:
    """The subscriber whose topic the latency of the routed rows is measured on: moet-sync when subscribed."""
    candidates = [p for p in policies if ENTITY in p.entities]
    if not candidates:
        raise ConfigError(f"no subscription takes {ENTITY}: the route rows would route nothing")
    return next((p for p in candidates if p.config.id == "moet-sync"), candidates[0])


def output_topic(row: str, prefix: str, policies: list[SubscriptionPolicy] | None) -> str:
    """Where a row's accepted events of the measured entity end up (the latency is measured there)."""
    if row in ROUTED:
        return prefix + measured_subscriber(policies or []).topic(ENTITY)
    return prefix + canonical_topic(ENTITY)


def changelog(prefix: str) -> str:
    return f"{prefix}dedup-changelog"


@dataclass
class TopicPlan:
    """Topics to create: name → (partitions, topic configs)."""

    config: HubConfig
    topics: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)

    def add(self, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
        if name not in self.topics:
            self.topics[name] = (partitions, configs or {})

    def row(self, row: str, *, source: str, prefix: str, catalogue: Catalogue,
            policies: list[SubscriptionPolicy] | None) -> TopicPlan:
        """Every topic a row reads or writes. Topics that carry the bench's data get the configured partition
        counts; the other outputs (entities the input has none of) get one partition; a route stage's inputs
        all get the canonical count (it requires equal counts)."""
        ingest, canonical = self.config.kafka.ingest_partitions, self.config.kafka.canonical_partitions
        routed = row in ROUTED
        if row != "route":
            self.add(ingest_topic(source), ingest)
        if row == "plain":
            self.add(prefix + canonical_topic(ENTITY), canonical)
            return self
        if row != "route":
            self.add(prefix + dlq_topic(source), ingest)
        for entity in catalogue.entities.values():
            self.add(prefix + entity.topic, canonical if routed or entity.entity == ENTITY else 1)
        if row in DEDUP and self.config.worker.dedup_window_s:
            self.add(changelog(prefix), ingest, changelog_configs(self.config.worker.dedup_window_s))
        if routed:
            for policy in policies or []:
                for entity_name in sorted(policy.entities):
                    self.add(prefix + policy.topic(entity_name), canonical if entity_name == ENTITY else 1)
            self.add(prefix + AUDIT_TOPIC, canonical)
            self.add(prefix + ROUTE_DLQ_TOPIC, canonical)
        return self

    async def create(self, kafka: KafkaClients) -> None:
        by_configs: dict[str, list[tuple[str, int]]] = {}
        configs_of: dict[str, dict[str, str]] = {}
        for name, (partitions, configs) in self.topics.items():
            tag = json.dumps(configs, sort_keys=True)
            by_configs.setdefault(tag, []).append((name, partitions))
            configs_of[tag] = configs
        for tag, topics in by_configs.items():
            await ensure_topics(kafka, topics, self.config.kafka.replication_factor, configs=configs_of[tag] or None)


async def delete_topics(kafka: KafkaClients, marker: str) -> list[str]:
    """Delete every topic whose name holds `marker` (the bench's unique id), then, best effort, every consumer
    group so named (their committed offsets); returns the topics' names."""
    admin = kafka.admin()
    await kafka.start(admin)
    try:
        names = sorted(t for t in await admin.list_topics() if marker in t)
        if names:
            await admin.delete_topics(names)
        try:  # aiokafka's admin has no delete_consumer_groups: the DeleteGroups request to each coordinator
            from aiokafka.protocol.admin import DeleteGroupsRequest

            for group, _ in await admin.list_consumer_groups():
                if marker in group:
                    node = await admin.find_coordinator(group)
                    await admin._send_request_to_node(node, DeleteGroupsRequest([group]))
        except Exception as exc:  # noqa: BLE001 — left alone, they expire with offsets.retention.minutes
            log.debug("deleting the bench's consumer groups: %r", exc)
        return names
    finally:
        await admin.close()


async def register_projections(config: HubConfig, registry: SchemaRegistry,
                               policies: list[SubscriptionPolicy]) -> dict[str, int]:
    """Each subscriber's projected schemas under the subjects the worker uses ("<id>|<entity>" → schema id):
    registered (they are the same schemas the worker registers) or, without auto_register, looked up."""
    ids = {}
    for policy in policies:
        for entity in sorted(policy.entities):
            subject = f"{policy.topic(entity)}-value"
            text = json.dumps(policy.projected_schema(entity), ensure_ascii=False)
            if config.registry.auto_register:
                await registry.set_compatibility(subject, COMPATIBILITY)
                ids[f"{policy.config.id}|{entity}"] = await registry.register(subject, text)
            else:
                ids[f"{policy.config.id}|{entity}"] = await registry.lookup(subject, text)
    return ids


def open_registry(config: HubConfig) -> SchemaRegistry:
    password = config.registry.password.get_secret_value() if config.registry.password else None
    return SchemaRegistry(config.registry.url, username=config.registry.username, password=password,
                          timeout=config.registry.timeout_s)


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process in kB (empty where there is no /proc)."""
    found = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    found[name] = int(rest.split()[0])
    except OSError:
        pass
    return found

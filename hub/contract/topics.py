"""Every topic name of the flow: part of the public contract (DATA_DICTIONARY.md, docs/architecture.md)."""

from __future__ import annotations

INGEST_PREFIX = "ingest."
CANONICAL_PREFIX = "edu."
SUBSCRIBER_PREFIX = "sub."
DLQ_PREFIX = "hub.dlq."
# Dead letters of HTTP subscribers: hub.dlq.sub.<id>.
SUBSCRIBER_DLQ_PREFIX = DLQ_PREFIX + "sub."
# Records the route stage or HTTP delivery cannot decode, project or encode (headers as in a source's DLQ).
# The source id "route" is reserved (hub/core/config.py) so that no source's DLQ is ever this topic.
ROUTE_DLQ_TOPIC = DLQ_PREFIX + "route"
# Compacted: one record per dead letter ever replayed, so a second replay skips it.
REPLAYS_TOPIC = DLQ_PREFIX + "replays"
# Who received what, when (keys and values: pseudonymous references only).
AUDIT_TOPIC = "hub.audit"
# Compacted: the connectors' source offsets (the default of connect.offsets_topic in hub.yaml).
CONNECT_OFFSETS_TOPIC = "hub.connect.offsets"


def ingest_topic(source: str) -> str:
    return f"{INGEST_PREFIX}{source}"


def source_of_ingest_topic(topic: str) -> str:
    return topic.removeprefix(INGEST_PREFIX)


def canonical_topic(entity: str) -> str:
    return f"{CANONICAL_PREFIX}{entity}"


def subscriber_topic(subscriber: str, entity: str) -> str:
    """Where a Kafka subscriber reads an entity: sub.<id>.<domain>.<entity>."""
    return f"{SUBSCRIBER_PREFIX}{subscriber}.{entity}"


def dlq_topic(source: str) -> str:
    return f"{DLQ_PREFIX}{source}"


def subscriber_dlq_topic(subscriber: str) -> str:
    """Dead letters of an HTTP subscriber (ids have no dots, so this never names a source's DLQ)."""
    return f"{SUBSCRIBER_DLQ_PREFIX}{subscriber}"


def changelog_topic(group_id: str) -> str:
    """The dedup window's changelog of a worker group."""
    return f"{group_id}-dedup-changelog"

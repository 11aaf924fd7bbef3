"""Kafka administration: create the topics a stage needs, list a topic's partitions, probe the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from hub.kafka.clients import KafkaClients

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(kafka: KafkaClients, topics: Iterable[tuple[str, int]], replication_factor: int,
                        configs: dict[str, str] | None = None) -> list[str]:
    """Create the (name, partitions) topics that do not exist yet; returns the names created.

    `configs` are topic configs for the new topics, e.g. {"cleanup.policy": "compact"}.
    """
    admin = kafka.admin()
    await kafka.start(admin)
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, partitions, replication_factor, topic_configs=configs or {})
                  for name, partitions in topics if name not in existing]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        created = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:  # another worker won the race: fine
                message = rest[0] if rest else ""
                raise RuntimeError(f"could not create topic {name}: error {code} {message}")
        await _wait_for_leaders(admin, [t.name for t in wanted])
        log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str], bound_s: float = 30.0) -> None:
    """Wait until every partition of new topics has a leader. A consumer that subscribes earlier
    can be assigned only the partitions it saw, and not notice the rest until its next metadata
    refresh, minutes later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while True:
        described = await admin.describe_topics(topics)
        if all(t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 and p["error_code"] == 0
                                                                 for p in t["partitions"]) for t in described):
            return
        if loop.time() > deadline:
            raise RuntimeError(f"new topics have partitions without a leader after {bound_s:.0f} s: {topics}")
        await asyncio.sleep(0.2)


async def partitions_of(kafka: KafkaClients, topic: str) -> list[int]:
    """The partition numbers of a topic; LookupError when it does not exist."""
    admin = kafka.admin()
    await kafka.start(admin)
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0]["error_code"] != 0:
        # 29 TOPIC_AUTHORIZATION_FAILED: a broker with ACLs tells a principal that may not describe a
        # topic no more than that (and may answer 3 UNKNOWN_TOPIC_OR_PARTITION to hide that it exists).
        code = described[0]["error_code"] if described else 3
        if code == 29 or kafka.sasl:
            raise LookupError(f"topic {topic} does not exist, or {kafka.describe()} may not describe it")
        raise LookupError(f"topic {topic} does not exist")
    return sorted(p["partition"] for p in described[0]["partitions"])


async def broker_reachable(client: Any, timeout_s: float = 3.0) -> bool:
    """True when a Kafka client of ours gets a metadata answer from the cluster in time."""
    try:
        await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
    except (KafkaError, OSError, asyncio.TimeoutError):
        return False
    return True

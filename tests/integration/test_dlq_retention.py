"""DLQ topics hold original records, personal data included: the hub creates them with a bounded retention."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

pytestmark = pytest.mark.integration


async def _retention_ms(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})])
    finally:
        await admin.close()
    [resource] = response.resources
    entries = {entry[0]: entry[1] for entry in resource[4]}
    return entries["retention.ms"]


def test_a_source_dlq_is_created_with_thirty_days_of_retention(local_stack, start_worker, unique_source):
    start_worker([unique_source])
    assert asyncio.run(_retention_ms(local_stack.bootstrap_servers, f"hub.dlq.{unique_source}")) == str(30 * 86_400_000)

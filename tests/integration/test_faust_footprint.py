"""Faust serves the worker's web endpoints and services only: on the real broker it leaves no group or topic."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from hub.runtime.worker import APP_ID

pytestmark = pytest.mark.integration


async def _groups_and_topics(bootstrap: str) -> tuple[set[str], set[str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        groups = {g[0] for g in await admin.list_consumer_groups()}
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    return groups, topics


def test_a_running_worker_has_no_faust_group_and_no_leader_topic(local_stack, start_worker, unique_source):
    start_worker([unique_source])  # ready: its validate stage holds its partitions
    groups, topics = asyncio.run(_groups_and_topics(local_stack.bootstrap_servers))
    assert f"{APP_ID}-validate" in groups  # the stage's own group: the check can see groups
    assert APP_ID not in groups, "Faust's own consumer group (its leader assignor) should not run"
    assert not [t for t in topics if "__assignor" in t], "Faust's leader-election topic should not exist"

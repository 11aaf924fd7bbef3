"""The connector runtime on the real broker: publish, store offsets, resume, retry, REST operations."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import httpx
import pytest

from connectors.base import ConnectorConfig, SourceConnector, SourceRecord, event_id_for, make_envelope
from connectors.rest import serve
from connectors.runtime import ConnectService
from hub.core.config import HubConfig
from tests.conftest import CONNECT_AUTH, CONNECT_TOKEN
from tests.kafka_helpers import read_to_end

pytestmark = pytest.mark.integration


class Numbers(SourceConnector):
    """A source of `limit` numbered classes; fails once at `fail_at` if set."""

    kind = "numbers"
    config_model = ConnectorConfig
    limit = 25
    fail_at: int | None = None

    async def start(self, offset):
        self.next = (offset or {}).get("n", 0)
        self.started_from = offset

    async def poll(self):
        if self.next >= self.limit:
            return []
        if self.fail_at is not None and self.next >= self.fail_at:
            self.fail_at = None
            raise ConnectionError("source database went away")
        records = []
        for n in range(self.next, min(self.next + 10, self.limit)):
            source = self.config.source
            envelope = make_envelope(source=source, entity="school.class", op="c", key=f"C-{n}",
                                     occurred_at=datetime.now(timezone.utc), data={"n": n},
                                     event_id=event_id_for(source, n))
            records.append(SourceRecord(envelope, {"n": n + 1}))
        self.next = records[-1].offset["n"]
        return records


def hub_config(local_stack, source: str) -> HubConfig:
    return HubConfig.model_validate({
        "kafka": {"bootstrap_servers": local_stack.bootstrap_servers, "ingest_partitions": 3},
        "sources": [{"id": source}],
        "connect": {"port": 28083, "offsets_topic": f"it.connect.offsets.{source}"},
    })


def connector(source: str, **attrs) -> Numbers:
    instance = Numbers(ConnectorConfig(name=f"numbers-{source}", kind="numbers", source=source,
                                       poll_interval_s=0.05))
    for key, value in attrs.items():
        setattr(instance, key, value)
    return instance


async def run_until(service: ConnectService, name: str, published: int, bound_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while service.get(name).status.published < published and loop.time() < deadline:
        await asyncio.sleep(0.05)


def test_publishes_stores_offset_and_resumes_without_repeats(local_stack, unique_source):
    config = hub_config(local_stack, unique_source)
    name = f"numbers-{unique_source}"

    async def first_run():
        service = ConnectService(config, connectors=[connector(unique_source)])
        await service.start()
        await run_until(service, name, 25)
        status = service.get(name).status
        await service.stop()
        return status

    status = asyncio.run(first_run())
    assert status.published == 25 and status.offset == {"n": 25} and status.last_error is None

    async def second_run():
        again = connector(unique_source)
        service = ConnectService(config, connectors=[again])
        await service.start()
        await asyncio.sleep(0.5)
        await service.stop()
        return again.started_from, service.get(name).status.published

    started_from, published = asyncio.run(second_run())
    assert started_from == {"n": 25} and published == 0
    values = [json.loads(r.value) for r in read_to_end(local_stack.bootstrap_servers, f"ingest.{unique_source}")]
    assert sorted(v["data"]["n"] for v in values) == list(range(25))  # each exactly once
    by_key = {v["key"]: v for v in values}
    assert by_key["C-3"]["event_id"] == event_id_for(unique_source, 3)


def test_a_failing_source_is_retried_and_the_error_reported(local_stack, unique_source):
    config = hub_config(local_stack, unique_source)
    name = f"numbers-{unique_source}"

    async def go():
        service = ConnectService(config, connectors=[connector(unique_source, fail_at=10)])
        await service.start()
        await run_until(service, name, 25, bound_s=60)
        status = service.get(name).status
        await service.stop()
        return status, service.metrics

    status, metrics = asyncio.run(go())
    assert status.published == 25
    assert status.last_error == "ConnectionError: source database went away"
    assert metrics.connector_errors.labels(name, unique_source)._value.get() == 1
    values = [json.loads(r.value) for r in read_to_end(local_stack.bootstrap_servers, f"ingest.{unique_source}")]
    assert sorted(v["data"]["n"] for v in values) == list(range(25))


def test_rest_api_pause_resume_stop_and_offsets(local_stack, unique_source):
    config = hub_config(local_stack, unique_source)
    name = f"numbers-{unique_source}"
    base = "http://127.0.0.1:28083"

    async def go():
        service = ConnectService(config, connectors=[connector(unique_source, limit=10)])
        await service.start()
        runner = await serve(service, "127.0.0.1", 28083, token=CONNECT_TOKEN.encode())
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10, headers=CONNECT_AUTH) as client:
                await run_until(service, name, 10)
                assert (await client.get("/connectors")).json() == [name]
                status = (await client.get(f"/connectors/{name}/status")).json()
                assert status["state"] == "RUNNING" and status["offset"] == {"n": 10}
                assert (await client.put(f"/connectors/{name}/pause")).json()["state"] == "PAUSED"
                assert (await client.put(f"/connectors/{name}/resume")).json()["state"] == "RUNNING"
                assert (await client.delete(f"/connectors/{name}/offsets")).status_code == 409  # still running
                assert (await client.get(f"/connectors/{name}/offsets")).json()["offset"] == {"n": 10}
                assert (await client.put(f"/connectors/{name}/stop")).json()["state"] == "STOPPED"
                changed = await client.patch(f"/connectors/{name}/offsets", json={"offset": {"n": 7}})
                assert changed.status_code == 200
                assert (await client.get(f"/connectors/{name}/offsets")).json()["offset"] == {"n": 7}
                resumed = (await client.put(f"/connectors/{name}/resume")).json()
                assert resumed["state"] == "RUNNING" and resumed["offset"] == {"n": 7}
                assert (await client.get("/connectors/nope/status")).status_code == 404
                metrics = (await client.get("/metrics")).text
                assert f'eduhub_connector_records_published_total{{connector="{name}",source="{unique_source}"}}' in metrics
        finally:
            await runner.cleanup()
            await service.stop()

    asyncio.run(go())


def test_cli_operates_connectors_through_the_rest_api(local_stack, unique_source, tmp_path):
    import os
    import sys

    import yaml

    config = hub_config(local_stack, unique_source)
    name = f"numbers-{unique_source}"
    config_path = tmp_path / "hub.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    async def cli(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "connectors", *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env={**os.environ, "EDUHUB_CONFIG": str(config_path)})
        out, _ = await process.communicate()
        return process.returncode, out.decode()

    async def go():
        service = ConnectService(config, connectors=[connector(unique_source, limit=5)])
        await service.start()
        runner = await serve(service, "127.0.0.1", 28083, token=CONNECT_TOKEN.encode())
        try:
            await run_until(service, name, 5)
            code, out = await cli("list")
            assert code == 0 and name in out and "RUNNING" in out
            assert (await cli("pause", name)) == (0, "PAUSED\n")
            assert (await cli("resume", name)) == (0, "RUNNING\n")
            code, out = await cli("status", name)
            assert code == 0 and json.loads(out)["offset"] == {"n": 5}
            assert (await cli("offsets", name, "--reset"))[0] == 1  # refused while running
            assert (await cli("stop", name)) == (0, "STOPPED\n")
            code, out = await cli("offsets", name, "--reset")
            assert code == 0 and json.loads(out)["offset"] is None
            assert (await cli("restart", name)) == (0, "RUNNING\n")
            code, out = await cli("status", "nope")
            assert code == 1 and "no connector named 'nope'" in out
        finally:
            await runner.cleanup()
            await service.stop()

    asyncio.run(go())

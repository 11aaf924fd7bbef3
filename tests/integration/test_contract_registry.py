"""The data contract against the real registry: every entity round-trips, the worker routes all of
them, and `eduhub schemas check` refuses what the registry would refuse."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import avro.io
import avro.schema
import httpx
import pytest

from hub.contract.registry import SchemaRegistry
from hub.contract.schemas import Catalogue, to_json
from hub.stages.validate import Valid, Validator
from tests.kafka_helpers import encode, header, produce_raw, read_to_end, wait_until
from tests.unit.test_contract import examples

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = Catalogue.load()


def stock_decode(registry_url: str, value: bytes) -> dict:
    schema_id = int.from_bytes(value[1:5], "big")
    text = httpx.get(f"{registry_url}/schemas/ids/{schema_id}", timeout=10).json()["schema"]
    return avro.io.DatumReader(avro.schema.parse(text)).read(avro.io.BinaryDecoder(io.BytesIO(value[5:])))


@pytest.mark.parametrize("envelope", examples(), ids=lambda e: e["key"])
def test_every_entity_round_trips_through_the_registry(local_stack, envelope):
    result = Validator(CATALOGUE).validate(json.dumps(envelope, ensure_ascii=False).encode())
    assert isinstance(result, Valid)
    entity = result.entity

    async def register() -> int:
        async with SchemaRegistry(local_stack.registry_url) as registry:
            await registry.set_compatibility(entity.subject)
            return await registry.register(entity.subject, entity.canonical_text)

    schema_id = asyncio.run(register())
    value = entity.encode(schema_id, result.record)
    decoded = stock_decode(local_stack.registry_url, value)
    assert to_json(decoded) == to_json(result.record)
    registered = json.loads(httpx.get(f"{local_stack.registry_url}/schemas/ids/{schema_id}", timeout=10).json()["schema"])
    pii = {f["name"] for f in registered["fields"] if f.get("pii")}
    assert pii == {f["name"] for f in entity.schema["fields"] if f.get("pii")}  # the attribute survives


def test_the_worker_routes_every_entity_to_its_topic(local_stack, start_worker, unique_source):
    start_worker([unique_source])
    sent = []
    for envelope in examples():
        envelope = copy.deepcopy(envelope)
        envelope["source"], envelope["event_id"] = unique_source, str(uuid.uuid4())
        sent.append(envelope)
    produce_raw(local_stack.bootstrap_servers, f"ingest.{unique_source}",
                [(e["key"].encode(), encode(e)) for e in sent])

    def arrived() -> dict[str, str]:
        found = {}
        for topic in {CATALOGUE[e["entity"]].topic for e in sent}:
            for record in read_to_end(local_stack.bootstrap_servers, topic):
                if header(record, "eduhub.source") == unique_source:
                    found[header(record, "eduhub.event_id")] = topic
        return found

    wait_until(lambda: len(arrived()) == len(sent), bound_s=60, interval_s=1)
    assert arrived() == {e["event_id"]: CATALOGUE[e["entity"]].topic for e in sent}
    assert read_to_end(local_stack.bootstrap_servers, f"hub.dlq.{unique_source}") == []


def test_schemas_check_against_the_registry_names_the_breaking_field(local_stack, tmp_path):
    env = {**os.environ, "EDUHUB_REGISTRY_URL": local_stack.registry_url, "EDUHUB_CONFIG": ""}
    run = lambda *args, **kw: subprocess.run([sys.executable, "-m", "hub", "schemas", *args], cwd=tmp_path,
                                             capture_output=True, text=True, **kw)
    published = run("publish", env=env)
    assert published.returncode == 0, published.stderr
    assert "edu.exam.result-value: id" in published.stdout
    assert run("check", "--no-git", env=env).returncode == 0

    copy_dir = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", copy_dir)
    path = copy_dir / "exam" / "result.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "room", "type": "string", "doc": "exam room"})
    path.write_text(json.dumps(schema))
    done = run("check", "--no-git", env={**env, "EDUHUB_SCHEMA_DIR": str(copy_dir)})
    assert done.returncode == 1
    assert "INCOMPATIBLE edu.exam.result-value: cannot read data written with registry version" in done.stderr
    assert "field room" in done.stderr

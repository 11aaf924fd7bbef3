"""Backup of the schema registry (docs/operations.md, "The registry's schemas"), on the real Apicurio 3.0.9.

Every Kafka record carries its writer schema's id (Confluent wire format), so a restore must keep the ids.
Exported from the suite's registry with `GET /apis/registry/v3/admin/export`, the zip must hold every
subject of the hub with its versions' ids and its compatibility rule; imported into a second, empty
Apicurio with `POST /apis/registry/v3/admin/import`, every schema must answer under its old id.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile

import httpx
import pytest

from hub.contract.evolution import publish
from hub.contract.registry import COMPATIBILITY, SchemaRegistry
from hub.contract.schemas import Catalogue
from hub.demo.local import resolve_registry
from tests.apicurio import Registry, java_or_unavailable
from tests.conftest import TEST_PORTS

pytestmark = pytest.mark.integration

# A second registry of this test only: in-memory storage (Apicurio's default), a port of its own.
RESTORE_PORT = TEST_PORTS["registry_port"] + 7
CCOMPAT = "application/vnd.schemaregistry.v1+json"


def admin_url(ccompat_url: str) -> str:
    """The v3 admin API of the registry whose ccompat API is `ccompat_url` (…/apis/ccompat/v7)."""
    return ccompat_url.split("/apis/")[0] + "/apis/registry/v3/admin"


@pytest.fixture(scope="module")
def published(local_stack) -> dict[str, int]:
    """The hub's schemas registered in the suite's registry, as `eduhub schemas publish` does: subject → id."""
    async def run() -> dict[str, int]:
        async with SchemaRegistry(local_stack.registry_url) as registry:
            return await publish(Catalogue.load(), registry)
    return asyncio.run(run())


@pytest.fixture(scope="module")
def export_bytes(local_stack, published) -> bytes:
    response = httpx.get(admin_url(local_stack.registry_url) + "/export", timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/zip")
    return response.content


@pytest.fixture(scope="module")
def export(export_bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(export_bytes))


@pytest.fixture(scope="module")
def empty_registry(local_stack, tmp_path_factory) -> str:
    """A second Apicurio 3.0.9 (the same jar as the local stack's), empty, stopped by its pid at the end."""
    jar = resolve_registry(local_stack.cache_dir, echo=lambda line: None)
    registry = Registry(java_or_unavailable(), jar, RESTORE_PORT,
                        tmp_path_factory.mktemp("restore-registry") / "registry.log",
                        jvm_args=(f"-Dquarkus.http.port={RESTORE_PORT}",))
    try:
        registry.start("/apis/ccompat/v7/subjects")
        yield f"http://127.0.0.1:{RESTORE_PORT}/apis/ccompat/v7"
    finally:
        registry.stop()


def entry(archive: zipfile.ZipFile, name: str) -> dict:
    return json.loads(archive.read(name))


def test_the_export_holds_every_subject_of_the_hub_with_its_ids_and_rule(export, published):
    names = export.namelist()
    manifests = [n for n in names if n.startswith("manifest-") and n.endswith(".Manifest.json")]
    assert len(manifests) == 1, names[:10]
    assert entry(export, manifests[0])["systemVersion"] == "3.0.9"
    assert set(published) == {e.subject for e in Catalogue.load().entities.values()}
    for subject, schema_id in published.items():
        base = f"groups/default/artifacts/{subject}/"
        versions = [entry(export, n) for n in names if n.startswith(base + "versions/")]
        assert versions, f"{subject} is not in the export"
        # the id every record of the subject carries is one of the exported versions' ids
        assert any(schema_id in (v["contentId"], v["globalId"]) for v in versions), (subject, schema_id, versions)
        rule = entry(export, base + "rules/COMPATIBILITY.ArtifactRule.json")
        assert rule["configuration"] == COMPATIBILITY
        content_ids = {v["contentId"] for v in versions}
        contents = [entry(export, n) for n in names if n.startswith("content/") and n.endswith(".Content.json")]
        assert content_ids <= {c["contentId"] for c in contents}


def test_an_import_into_an_empty_registry_keeps_every_id(local_stack, export_bytes, published, empty_registry):
    body = export_bytes  # the zip exactly as exported
    target = admin_url(empty_registry) + "/import"
    response = httpx.post(target, content=body, headers={"Content-Type": "application/zip"}, timeout=60)
    assert response.status_code in (200, 204), response.text

    source = httpx.Client(base_url=local_stack.registry_url, headers={"Accept": CCOMPAT}, timeout=10)
    restored = httpx.Client(base_url=empty_registry, headers={"Accept": CCOMPAT}, timeout=10)
    with source, restored:
        assert set(published) <= set(restored.get("/subjects").json())
        for subject, schema_id in published.items():
            original = source.get(f"/schemas/ids/{schema_id}").json()["schema"]
            answer = restored.get(f"/schemas/ids/{schema_id}")
            assert answer.status_code == 200, (subject, schema_id, answer.text)
            assert json.loads(answer.json()["schema"]) == json.loads(original), subject
            latest = restored.get(f"/subjects/{subject}/versions/latest").json()
            assert latest["id"] == schema_id
            assert restored.get(f"/config/{subject}").json()["compatibilityLevel"] == COMPATIBILITY

        # A schema registered after the restore gets a new id, above every restored one.
        probe = {"schema": json.dumps({"type": "record", "name": "RestoreProbe", "fields": [
            {"name": "a", "type": "string"}]})}
        answer = restored.post(f"/subjects/restore-probe-{os.getpid()}-value/versions", json=probe,
                               headers={"Content-Type": CCOMPAT})
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] > max(published.values())

    # The import refuses a registry that already holds data: restore into an empty one.
    again = httpx.post(target, content=body, headers={"Content-Type": "application/zip"}, timeout=60)
    assert again.status_code == 409, again.text
    assert "not empty" in again.text


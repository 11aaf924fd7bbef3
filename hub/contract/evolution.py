"""Schema evolution: the working tree's schemas against the registry and git (BACKWARD_TRANSITIVE)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from hub.contract.registry import COMPATIBILITY, RegistryError, SchemaRegistry
from hub.contract.schemas import Catalogue


@dataclass(frozen=True)
class Incompatibility:
    """The new schema cannot read data written with an older one: which, where and why."""

    subject: str
    against: str  # "registry version 3" or "git 1a2b3c4"
    fields: tuple[str, ...]
    kinds: tuple[str, ...]
    details: tuple[str, ...]

    def __str__(self) -> str:
        where = ", ".join(self.fields) or "(the record itself)"
        return (f"{self.subject}: cannot read data written with {self.against}: field {where}: "
                f"{', '.join(self.kinds)} ({'; '.join(self.details)})")


def _field_path(schema: Any, location: str) -> str | None:
    """The dotted field name a checker location such as '/fields/6/type/symbols' points at."""
    names: list[str] = []
    node = schema
    parts = [p for p in location.split("/") if p]
    for i, part in enumerate(parts):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            break
        if i > 0 and parts[i - 1] == "fields" and isinstance(node, dict) and "name" in node:
            names.append(node["name"])
    return ".".join(names) or None


def compare(reader: dict, writer: dict, *, subject: str, against: str) -> Incompatibility | None:
    """None when `reader` (the new schema) can read everything written with `writer`."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer)))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return None
    fields = sorted({f for f in (_field_path(reader, loc) for loc in result.locations) if f})
    return Incompatibility(subject, against, tuple(fields), tuple(sorted(i.value for i in result.incompatibilities)),
                           tuple(sorted(str(m) for m in result.messages)))


def git_versions(path: Path) -> list[tuple[str, dict]]:
    """Every committed version of a schema file, newest first, as (short commit, schema)."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True, text=True)
    if root.returncode != 0:
        return []
    relative = path.resolve().relative_to(Path(root.stdout.strip()))
    log = subprocess.run(["git", "log", "--format=%h", "--", str(relative)], cwd=root.stdout.strip(),
                         capture_output=True, text=True, check=True)
    versions = []
    for commit in log.stdout.split():
        shown = subprocess.run(["git", "show", f"{commit}:{relative}"], cwd=root.stdout.strip(),
                               capture_output=True, text=True)
        if shown.returncode == 0:  # absent in a commit that deleted it
            versions.append((commit, json.loads(shown.stdout)))
    return versions


def check_against_git(catalogue: Catalogue) -> list[Incompatibility]:
    """The working tree against every committed version of each schema (transitively, like the registry)."""
    found = []
    for entity in catalogue.entities.values():
        for commit, old in git_versions(entity.path):
            problem = compare(entity.schema, old, subject=entity.subject, against=f"git {commit}")
            if problem:
                found.append(problem)
    return found


async def registry_versions(registry: SchemaRegistry, subject: str) -> list[tuple[int, dict]]:
    try:
        versions = await registry.versions(subject)
    except RegistryError as exc:
        if exc.status == 404:
            return []  # a subject not registered yet: nothing to be compatible with
        raise
    return [(v, json.loads(await registry.schema_of_version(subject, v))) for v in versions]


async def check_against_registry(catalogue: Catalogue, registry: SchemaRegistry) -> list[Incompatibility]:
    found = []
    for entity in catalogue.entities.values():
        for version, old in await registry_versions(registry, entity.subject):
            problem = compare(entity.schema, old, subject=entity.subject, against=f"registry version {version}")
            if problem:
                found.append(problem)
    return found


async def publish(catalogue: Catalogue, registry: SchemaRegistry) -> dict[str, int]:
    """Register every schema (a new version where it changed) with BACKWARD_TRANSITIVE set first."""
    ids = {}
    for entity in catalogue.entities.values():
        await registry.set_compatibility(entity.subject, COMPATIBILITY)
        ids[entity.subject] = await registry.register(entity.subject, entity.canonical_text)
    return ids

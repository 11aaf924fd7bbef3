"""Schema evolution: the working tree's schemas against the registry and git (BACKWARD_TRANSITIVE, PII tags).

Avro's compatibility ignores custom attributes, so a version that removes a `"pii": true` or
`"eduhub.identifier": true` tag (hub.contract.pii) passes it, and the field would then reach
every subscriber in clear. Both checks therefore also refuse a field (at any depth) that carries
such a tag in an earlier version and not in the new one, unless `schemas/pii-changes.yaml`
acknowledges that removal: an entry with `entity`, `field` (the dotted path), `tag` (`pii` or
`eduhub.identifier`) and a non-empty `reason`. The file is committed and reviewed like a schema.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
import yaml
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from hub.contract.pii import TAGS, field_tags
from hub.contract.registry import COMPATIBILITY, RegistryError, SchemaRegistry
from hub.contract.schemas import Catalogue

ACKNOWLEDGEMENTS = "pii-changes.yaml"  # in the schema folder, next to the domains


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


@dataclass(frozen=True)
class TagRemoval:
    """A field lost its `pii` or `eduhub.identifier` tag and no acknowledgement covers it."""

    subject: str
    entity: str
    against: str
    field: str
    tag: str

    def __str__(self) -> str:
        return (f"{self.subject}: field {self.field} lost its \"{self.tag}\": true tag ({self.against} has it), so "
                f"its values would reach every subscriber in clear: put the tag back, or acknowledge the removal "
                f"in schemas/{ACKNOWLEDGEMENTS} with an entry {{entity: {self.entity}, field: {self.field}, "
                f"tag: {self.tag}, reason: <why it no longer identifies a person>}}")


@dataclass(frozen=True)
class AcknowledgementError:
    """schemas/pii-changes.yaml cannot be read as a list of acknowledgements."""

    message: str

    def __str__(self) -> str:
        return f"schemas/{ACKNOWLEDGEMENTS}: {self.message}"


def load_acknowledgements(root: Path) -> tuple[set[tuple[str, str, str]], list[AcknowledgementError]]:
    """The acknowledged tag removals as (entity, field, tag), and what is wrong with the file."""
    path = root / ACKNOWLEDGEMENTS
    if not path.exists():
        return set(), []
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        return set(), [AcknowledgementError(f"not YAML: {exc}")]
    entries = loaded.get("acknowledged") if isinstance(loaded, dict) else None
    if not isinstance(entries, list):
        return set(), [AcknowledgementError("expected a mapping with the list `acknowledged`")]
    found, errors = set(), []
    for i, entry in enumerate(entries):
        keys = {"entity", "field", "tag", "reason"}
        if not isinstance(entry, dict) or set(entry) != keys:
            errors.append(AcknowledgementError(f"acknowledged[{i}]: expected exactly the keys "
                                               f"entity, field, tag and reason"))
            continue
        if entry["tag"] not in TAGS:
            errors.append(AcknowledgementError(f"acknowledged[{i}].tag: expected one of {', '.join(TAGS)}"))
            continue
        if not isinstance(entry["reason"], str) or not entry["reason"].strip():
            errors.append(AcknowledgementError(f"acknowledged[{i}].reason: say why the field is no longer "
                                               f"personal data"))
            continue
        found.add((str(entry["entity"]), str(entry["field"]), entry["tag"]))
    return found, errors


def tag_removals(new: dict, old: dict, *, entity: str, subject: str, against: str,
                 acknowledged: set[tuple[str, str, str]]) -> list[TagRemoval]:
    """Fields (at any depth) tagged in `old` and still present, untagged, in `new`, unless acknowledged."""
    new_tags = field_tags(new)
    return [TagRemoval(subject, entity, against, path, tag)
            for path, tags in field_tags(old).items() if path in new_tags
            for tag in sorted(tags - new_tags[path]) if (entity, path, tag) not in acknowledged]


def _privacy_problems(catalogue: Catalogue, versions: dict[str, list[tuple[str, dict]]]) -> list[Any]:
    """Tag removals against each entity's earlier versions (each field named once: the newest version that
    had the tag), and errors in the acknowledgement file."""
    root = next(iter(catalogue.entities.values())).path.parents[1]
    acknowledged, problems = load_acknowledgements(root)
    seen: set[tuple[str, str, str]] = set()
    for entity in catalogue.entities.values():
        for against, old in versions.get(entity.entity, []):
            for removal in tag_removals(entity.schema, old, entity=entity.entity, subject=entity.subject,
                                        against=against, acknowledged=acknowledged):
                if (removal.subject, removal.field, removal.tag) not in seen:
                    seen.add((removal.subject, removal.field, removal.tag))
                    problems.append(removal)
    return problems


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


def check_against_git(catalogue: Catalogue) -> list[Any]:
    """The working tree against every committed version of each schema (transitively, like the registry):
    incompatibilities, then removed PII tags."""
    found: list[Any] = []
    versions: dict[str, list[tuple[str, dict]]] = {}
    for entity in catalogue.entities.values():
        for commit, old in git_versions(entity.path):
            versions.setdefault(entity.entity, []).append((f"git {commit}", old))
            problem = compare(entity.schema, old, subject=entity.subject, against=f"git {commit}")
            if problem:
                found.append(problem)
    return found + _privacy_problems(catalogue, versions)


async def registry_versions(registry: SchemaRegistry, subject: str) -> list[tuple[int, dict]]:
    try:
        versions = await registry.versions(subject)
    except RegistryError as exc:
        if exc.status == 404:
            return []  # a subject not registered yet: nothing to be compatible with
        raise
    return [(v, json.loads(await registry.schema_of_version(subject, v))) for v in versions]


async def check_against_registry(catalogue: Catalogue, registry: SchemaRegistry) -> list[Any]:
    """The working tree against every registered version: incompatibilities, then removed PII tags."""
    found: list[Any] = []
    versions: dict[str, list[tuple[str, dict]]] = {}
    for entity in catalogue.entities.values():
        for version, old in await registry_versions(registry, entity.subject):
            versions.setdefault(entity.entity, []).insert(0, (f"registry version {version}", old))  # newest first
            problem = compare(entity.schema, old, subject=entity.subject, against=f"registry version {version}")
            if problem:
                found.append(problem)
    return found + _privacy_problems(catalogue, versions)


async def publish(catalogue: Catalogue, registry: SchemaRegistry) -> dict[str, int]:
    """Register every schema (a new version where it changed) with BACKWARD_TRANSITIVE set first."""
    ids = {}
    for entity in catalogue.entities.values():
        await registry.set_compatibility(entity.subject, COMPATIBILITY)
        ids[entity.subject] = await registry.register(entity.subject, entity.canonical_text)
    return ids

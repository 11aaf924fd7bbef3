"""A policy applied to one field at every depth: the projected field type and the value's transform.

`FieldPlanner.field` turns a canonical field into the subscriber's field (None when dropped) and a
transform of its value (None when the value is copied as it is). A tagged field (hub.contract.pii)
gets its policy (`policy_of(path, field)`): keep, drop, mask (hub.routing.masking) or pseudonymise
(a string; `["null", "string"]` when the field was nullable). Untagged fields are walked for tagged
fields inside: a record's fields, array items, map values and union branches. A named type that
holds a tagged field is copied where it is referenced, so each place can follow its own policy
(hub.routing.projection.project_schema merges or renames the copies).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from hub.contract.pii import contains_tagged, is_tagged
from hub.routing.masking import mask_transform
from hub.routing.projection import copy_value, split_nullable

Transform = Callable[[Any], Any]
SUFFIX = {"mask": " (masked)", "pseudonymise": " (pseudonymised)"}


def _record_transform(plan: list[tuple[str, Transform | None]]) -> Transform:
    def transform(value: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, inner in plan:
            item = value.get(name)
            out[name] = None if item is None else (copy_value(item) if inner is None else inner(item))
        return out
    return transform


def _union_transform(branches: list[tuple[Any, Transform | None]], named: dict[str, Any]) -> Transform:
    """Applies the transform of the branch a value belongs to (records told apart by their canonical field
    names); `branches` pairs each canonical branch type with its transform."""
    branches = [(named.get(t, t) if isinstance(t, str) else t, tr) for t, tr in branches]
    records = [(frozenset(f["name"] for f in t["fields"]), tr) for t, tr in branches
               if isinstance(t, dict) and t.get("type") in ("record", "error")]
    maps = [tr for t, tr in branches if isinstance(t, dict) and t.get("type") == "map"]
    arrays = [tr for t, tr in branches if isinstance(t, dict) and t.get("type") == "array"]

    def transform(value: Any) -> Any:
        candidates: list[Transform | None] = []
        if isinstance(value, dict):
            candidates = [tr for names, tr in records if names == frozenset(value)] or maps
        elif isinstance(value, list):
            candidates = arrays
        inner = candidates[0] if candidates else None
        return copy_value(value) if inner is None else inner(value)
    return transform


class FieldPlanner:
    """Plans the fields of one entity for one subscriber."""

    def __init__(self, entity: str, named: dict[str, Any], policy_of: Callable[[str, dict[str, Any]], str],
                 pseudonymise: Transform) -> None:
        self.entity = entity
        self.named = named
        self.policy_of = policy_of
        self.pseudonymise = pseudonymise

    def field(self, field: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, Transform | None]:
        """The projected field (None when its policy drops it) and its value transform."""
        policy = self.policy_of(path, field) if is_tagged(field) else "keep"
        if policy == "drop":
            return None, None
        new = copy.deepcopy(field)
        if policy == "keep":
            new["type"], transform = self.type(new["type"], path)  # the copy: schemas are edited in place later
            return new, transform
        if policy == "mask":
            transform = mask_transform(self.entity, new, self.named, path)
        else:  # pseudonymise
            nullable, _ = split_nullable(field["type"])
            new["type"] = ["null", "string"] if nullable else "string"
            new.pop("default", None)
            if nullable:
                new["default"] = None
            transform = self.pseudonymise
        new.pop("eduhub.text", None)
        new["eduhub.pii_policy"] = policy
        new["doc"] = (new.get("doc", "") + SUFFIX[policy]).strip()
        return new, transform

    def type(self, avro_type: Any, path: str) -> tuple[Any, Transform | None]:
        """The projected type and its value transform (None: no tagged field inside, the type as it is)."""
        if isinstance(avro_type, str):
            definition = self.named.get(avro_type)
            if definition is None or not contains_tagged(definition, self.named):
                return avro_type, None
            return self.type(copy.deepcopy(definition), path)
        if isinstance(avro_type, list):
            branches = [self.type(t, path) for t in avro_type]
            if all(tr is None for _, tr in branches):
                return avro_type, None
            return [t for t, _ in branches], _union_transform(
                [(original, tr) for original, (_, tr) in zip(avro_type, branches)], self.named)
        if not isinstance(avro_type, dict):
            return avro_type, None
        kind = avro_type.get("type")
        if kind in ("record", "error"):
            plan: list[tuple[str, Transform | None]] = []
            fields = []
            changed = False
            for sub in avro_type["fields"]:
                new, transform = self.field(sub, f"{path}.{sub['name']}" if path else sub["name"])
                changed = changed or new is None or transform is not None
                if new is not None:
                    plan.append((sub["name"], transform))
                    fields.append(new)
            if not changed:
                return avro_type, None
            return {**avro_type, "fields": fields}, _record_transform(plan)
        if kind == "array":
            items, inner = self.type(avro_type["items"], path)
            if inner is None:
                return avro_type, None
            return {**avro_type, "items": items}, lambda value: [None if v is None else inner(v) for v in value]
        if kind == "map":
            values, inner = self.type(avro_type["values"], path)
            if inner is None:
                return avro_type, None
            return ({**avro_type, "values": values},
                    lambda value: {k: None if v is None else inner(v) for k, v in value.items()})
        if isinstance(kind, (dict, list)):
            inner_type, inner = self.type(kind, path)
            return ({**avro_type, "type": inner_type}, inner) if inner is not None else (avro_type, None)
        return avro_type, None

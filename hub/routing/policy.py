"""SubscriptionPolicy: one subscriber's view of the canonical topics (filter, projection, PII), and loading them.

`SubscriptionPolicy` turns a canonical record (an Avro datum of `edu.<domain>.<entity>`) into
the record that subscriber may receive on `sub.<id>.<entity>`, with its own Avro schema
(`projected_schema`).

Order of work in `SubscriptionPolicy.apply`:

1. entity not subscribed → None;
2. the row filter (hub.routing.filters) runs on the FULL canonical record, before projection
   and masking → None when it rejects the row. A filter naming a field that the entity lacks
   rejects every row of that entity (with `entities: ["*"]`, `address.province_code == "31"`
   delivers students only). A field that exists in NO subscribed entity is a configuration error;
3. projection (`fields`): the listed top-level fields, plus the entity's key fields always;
4. PII policy on every tagged field (hub.contract.pii: `"pii": true` or `"eduhub.identifier": true`,
   at every depth: nested records, array items, map values, union branches): `pii[path]` (the
   field's dotted path, `address` or `guardian.phone`), else `pii_default` (drop). Person-level
   identifiers (`application_id`, `registration_id`, `candidate_number`, `teacher_id`, ...) thus
   follow the subscriber's policy for persons: pseudonymised or dropped where PII is.

A filter may not name a field (or a part of one) that the subscriber's policy drops, pseudonymises
or masks, except the part a mask keeps visible (`address.province_code`): the filter would reveal
what the policy hides. That is a configuration error naming the subscriber, the filter and the field.

PII policies (`keep`, `drop`, `mask`, `pseudonymise`) — choices made here:

- keep: unchanged (the field keeps `"pii": true`).
- drop: the field leaves the projected schema and record.
- mask: by the field's type, see hub.routing.masking.
- pseudonymise: a keyed pseudonym per subscriber, see hub.routing.pseudonyms.

  Masked and pseudonymised fields keep their tags (a pseudonym is still personal data),
  get `"eduhub.pii_policy"` naming the policy, lose `"eduhub.text"`, and their doc ends with
  " (masked)" / " (pseudonymised)".

Key fields: a key field is always projected. When a key field is tagged and its policy is drop
or mask, the policy pseudonymises it instead (masking is not unique, dropping leaves no key),
so `key_of(entity, projected_record)` — the subscriber's Kafka key, built from projected
values only — never carries the clear value and stays stable and unique. For a delete
(tombstone), `key_for_delete` maps the canonical key text to the subscriber's key the same way.

Projected schemas: see hub.routing.projection. `master_key` must hold at least 16 bytes.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from pydantic import ValidationError

from hub.core.config import ConfigError, format_errors
from hub.contract.schemas import Catalogue, EntitySchema
from hub.contract.topics import subscriber_topic
from hub.routing.errors import SubscriptionError
from hub.routing.filters import compile_filter
from hub.contract.pii import tagged_fields
from hub.routing.plan import FieldPlanner
from hub.routing.projection import (
    copy_value,
    named_types,
    path_fields,
    project_schema,
    subscriber_namespace,
)
from hub.routing.pseudonyms import pseudonym, subscriber_key
from hub.routing.subscriptions import SubscriptionConfig

POLICY_DONE = {"drop": "dropped", "pseudonymise": "pseudonymised", "mask": "masked"}


class SubscriptionPolicy:
    """One subscriber's view of the canonical topics: entities, row filter, projection and PII masking."""

    def __init__(self, config: SubscriptionConfig, catalogue: Catalogue, master_key: bytes) -> None:
        self._key = subscriber_key(master_key, config.id)  # first: refuses a short master key
        self.config = config
        self.id = config.id
        self.catalogue = catalogue
        self.namespace = subscriber_namespace(config.id)
        if config.entities == ["*"]:
            names = sorted(catalogue.names)
        else:
            unknown = [e for e in config.entities if e not in catalogue.names]
            if unknown:
                raise SubscriptionError(
                    f"unknown entity {unknown[0]!r}: expected one of {', '.join(sorted(catalogue.names))} or \"*\"",
                    "entities")
            names = list(config.entities)
        self.entities: frozenset[str] = frozenset(names)
        self._named = {e: named_types(catalogue[e]) for e in names}
        self._tagged = {e: tagged_fields(catalogue[e].schema, self._named[e]) for e in names}
        self._check_projection(names)
        self._check_pii(names)
        self.filter = compile_filter(config.filter) if config.filter is not None else None
        self._filter_applies = self._check_filter(names)
        self._plans: dict[str, list[tuple[str, Callable[[Any], Any] | None]]] = {}
        self._whole: set[str] = set()  # entities this subscriber receives exactly as the canonical record
        self._schemas: dict[str, dict[str, Any]] = {}
        self._key_pseudonymised: dict[str, frozenset[str]] = {}
        for entity in names:
            self._build(catalogue[entity])

    # ---- validation

    def _check_projection(self, names: list[str]) -> None:
        for entity, fields in (self.config.fields or {}).items():
            if entity not in self.catalogue.names:
                raise SubscriptionError(f"unknown entity {entity!r}: expected a subscribed entity",
                                        f"fields.{entity}")
            if entity not in self.entities:
                raise SubscriptionError(f"{entity!r} is not among the subscribed entities: expected one of "
                                        f"{', '.join(sorted(self.entities))}", f"fields.{entity}")
            available = [f["name"] for f in self.catalogue[entity].schema["fields"]]
            for name in fields:
                if name not in available:
                    raise SubscriptionError(
                        f"{entity} has no field {name!r}: expected one of {', '.join(available)}", f"fields.{entity}")

    def _check_pii(self, names: list[str]) -> None:
        pii_fields = {path for e in names for path in self._tagged[e]}
        for name in self.config.pii:
            if name not in pii_fields:
                raise SubscriptionError(
                    f"{name!r} is not a PII or identifier field of the subscribed entities: expected one of "
                    f"{', '.join(sorted(pii_fields)) or '(none: these entities carry no PII)'}", f"pii.{name}")

    def _check_filter(self, names: list[str]) -> dict[str, bool]:
        applies = {e: True for e in names}
        if self.filter is None:
            return applies
        for path, pos in self.filter.paths:
            parts = tuple(path.split("."))
            found = False
            for entity in names:
                through = path_fields(self.catalogue[entity].schema, parts, self._named[entity])
                if through is not None:
                    found = True
                    self._check_filter_sees(entity, path, through)
                else:
                    applies[entity] = False
            if not found:
                raise SubscriptionError(
                    f"filter: field {path!r} at position {pos + 1} exists in no subscribed entity "
                    f"({', '.join(names)}): expected a field path such as school_code or address.province_code",
                    "filter")
        return applies

    def _check_filter_sees(self, entity: str, path: str, through: list[dict[str, Any]]) -> None:
        """A filter may only read what the subscriber may see: no field its policy drops, pseudonymises or
        masks (the part a mask keeps, `address.province_code`, excepted)."""
        for depth, field in enumerate(through):
            prefix = ".".join(f["name"] for f in through[:depth + 1])
            policy = self.policy_of(entity, prefix)
            if policy == "keep":
                continue
            rest = [f["name"] for f in through[depth + 1:]]
            if policy == "mask" and rest == ["province_code"]:
                return  # a masked record keeps province_code in clear
            fix = (f"filter on a field this subscriber receives in clear, or set pii.{prefix} to keep"
                   if prefix in self._tagged[entity] else "filter on a field this subscriber receives in clear")
            raise SubscriptionError(
                f"subscriber {self.id!r}: the filter {self.config.filter!r} reads {path!r}, but {entity}.{prefix} "
                f"is {POLICY_DONE[policy]} for this subscriber, so the filter would reveal it: {fix}", "filter")

    # ---- plan and projected schema

    def policy_of(self, entity: str, path: str) -> str:
        """The effective policy of a field (a dotted path at any depth): keep for untagged fields (neither PII
        nor identifier), pseudonymise for key fields whose policy would drop or mask them."""
        schema = self.catalogue[entity]
        if path not in self._tagged[entity]:
            return "keep"
        policy = self.config.pii.get(path, self.config.pii_default)
        if path in schema.key_fields and policy in ("drop", "mask"):
            return "pseudonymise"
        return policy

    def _build(self, schema: EntitySchema) -> None:
        entity = schema.entity
        projection = (self.config.fields or {}).get(entity)
        planner = FieldPlanner(entity, self._named[entity], lambda path, _: self.policy_of(entity, path),
                               self.pseudonymise)
        plan: list[tuple[str, Callable[[Any], Any] | None]] = []
        out_fields: list[dict[str, Any]] = []
        for field in schema.schema["fields"]:
            name = field["name"]
            if projection is not None and name not in projection and name not in schema.key_fields:
                continue
            new, transform = planner.field(field, name)
            if new is None:
                continue
            plan.append((name, transform))
            out_fields.append(new)
        forced = {n for n in schema.key_fields if self.policy_of(entity, n) == "pseudonymise"}
        self._plans[entity] = plan
        if (len(plan) == len(schema.schema["fields"]) and all(t is None for _, t in plan)
                and [f["type"] for f in out_fields] == [f["type"] for f in schema.schema["fields"]]):
            self._whole.add(entity)
        self._schemas[entity] = project_schema(schema, out_fields, self.namespace, self.id, self._named[entity])
        self._key_pseudonymised[entity] = frozenset(forced)

    # ---- public API

    def pseudonymise(self, value: Any) -> str | None:
        """This subscriber's pseudonym of a value (None stays None)."""
        return pseudonym(self._key, value)

    def projected_schema(self, entity: str) -> dict[str, Any]:
        """The Avro schema of this subscriber's `sub.<id>.<entity>` records (a copy)."""
        if entity not in self._schemas:
            raise SubscriptionError(f"{self.id} does not subscribe to {entity!r}", "entities")
        return copy.deepcopy(self._schemas[entity])

    def receives_whole(self, entity: str) -> bool:
        """True when this subscriber's record of `entity` is the canonical one unchanged (every field, in
        clear, same types): its Avro body is then the canonical body, which the route stage passes on
        instead of encoding it again."""
        return entity in self._whole

    def admits(self, entity: str, record: dict[str, Any]) -> bool:
        """The subscriber's filter lets the record through (as `apply` decides)."""
        return self.filter is None or (self._filter_applies[entity] and self.filter(record))

    def apply(self, entity: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """The projected record for this subscriber, or None (not subscribed, or the filter rejects it)."""
        plan = self._plans.get(entity)
        if plan is None:
            return None
        if not self.admits(entity, record):
            return None
        out: dict[str, Any] = {}
        for name, transform in plan:
            value = record.get(name)
            if value is None:
                out[name] = None
            elif transform is None:
                out[name] = copy_value(value)
            else:
                out[name] = transform(value)
        return out

    def key_of(self, entity: str, projected_record: dict[str, Any]) -> str:
        """The subscriber's Kafka key: the entity's key fields of the PROJECTED record joined by '|'."""
        return "|".join(str(projected_record[name]) for name in self.catalogue[entity].key_fields)

    def key_for_delete(self, entity: str, canonical_key: str) -> str:
        """The subscriber's key for a tombstone, from the canonical key text (forced key fields pseudonymised)."""
        key_fields = self.catalogue[entity].key_fields
        parts = canonical_key.split("|", len(key_fields) - 1)
        forced = self._key_pseudonymised.get(entity, frozenset())
        return "|".join(self.pseudonymise(p) if n in forced else p  # type: ignore[misc]
                        for n, p in zip(key_fields, parts))

    def topic(self, entity: str) -> str:
        return subscriber_topic(self.id, entity)

    def __repr__(self) -> str:
        return f"SubscriptionPolicy({self.id!r}, entities={sorted(self.entities)})"


def load_subscriptions(raw: list[dict], catalogue: Catalogue, master_key: bytes) -> list[SubscriptionPolicy]:
    """Validate the `subscriptions` list of hub.yaml; every error is a ConfigError naming its key."""
    if not isinstance(raw, list):
        raise ConfigError("subscriptions: must be a list of subscriber mappings (id, entities, ...)")
    policies: list[SubscriptionPolicy] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"subscriptions.{i}: must be a mapping with id, entities, filter, fields, pii, "
                              "pii_default and delivery")
        try:
            config = SubscriptionConfig.model_validate(item)
        except ValidationError as exc:
            named = f" (subscriber {item['id']!r})" if isinstance(item.get("id"), str) else ""
            raise ConfigError(format_errors(exc, f"subscriptions.{i}{named}", SubscriptionConfig,
                                            prefix=f"subscriptions.{i}.")) from None
        if config.id in seen:
            raise ConfigError(f"subscriptions.{i}.id: subscriber id {config.id!r} is declared twice "
                              f"(also subscriptions.{seen[config.id]}.id) — expected a unique id")
        seen[config.id] = i
        try:
            policies.append(SubscriptionPolicy(config, catalogue, master_key))
        except SubscriptionError as exc:
            where = f"subscriptions.{i}.{exc.key}" if exc.key else f"subscriptions.{i}"
            raise ConfigError(f"{where}: {exc}") from None
    return policies


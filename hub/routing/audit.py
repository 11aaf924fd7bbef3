"""The audit trail of deliveries (topic `hub.audit`) and the question it answers: who received this person's data.

`hub.audit` holds no personal id or entity key in clear, neither in a record's Kafka key nor in
its value: both carry keyed references, `HMAC-SHA256(audit key, text)` cut to 32 hex digits. The
audit key is `hub_key(master, "audit")` (hub.routing.pseudonyms): its label cannot be a subscriber
id, so no subscriber's pseudonyms ever equal the audit's references. A record's Kafka key is its
`key_ref`, the reference of the canonical entity key. Records written before this derivation used
`HMAC(master, "eduhub-audit")` (`legacy_audit_key`); `who_received` still finds them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import orjson

from hub.routing.pseudonyms import hub_key

# On the internal topic of an HTTP subscriber: the audit references of the record, so the delivery
# stage can audit the outcome without the canonical record (the projected one may hide the IDs).
REFS_HEADER = "eduhub.audit.refs"
# Fields that hold a learner's or teacher's personal ID: deliveries are indexed by them.
PERSON_ID_FIELDS = ("student_id", "national_id", "applicant_id")
LEGACY_LABEL = b"eduhub-audit"  # the old label; hub.routing.subscriptions reserves it as a subscriber id


def audit_key(master_key: bytes) -> bytes:
    """The key of the audit trail's references, in a domain of its own (no subscriber id yields it)."""
    return hub_key(master_key, "audit")


def legacy_audit_key(master_key: bytes) -> bytes:
    """The audit key of records written before the domain separation: read them only, never write with it."""
    return hmac.new(bytes(master_key), LEGACY_LABEL, hashlib.sha256).digest()


def person_ref(key: bytes, person_id: str) -> str:
    """How the audit refers to a person: a keyed hash, so hub.audit holds no personal ID in clear."""
    return hmac.digest(key, person_id.encode(), "sha256").hex()[:32]  # one-shot C call: on the hot path


def audit_refs(key: bytes, entity_key: str, record: dict[str, Any] | None) -> dict[str, Any]:
    """References to the entity key and the people in a canonical record (keyed hashes only)."""
    people = {person_ref(key, str(record[f])) for f in PERSON_ID_FIELDS if record is not None and record.get(f)}
    people.update(person_ref(key, part) for part in entity_key.split("|"))  # keys such as student_id|year|…
    return {"key_ref": person_ref(key, entity_key), "person_refs": sorted(people)}


def audit_record_key(refs: dict[str, Any]) -> bytes | None:
    """The Kafka key of an audit record: the entity key's reference (None when the references are unknown)."""
    key_ref = refs.get("key_ref")
    return key_ref.encode() if isinstance(key_ref, str) else None


def audit_entry(refs: dict[str, Any], *, subscriber: str, entity: str, event_id: str | None, at: str,
                outcome: str) -> bytes:
    """One delivery record of `hub.audit`: who got (or was refused) which event, when."""
    return orjson.dumps({"subscriber": subscriber, "event_id": event_id, "entity": entity, **refs,
                         "outcome": outcome, "at": at})  # orjson: one per subscriber and event, on the hot path


def audit_record(key: bytes, *, subscriber: str, entity: str, entity_key: str, event_id: str | None,
                 record: dict[str, Any] | None, at: str, outcome: str = "delivered") -> bytes:
    """One delivery: who got which event of which entity, when, and references to the people in it."""
    return audit_entry(audit_refs(key, entity_key, record), subscriber=subscriber, entity=entity,
                       event_id=event_id, at=at, outcome=outcome)


def who_received(key: bytes | list[bytes], records: list[bytes], person_or_key: str) -> list[dict[str, Any]]:
    """The deliveries concerning a personal ID (or an entity key), oldest first; `key` may list several
    audit keys (today's and `legacy_audit_key`) to find records written under either."""
    refs = {person_ref(k, person_or_key) for k in (key if isinstance(key, list) else [key])}
    found = []
    for value in records:
        entry = json.loads(value)
        if entry["key_ref"] in refs or refs & set(entry["person_refs"]):
            found.append(entry)
    return found

"""The audit trail of deliveries (topic `hub.audit`) and the question it answers: who received this person's data."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


# On the internal topic of an HTTP subscriber: the audit references of the record, so the delivery
# stage can audit the outcome without the canonical record (the projected one may hide the IDs).
REFS_HEADER = "eduhub.audit.refs"
# Fields that hold a learner's or teacher's personal ID: deliveries are indexed by them.
PERSON_ID_FIELDS = ("student_id", "national_id", "applicant_id")


def audit_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"eduhub-audit", hashlib.sha256).digest()


def person_ref(key: bytes, person_id: str) -> str:
    """How the audit refers to a person: a keyed hash, so hub.audit holds no personal ID in clear."""
    return hmac.new(key, person_id.encode(), hashlib.sha256).hexdigest()[:32]


def audit_refs(key: bytes, entity_key: str, record: dict[str, Any] | None) -> dict[str, Any]:
    """References to the entity key and the people in a canonical record (keyed hashes only)."""
    people = {person_ref(key, str(record[f])) for f in PERSON_ID_FIELDS if record is not None and record.get(f)}
    people.update(person_ref(key, part) for part in entity_key.split("|"))  # keys such as student_id|year|…
    return {"key_ref": person_ref(key, entity_key), "person_refs": sorted(people)}


def audit_entry(refs: dict[str, Any], *, subscriber: str, entity: str, event_id: str | None, at: str,
                outcome: str) -> bytes:
    """One delivery record of `hub.audit`: who got (or was refused) which event, when."""
    return json.dumps({"subscriber": subscriber, "event_id": event_id, "entity": entity, **refs,
                       "outcome": outcome, "at": at}).encode()


def audit_record(key: bytes, *, subscriber: str, entity: str, entity_key: str, event_id: str | None,
                 record: dict[str, Any] | None, at: str, outcome: str = "delivered") -> bytes:
    """One delivery: who got which event of which entity, when, and references to the people in it."""
    return audit_entry(audit_refs(key, entity_key, record), subscriber=subscriber, entity=entity,
                       event_id=event_id, at=at, outcome=outcome)


def who_received(key: bytes, records: list[bytes], person_or_key: str) -> list[dict[str, Any]]:
    """The deliveries concerning a personal ID (or an entity key), oldest first."""
    ref = person_ref(key, person_or_key)
    found = []
    for value in records:
        entry = json.loads(value)
        if entry["key_ref"] == ref or ref in entry["person_refs"]:
            found.append(entry)
    return found

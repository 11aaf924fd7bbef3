"""The audit trail of deliveries (`hub.audit`) and the question it answers: who received this person's data."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

AUDIT_TOPIC = "hub.audit"
# Fields that hold a learner's or teacher's personal ID: deliveries are indexed by them.
PERSON_ID_FIELDS = ("student_id", "national_id", "applicant_id")


def audit_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"eduhub-audit", hashlib.sha256).digest()


def person_ref(key: bytes, person_id: str) -> str:
    """How the audit refers to a person: a keyed hash, so hub.audit holds no personal ID in clear."""
    return hmac.new(key, person_id.encode(), hashlib.sha256).hexdigest()[:32]


def audit_record(key: bytes, *, subscriber: str, entity: str, entity_key: str, event_id: str | None,
                 record: dict[str, Any] | None, at: str, outcome: str = "delivered") -> bytes:
    """One delivery: who got which event of which entity, when, and references to the people in it."""
    people = {person_ref(key, str(record[f])) for f in PERSON_ID_FIELDS if record is not None and record.get(f)}
    people.update(person_ref(key, part) for part in entity_key.split("|"))  # keys such as student_id|year|…
    return json.dumps({"subscriber": subscriber, "event_id": event_id, "entity": entity,
                       "key_ref": person_ref(key, entity_key), "person_refs": sorted(people),
                       "outcome": outcome, "at": at}).encode()


def who_received(key: bytes, records: list[bytes], person_or_key: str) -> list[dict[str, Any]]:
    """The deliveries concerning a personal ID (or an entity key), oldest first."""
    ref = person_ref(key, person_or_key)
    found = []
    for value in records:
        entry = json.loads(value)
        if entry["key_ref"] == ref or ref in entry["person_refs"]:
            found.append(entry)
    return found

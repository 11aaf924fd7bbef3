"""Poison records against a real broker, registry and worker: every hostile record ends once in its DLQ with
a precise rule, every valid record around it arrives in order, and the worker process never falls over.

The matrices are data in tests/faults/poison.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, defaultdict
from typing import Any

import fastavro
import httpx
import pytest

from hub.contract.registry import SchemaRegistry
from hub.contract.schemas import Catalogue, decode_body, split_wire
from tests.faults.poison import (
    INGEST_POISON,
    INGEST_VALID_ODDITIES,
    OLD_SCHEMA_DROPS,
    ROUTE_POISON,
    Raw,
    RouteContext,
    canonical_headers,
    log_excerpt,
    produce,
    read_all,
    text_header,
)
from tests.faults.report import ScenarioResult, record
from tests.kafka_helpers import encode, registration_envelope, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]
KEY = "faults-test-master-key-0123456789abcdef"
CATALOGUE = Catalogue.load()
REGISTRATION = CATALOGUE["exam.registration"]


def _alive(worker, pid: int) -> tuple[bool, str]:
    """(the worker is the same live process and /healthz answers 200, what was seen)."""
    if worker.process.pid != pid or worker.process.poll() is not None:
        return False, f"worker pid {pid} exited with {worker.process.poll()}"
    try:
        status = httpx.get(f"{worker.url}/healthz", timeout=5).status_code
    except httpx.HTTPError as exc:
        return False, f"/healthz unreachable: {exc!r}"
    return status == 200, f"/healthz {status}"


def _original_kept(letter: Any, raw: Raw) -> bool:
    """A dead letter holds the original key and value (or, when marked truncated, the value's start)."""
    if letter.key != raw.key:
        return False
    if text_header(letter, "eduhub.errors.truncated") is not None:
        return raw.value is not None and raw.value.startswith(letter.value or b"")
    return letter.value == raw.value


def _offline_verdicts(cases, raws: list[Raw], source: str) -> dict[str, str]:
    """What the product's validator says of each case in this process (to explain a stall or a crash)."""
    try:
        from hub.stages.validate import Valid, Validator

        validator = Validator(CATALOGUE)
    except Exception as exc:  # noqa: BLE001 — diagnostics only
        return {"*": f"no offline validator: {exc!r}"}
    verdicts = {}
    for case, raw in zip(cases, raws):
        try:
            try:
                result = validator.validate(raw.value, topic_source=source, kafka_key=raw.key)
            except TypeError:  # a validator without the Kafka key check
                result = validator.validate(raw.value, topic_source=source)
            verdicts[case.name] = "valid" if isinstance(result, Valid) else result.problems[0].rule
        except Exception as exc:  # noqa: BLE001
            verdicts[case.name] = f"raised {type(exc).__name__}: {str(exc)[:200]}"
    return verdicts


def test_ingest_poison_matrix_each_hostile_record_dead_lettered_once_valid_ones_in_order(
        local_stack, start_worker, unique_source):
    bootstrap = local_stack.bootstrap_servers
    worker = start_worker([unique_source])
    pid = worker.process.pid
    keys = [f"2026{uuid.uuid4().int % 10**8:08d}" for _ in range(3)]

    # valid, hostile, valid, hostile, ..., valid: the valid ones cycle over three keys.
    hostile = INGEST_POISON
    hostile_raws = [case.build(unique_source) for case in hostile]
    odd_raws = [case.build(unique_source) for case in INGEST_VALID_ODDITIES]
    valid_envelopes: list[dict] = []
    sequence: list[tuple[str, Any, Raw]] = []  # (kind, case or envelope, raw)

    def valid() -> None:
        envelope = registration_envelope(unique_source, registration_id=keys[len(valid_envelopes) % len(keys)])
        valid_envelopes.append(envelope)
        sequence.append(("valid", envelope, Raw(envelope["key"].encode(), encode(envelope))))

    for case, raw in zip(hostile, hostile_raws):
        valid()
        sequence.append(("hostile", case, raw))
    for case, raw in zip(INGEST_VALID_ODDITIES, odd_raws):
        valid()
        envelope = json.loads(raw.value)
        valid_envelopes.append(envelope)
        sequence.append(("valid", envelope, raw))
    valid()

    where = produce(bootstrap, f"ingest.{unique_source}", [raw for _, _, raw in sequence])
    hostile_at = {w: case for (kind, case, _), w in zip(sequence, where) if kind == "hostile"}
    raw_at = {w: raw for (_, _, raw), w in zip(sequence, where)}
    valid_ids = {e["event_id"] for e in valid_envelopes}
    dlq_topic = f"hub.dlq.{unique_source}"

    def canonical() -> list:
        out = []
        for entity in ("exam.registration", "school.score"):  # the matrix's entities
            out += [r for r in read_all(bootstrap, f"edu.{entity}") if text_header(r, "eduhub.source") == unique_source]
        return out

    def done() -> bool:
        if worker.process.poll() is not None:
            return True  # it died: nothing more will come
        letters = read_all(bootstrap, dlq_topic)
        return len(letters) >= len(hostile) and len(canonical()) >= len(valid_envelopes)

    wait_until(done, bound_s=60, interval_s=1)
    alive, health = _alive(worker, pid)
    letters = read_all(bootstrap, dlq_topic)
    arrived = canonical()

    letters_at: dict[tuple[int, int], list] = defaultdict(list)
    strays = []
    for letter in letters:
        at = (int(text_header(letter, "eduhub.errors.partition") or -1),
              int(text_header(letter, "eduhub.errors.offset") or -1))
        (letters_at[at] if at in hostile_at else strays).append(letter)
    wrong_rule, missing, repeated, altered = [], [], [], []
    for at, case in hostile_at.items():
        found = letters_at.get(at, [])
        if not found:
            missing.append(case.name)
            continue
        if len(found) > 1:
            repeated.append(case.name)
        rule = text_header(found[0], "eduhub.errors.rule")
        stage = text_header(found[0], "eduhub.errors.stage")
        if rule not in case.rules or stage != "validate":
            wrong_rule.append(f"{case.name}: rule {rule} (stage {stage}), expected {' or '.join(case.rules)}")
        if not _original_kept(found[0], raw_at[at]):
            altered.append(case.name)

    arrived_ids = [text_header(r, "eduhub.event_id") for r in arrived]
    counts = Counter(arrived_ids)
    lost_valid = [e for e in valid_envelopes if e["event_id"] not in counts]
    leaked = [i for i in counts if i not in valid_ids]  # a hostile record that reached a canonical topic
    duplicated = sum(n - 1 for n in counts.values()) + sum(len(v) - 1 for v in letters_at.values())
    expected_order: dict[str, list[str]] = defaultdict(list)
    for e in valid_envelopes:
        expected_order[e["key"]].append(e["event_id"])
    got_order: dict[str, list[str]] = defaultdict(list)
    for r, event_id in zip(arrived, arrived_ids):
        if event_id in valid_ids and event_id not in got_order[r.key.decode("utf-8", "replace")]:
            got_order[r.key.decode("utf-8", "replace")].append(event_id)
    order_kept = all(got_order.get(k, []) == [i for i in ids if i in counts] for k, ids in expected_order.items())

    notes = [f"worker alive and healthy at the end: {alive} ({health})"]
    notes += [f"wrong rule: {w}" for w in wrong_rule]
    notes += [f"not dead-lettered: {m}" for m in missing]
    notes += [f"dead-lettered more than once: {m}" for m in repeated]
    notes += [f"dead letter does not hold the original key and bytes: {m}" for m in altered]
    notes += [f"hostile record reached a canonical topic: event {i}" for i in leaked]
    notes += [f"dead letter of another record: {text_header(s, 'eduhub.errors.rule')}" for s in strays]
    record(ScenarioResult(
        scenario="poison records on ingest.<source>", ingested=len(sequence), canonical=len(arrived),
        dlq=len(letters), lost=len(lost_valid) + len(missing), duplicated=duplicated, order_kept=order_kept,
        notes=notes))

    explain = ""
    if missing or wrong_rule or not alive:
        verdicts = _offline_verdicts(hostile, hostile_raws, unique_source)
        explain = "\noffline validator says: " + json.dumps(verdicts, ensure_ascii=False, indent=1)
    if missing or not alive or lost_valid:
        explain += "\nworker log:\n" + log_excerpt(worker.log_path)
    assert alive, "\n".join(notes) + explain
    assert not missing and not wrong_rule and not repeated and not altered, "\n".join(notes) + explain
    assert not lost_valid and not leaked and not strays, "\n".join(notes) + explain
    assert duplicated == 0 and order_kept, "\n".join(notes) + explain


# -- the canonical topic's matrix: the route stage ------------------------------------------------

def _registry_ids(url: str, old_subject: str, old_schema: dict) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        async with SchemaRegistry(url) as registry:
            current = await registry.lookup(REGISTRATION.subject, REGISTRATION.canonical_text)
            old = await registry.register(old_subject, json.dumps(old_schema))
            return current, old

    return asyncio.run(go())


def _decode_all(url: str, values: list[bytes]) -> list[dict]:
    async def go() -> list[dict]:
        async with SchemaRegistry(url) as registry:
            out = []
            for value in values:
                schema_id, body = split_wire(value)
                out.append(decode_body(await registry.parsed_schema(schema_id), body))
            return out

    return asyncio.run(go())


def test_canonical_poison_matrix_dead_lettered_by_route_and_an_older_schema_version_routed(
        local_stack, start_worker, unique_source, monkeypatch):
    bootstrap = local_stack.bootstrap_servers
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", KEY)
    subscriber = f"poison-{unique_source}"
    worker = start_worker([unique_source], subscriptions=[
        {"id": subscriber, "entities": ["exam.registration"], "pii_default": "keep"}])
    pid = worker.process.pid

    # An older, compatible version of the schema: one optional field (with a default today) removed,
    # registered under a throwaway subject so the real subject's history is untouched.
    old_schema = json.loads(REGISTRATION.canonical_text)
    assert any(f["name"] == OLD_SCHEMA_DROPS and "default" in f for f in old_schema["fields"])
    old_schema["fields"] = [f for f in old_schema["fields"] if f["name"] != OLD_SCHEMA_DROPS]
    schema_id, old_id = _registry_ids(local_stack.registry_url, f"faults-old-{uuid.uuid4().hex[:8]}-value",
                                      old_schema)
    assert old_id != schema_id
    keys = [f"2026{uuid.uuid4().int % 10**8:08d}" for _ in range(3)]
    sent_valid: list[tuple[str, str, dict]] = []  # (key, event_id, record) of every valid record, in order

    def datum(registration_id: str) -> dict:
        data = registration_envelope(unique_source, registration_id=registration_id,
                                     data={OLD_SCHEMA_DROPS: "01"})["data"]
        record_, problems = REGISTRATION.to_record(data)
        assert not problems, problems
        return record_

    def fresh() -> tuple[str, bytes, dict]:
        registration_id = keys[len(sent_valid) % len(keys)]
        record_ = datum(registration_id)
        return registration_id, REGISTRATION.encode(schema_id, record_), record_

    ctx = RouteContext(source=unique_source, schema_id=schema_id, wire=fresh)
    sequence: list[tuple[str, Any, Raw]] = []

    def valid() -> None:
        key, value, record_ = fresh()
        headers = canonical_headers(unique_source)
        sent_valid.append((key, dict(headers)["eduhub.event_id"].decode(), record_))
        sequence.append(("valid", None, Raw(key.encode(), value, headers)))

    for case in ROUTE_POISON:
        valid()
        sequence.append(("poison", case, case.build(ctx)))
    valid()
    # the record written with the older schema version
    old_key = keys[len(sent_valid) % len(keys)]
    old_record = {k: v for k, v in datum(old_key).items() if k != OLD_SCHEMA_DROPS}
    old_value = b"\x00" + old_id.to_bytes(4, "big") + _schemaless(old_schema, old_record)
    old_headers = canonical_headers(unique_source)
    old_event = dict(old_headers)["eduhub.event_id"].decode()
    sent_valid.append((old_key, old_event, {**old_record, OLD_SCHEMA_DROPS: None}))
    sequence.append(("valid", "older schema", Raw(old_key.encode(), old_value, old_headers)))
    valid()

    where = produce(bootstrap, REGISTRATION.topic, [raw for _, _, raw in sequence])
    poison_at = {w: case for (kind, case, _), w in zip(sequence, where) if kind == "poison"}
    raw_at = {w: raw for (_, _, raw), w in zip(sequence, where)}
    sub_topic = f"sub.{subscriber}.exam.registration"

    def mine_routed() -> list:
        return [r for r in read_all(bootstrap, sub_topic) if text_header(r, "eduhub.source") == unique_source]

    def mine_letters() -> list:
        return [r for r in read_all(bootstrap, "hub.dlq.route")
                if text_header(r, "eduhub.errors.topic") == REGISTRATION.topic
                and (int(text_header(r, "eduhub.errors.partition") or -1),
                     int(text_header(r, "eduhub.errors.offset") or -1)) in poison_at]

    def done() -> bool:
        if worker.process.poll() is not None:
            return True
        return len(mine_letters()) >= len(poison_at) and len(mine_routed()) >= len(sent_valid)

    wait_until(done, bound_s=60, interval_s=1)
    alive, health = _alive(worker, pid)
    letters, routed = mine_letters(), mine_routed()

    by_at: dict[tuple[int, int], list] = defaultdict(list)
    for letter in letters:
        by_at[(int(text_header(letter, "eduhub.errors.partition")),
               int(text_header(letter, "eduhub.errors.offset")))].append(letter)
    wrong_rule, missing, repeated, altered = [], [], [], []
    for at, case in poison_at.items():
        found = by_at.get(at, [])
        if not found:
            missing.append(case.name)
            continue
        rule, stage = text_header(found[0], "eduhub.errors.rule"), text_header(found[0], "eduhub.errors.stage")
        if rule not in case.rules or stage != "route":
            wrong_rule.append(f"{case.name}: rule {rule} (stage {stage}), expected {case.rules[0]} (stage route)")
        if not _original_kept(found[0], raw_at[at]):
            altered.append(case.name)
        if len(found) > 1:
            repeated.append(case.name)

    routed_ids = [text_header(r, "eduhub.event_id") for r in routed]
    counts = Counter(routed_ids)
    sent_ids = {event_id for _, event_id, _ in sent_valid}
    lost = [event_id for _, event_id, _ in sent_valid if event_id not in counts]
    duplicated = sum(n - 1 for n in counts.values()) + sum(len(v) - 1 for v in by_at.values())
    leaked = [i for i in counts if i not in sent_ids]
    expected_order: dict[str, list[str]] = defaultdict(list)
    for key, event_id, _ in sent_valid:
        expected_order[key].append(event_id)
    got_order: dict[str, list[str]] = defaultdict(list)
    for r, event_id in zip(routed, routed_ids):
        got_order[r.key.decode("utf-8", "replace")].append(event_id)
    order_kept = all(got_order.get(k, []) == [i for i in ids if i in counts] for k, ids in expected_order.items())

    # The routed copies hold what was written; the older version's missing field has its default.
    mismatched = []
    decoded = dict(zip(routed_ids, _decode_all(local_stack.registry_url, [r.value for r in routed])))
    for _, event_id, written in sent_valid:
        got = decoded.get(event_id)
        if got is None:
            continue
        for name in ("registration_id", "exam_year", "full_name", "national_id", OLD_SCHEMA_DROPS, "subjects"):
            if got.get(name) != written.get(name):
                mismatched.append(f"{'older schema ' if event_id == old_event else ''}event {event_id}: "
                                  f"{name} routed as {got.get(name)!r}, written {written.get(name)!r}")

    notes = [f"worker alive and healthy at the end: {alive} ({health})"]
    notes += [f"wrong rule: {w}" for w in wrong_rule] + [f"not dead-lettered: {m}" for m in missing]
    notes += [f"dead-lettered more than once: {m}" for m in repeated]
    notes += [f"dead letter does not hold the original key and bytes: {m}" for m in altered]
    notes += [f"older-schema record not routed (event {old_event})"] if old_event not in counts else []
    notes += mismatched + [f"routed but never written: event {i}" for i in leaked]
    record(ScenarioResult(
        scenario="poison records on edu.exam.registration (route)", ingested=len(sequence), canonical=len(sequence),
        dlq=len(letters), sub=len(routed), lost=len(lost) + len(missing), duplicated=duplicated,
        order_kept=order_kept, notes=notes))

    explain = "" if alive and not missing and not lost else "\nworker log:\n" + log_excerpt(worker.log_path)
    assert alive, "\n".join(notes) + explain
    assert not missing and not wrong_rule and not repeated and not altered, "\n".join(notes) + explain
    assert not lost and not leaked and not mismatched, "\n".join(notes) + explain
    assert duplicated == 0 and order_kept, "\n".join(notes) + explain


def _schemaless(schema: dict, datum: dict) -> bytes:
    import io

    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return out.getvalue()

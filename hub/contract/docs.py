"""Documents generated from the schemas for app teams: schemas/README.md and an AsyncAPI 3.0 file."""

from __future__ import annotations

import json
from typing import Any

from hub.core import __version__
from hub.contract.envelope import HEADER_EVENT_ID, HEADER_OCCURRED_AT, HEADER_OP, HEADER_SOURCE, HEADER_TRACE_ID
from hub.contract.schemas import Catalogue, EntitySchema

HEADERS = {
    HEADER_EVENT_ID: "UUID of the change event; the same event re-sent carries the same id (dedupe on it).",
    HEADER_SOURCE: "Id of the source system that published the change.",
    HEADER_OP: "Debezium's letter: c create, u update, d delete (value is a tombstone), r snapshot read.",
    HEADER_OCCURRED_AT: "When the change happened in the source system (RFC 3339, as the source sent it).",
    HEADER_TRACE_ID: "The source's trace id, when it sent one.",
}


# Choices in the schemas where the data dictionary is silent (the rules' own are in rules.DECISIONS).
SCHEMA_DECISIONS = (
    "Each schema file is standalone: shared types (Gender, SchoolSubject) are defined in every file "
    "that uses them, so a subject's schema never depends on another subject's.",
    "learning_rating and conduct_rating are two enums with the same symbols (LearningRating, "
    "ConductRating), so either can change on its own.",
    "school.term_result.term is a string (`1`, `2`, `YEAR`) because it is part of the key; "
    "school.score.term is an int (1 or 2).",
    "Decimals: score and exam scores decimal(4,2); average_score decimal(3,1); total_score and "
    "graduation_score decimal(5,2) (weighted admission totals can pass 10); priority_points "
    "decimal(2,1); encouragement_points decimal(3,2). Both point fields are required: none is 0.",
    "specialized_choice.subject is a free string (a specialised class may be in a language outside "
    "the school subject list); exam.result.scores is a map keyed by exam subject code.",
    "Only the `address` field of school.student carries `pii`, not its parts; school.school.phone "
    "is not PII (a school's public number).",
    "Person-level keys that identify a person across systems carry `\"eduhub.identifier\": true`: "
    "application_id, registration_id, exam.result.candidate_number, teacher_id (also in school.score) "
    "and school.class.homeroom_teacher_id. They are not PII by the data dictionary, but subscription "
    "policies treat them as PII, so two subscribers that protect persons cannot join on them.",
    "Enums that will grow end with `UNKNOWN`, their Avro default; closed lists (Gender, "
    "ForeignLanguage, PriorityArea, PassResult, subject codes) have none.",
)


def _type_text(schema: Any) -> str:
    """A short human name of an Avro type: `string`, `date`, `enum Gender`, `array<enum ExamSubject>`…"""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        others = [_type_text(s) for s in schema if s != "null"]
        return " | ".join(others) + (" (nullable)" if "null" in schema else "")
    logical = schema.get("logicalType")
    if logical == "decimal":
        return f"decimal({schema['precision']},{schema.get('scale', 0)})"
    if logical:
        return {"timestamp-millis": "timestamp (UTC, ms)"}.get(logical, logical)
    kind = schema["type"]
    if kind == "enum":
        return f"enum {schema['name']}"
    if kind == "record":
        return f"record {schema['name']}"
    if kind == "array":
        return f"array<{_type_text(schema['items'])}>"
    if kind == "map":
        return f"map<string, {_type_text(schema['values'])}>"
    return _type_text(kind)


def _named_types(schema: Any, found: dict[str, dict]) -> dict[str, dict]:
    """Enums and nested records of a schema, by name, in order of appearance."""
    if isinstance(schema, list):
        for s in schema:
            _named_types(s, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("enum", "record") and schema.get("name") not in found:
            found[schema["name"]] = schema
        for key in ("fields",):
            for f in schema.get(key, []):
                _named_types(f["type"], found)
        for key in ("items", "values", "type"):
            if isinstance(schema.get(key), (dict, list)):
                _named_types(schema[key], found)
    return found


def _tag_text(field: dict) -> str:
    """The PII / identifier column of a field (tags of nested fields are listed with their record)."""
    return " ".join(text for attr, text in (("pii", "**PII**"), ("eduhub.identifier", "identifier"))
                    if field.get(attr) is True)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def entity_section(entity: EntitySchema) -> list[str]:
    schema = entity.schema
    lines = [
        f"## {entity.entity}",
        "",
        _cell(schema.get("doc", "")),
        "",
        f"- topic `{entity.topic}`, value subject `{entity.subject}` (Avro, BACKWARD_TRANSITIVE), "
        f"record `{schema['namespace']}.{schema['name']}`",
        "- key: " + " `|` ".join(f"`{name}`" for name in entity.key_fields),
        "",
        "| field | type | required | PII / identifier | meaning |",
        "|---|---|---|---|---|",
    ]
    for field in schema["fields"]:
        required = "default " + json.dumps(field["default"]) if "default" in field else "yes"
        lines.append(f"| `{field['name']}` | {_cell(_type_text(field['type']))} | {_cell(required)} | "
                     f"{_tag_text(field)} | {_cell(field.get('doc', ''))} |")
    named = [t for t in _named_types(schema, {}).values() if t is not schema]
    for named_type in named:
        lines += ["", f"`{named_type['name']}`: {_cell(named_type.get('doc', ''))}"]
        if named_type["type"] == "enum":
            symbols = ", ".join(f"`{s}`" for s in named_type["symbols"])
            default = f" (reader default `{named_type['default']}`)" if "default" in named_type else ""
            lines.append(f"symbols {symbols}{default}")
        else:
            lines.append("fields " + ", ".join(f"`{f['name']}` {_cell(_type_text(f['type']))}"
                                               + (f" ({_tag_text(f)})" if _tag_text(f) else "")
                                               for f in named_type["fields"]))
    return lines + [""]


README_HEAD = """\
# The EduHub data contract

Generated by `eduhub docs readme --write` from the Avro schemas in this folder and the rules in
`hub/contract/rules/`; do not edit by hand (a test fails when this file is stale). Source of truth for
names, codes and rules: the data dictionary (`shared/domain/DATA_DICTIONARY.md`).

## Conventions

- Canonical topic of entity `D.E` is `edu.D.E`; its value schema is registered under
  `edu.D.E-value` (TopicNameStrategy) and evolves BACKWARD_TRANSITIVE: a consumer on the newest
  schema reads every record ever written. Values are Confluent wire format: magic byte 0, the
  4-byte big-endian schema id, the Avro binary body. Any Confluent-compatible deserializer reads them.
- The Kafka key is the entity key as UTF-8 text; keys built from several fields join them with `|`.
- A delete (`op` = `d`) is a tombstone: the key with a null value.
- Fields marked **PII** carry the Avro attribute `"pii": true`; fields marked identifier carry
  `"eduhub.identifier": true` (a person-level key such as `application_id`). Subscription policies
  keep, mask, pseudonymise or drop both alike, at any depth (a tagged field inside a record, an
  array, a map or a union counts too). A schema version that removes either tag fails
  `eduhub schemas check` unless `schemas/pii-changes.yaml` acknowledges it.
- Text is Unicode NFC, trimmed, inner whitespace collapsed (input may arrive NFD). Old and new
  tone placement (hòa/hoà) are both valid and kept as sent. Dates are `date` (days since
  1970-01-01), timestamps `timestamp-millis` in UTC, scores and points `decimal`.
- Enums that will grow carry a last symbol `UNKNOWN` as their Avro `default`: a reader on an older
  schema maps a symbol it does not know to `UNKNOWN`. `UNKNOWN` is never accepted on ingest.
- Phone numbers are canonical `+84` followed by 9 digits.
"""


def readme(catalogue: Catalogue) -> str:
    from hub.contract import rules

    lines = [README_HEAD, "## Record headers", "", "| header | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in HEADERS.items()]
    lines += ["", "## Entities", ""]
    lines += [f"- [{e}](#{e.replace('.', '')}) `{catalogue[e].topic}`" for e in sorted(catalogue.names)]
    lines.append("")
    for name in sorted(catalogue.names):
        lines += entity_section(catalogue[name])
    lines += ["## Rules beyond Avro", "",
              "Each rule has a stable id, reported in `eduhub validate` results and in the "
              "`eduhub.errors.rule` header of dead letters.", "", "| rule | checks |", "|---|---|"]
    lines += [f"| `{rule_id}` | {_cell(text)} |" for rule_id, text in sorted(rules.RULES.items())]
    lines += ["", "## Decisions where the data dictionary is silent", "", "In the schemas:", ""]
    lines += [f"- {d}" for d in SCHEMA_DECISIONS]
    lines += ["", "In the rules (`hub/contract/rules/`):", ""]
    lines += [f"- {d}" for d in rules.DECISIONS]
    return "\n".join(lines).rstrip() + "\n"


def asyncapi(catalogue: Catalogue) -> dict[str, Any]:
    """An AsyncAPI 3.0 document: every canonical topic with its key and Avro value schema."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name in sorted(catalogue.names):
        entity = catalogue[name]
        message_id = name.replace(".", "_")
        messages[message_id] = {
            "name": entity.schema["name"],
            "title": name,
            "summary": entity.schema.get("doc", ""),
            "contentType": "application/vnd.apache.avro+binary",
            "headers": {"type": "object", "properties": {h: {"type": "string", "description": d}
                                                         for h, d in HEADERS.items()}},
            "payload": {"schemaFormat": "application/vnd.apache.avro+json;version=1.9.0", "schema": entity.schema},
            "bindings": {"kafka": {
                "key": {"type": "string",
                        "description": "entity key: " + " | ".join(entity.key_fields)},
                "schemaIdLocation": "payload",
                "schemaIdPayloadEncoding": "confluent",
                "schemaLookupStrategy": "TopicIdStrategy",
                "bindingVersion": "0.5.0",
            }},
        }
        channels[message_id] = {
            "address": entity.topic,
            "description": f"Canonical {name} records; value subject {entity.subject}.",
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
        }
        operations[f"receive_{message_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{message_id}"},
            "summary": f"Subscribe to {entity.topic} with any Kafka client (read_committed).",
            "messages": [{"$ref": f"#/channels/{message_id}/messages/{message_id}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "EduHub canonical topics",
            "version": __version__,
            "description": "Validated change events of the Hải Phòng education sector, one topic per entity.",
        },
        "defaultContentType": "application/vnd.apache.avro+binary",
        "servers": {"hub": {"host": "kafka:9092", "protocol": "kafka",
                            "description": "The Department's Kafka cluster (set your bootstrap servers)."}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


# Which process exports a metric (the connector runtime shares the definitions but sets only its own).
_CONNECT_ONLY = "eduhub_connector_"


def metrics_markdown() -> str:
    """docs/metrics.md: every metric the hub defines, generated from `HubMetrics` itself."""
    from prometheus_client import Counter, Gauge, Histogram, Info

    from hub.core.metrics import HubMetrics

    kinds = ((Counter, "counter", "_total"), (Histogram, "histogram", "_bucket, _sum, _count"),
             (Gauge, "gauge", ""), (Info, "info", "_info"))
    rows = []
    for metric in vars(HubMetrics()).values():
        for cls, kind, suffix in kinds:
            if isinstance(metric, cls):
                break
        else:
            continue
        # prometheus-client keeps the name, labels and help only in these attributes.
        name, labels, doc = metric._name, metric._labelnames, metric._documentation
        exposed = f"`{name}{suffix}`" if suffix and "," not in suffix else f"`{name}` ({suffix})" if suffix else f"`{name}`"
        process = ("connector runtime" if name.startswith(_CONNECT_ONLY)
                   else "worker, connector runtime" if isinstance(metric, Info) else "worker")
        rows.append(f"| {exposed} | {kind} | {', '.join(f'`{label}`' for label in labels) or '—'} | {process} | {doc} |")
    header = [
        "# Metrics",
        "",
        "Generated by `eduhub docs metrics -o docs/metrics.md` from `hub/core/metrics.py`; a test fails when",
        "this file is stale. Every metric is named `eduhub_*` with its unit in the name; labels are the",
        "same everywhere: `source`, `entity`, `subscriber`, `stage`, `rule` (plus `group`, `topic`,",
        "`partition` for consumer lag, `connector` for connectors, `error` for stage errors). The worker serves them at",
        "`:6066/metrics`, the connector runtime at `:8083/metrics`. Alert rules: `deploy/prometheus/`;",
        "dashboards: `deploy/grafana/`.",
        "",
        "| exposed as | type | labels | process | meaning |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(header + rows) + "\n"

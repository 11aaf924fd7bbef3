"""Turns an existing Debezium change topic (before/after/op/source) into ingest envelopes.

A system owner who already runs Debezium on the school-management database points this connector
at the change topic of one table. Each change record becomes one envelope: `op` as Debezium
wrote it (c, u, d, r), `data` the mapped `after` row (null for deletes, whose key comes from
`before`), `occurred_at` the time the change was committed in the source database.

Debezium's JSON comes with or without the schema wrapper (`value.converter.schemas.enable`).
Temporal columns arrive as numbers (io.debezium.time.Date: days since the epoch;
Timestamp / MicroTimestamp / NanoTimestamp: the wall-clock time of a column without time zone, as
if it were UTC) and are turned into ISO dates and RFC 3339 times in `timezone`; ZonedTimestamp and
other ISO strings pass as they are (a naive one gets `timezone`'s offset). Decimals in Debezium's
default "precise" mode (base64 of the unscaled value) are decoded when the schema wrapper gives the
scale. Tombstones (the null value Debezium sends after a delete) are skipped.

The connector reads with its own consumer, in no consumer group: its position is the offset the
runtime stores, {"partitions": {"0": next offset, ...}}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import Field, field_validator, model_validator

from connectors.base import ConnectorConfig, SourceConnector, SourceRecord, event_id_for, make_envelope, register
from connectors.cells import local_iso, number_text
from connectors.rows import assemble, check_fields, entity_schema, field_specs, key_of
from hub.kafka.admin import partitions_of
from hub.kafka.clients import KafkaClients

log = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
OPS = frozenset({"c", "u", "d", "r"})
EPOCH = datetime(1970, 1, 1)
EPOCH_DATE = date(1970, 1, 1)
DEBEZIUM_ERROR = "_debezium_error"  # not a field of any entity: the hub rejects the change and names it

# Connect / Debezium semantic type names (the schema wrapper's "name") and what their numbers count.
_TIMESTAMP_UNITS = {
    "io.debezium.time.Timestamp": 1_000,
    "org.apache.kafka.connect.data.Timestamp": 1_000,
    "io.debezium.time.MicroTimestamp": 1_000_000,
    "io.debezium.time.NanoTimestamp": 1_000_000_000,
}
_DATE_NAMES = frozenset({"io.debezium.time.Date", "org.apache.kafka.connect.data.Date"})
_DECIMAL_NAME = "org.apache.kafka.connect.data.Decimal"
_JSON_NAME = "io.debezium.data.Json"


class DebeziumConnectorConfig(ConnectorConfig):
    """One Debezium change topic (one table) read as one entity."""

    bootstrap_servers: str | None = Field(
        None, description="Kafka cluster holding the Debezium topic, host:port[,host:port]; "
                          f"unset: the hub's own cluster (the runtime fills it in; {DEFAULT_BOOTSTRAP} otherwise); "
                          "reached with the hub's kafka.* TLS settings and the connector's principal")
    topic: str = Field(min_length=1, description="the Debezium change topic, e.g. smas.public.students")
    entity: str = Field(description="entity each change is, e.g. school.student")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="entity field → column of the table, e.g. {student_id: ma_dinh_danh}; dotted fields "
                    "(address.ward_code) build nested records; a field not listed is read from the column of "
                    "its own name; other columns are ignored")
    json_columns: list[str] = Field(
        default_factory=list,
        description="fields whose column holds JSON text (e.g. a jsonb column of a list or record) to parse")
    timezone: str = Field("Asia/Ho_Chi_Minh",
                          description="time zone of the database's timestamps without time zone (Debezium "
                                      "sends their wall-clock value as if it were UTC)")
    date_format: Literal["debezium", "iso"] = Field(
        "debezium",
        description="how temporal columns arrive: debezium (io.debezium.time.*, the default: dates as days "
                    "since 1970-01-01, timestamps as epoch ms, or µs when > 10^14, or ns when > 10^17; ISO "
                    "strings also accepted) or iso (ISO strings only; numbers are passed on unconverted)")

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        entity_schema(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}, e.g. Asia/Ho_Chi_Minh") from None
        return value

    @model_validator(mode="after")
    def _fields(self) -> "DebeziumConnectorConfig":
        check_fields(self.entity, self.columns, "columns")
        check_fields(self.entity, self.json_columns, "json_columns")
        return self


# --- one Debezium message → one envelope (pure) ------------------------------------------------

def _wall_clock(count: int, per_second: int, tz: Any) -> str:
    seconds, fraction = divmod(count, per_second)
    moment = EPOCH + timedelta(seconds=seconds, microseconds=fraction * 1_000_000 // per_second)
    return local_iso(moment.replace(tzinfo=tz))


def _timestamp_unit(value: int) -> int:
    magnitude = abs(value)
    if magnitude > 10**17:
        return 1_000_000_000
    if magnitude > 10**14:
        return 1_000_000
    return 1_000


def _temporal(kind: str, value: Any, semantic: str | None, tz: Any, config: DebeziumConnectorConfig) -> Any:
    if isinstance(value, str):
        if kind == "timestamp":
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                return value
            if parsed.tzinfo is None:  # naive text: wall-clock time in the configured zone
                return local_iso(parsed.replace(tzinfo=tz))
            return value
        if kind == "date" and len(value) > 10 and value[:10].count("-") == 2 and value[10] in "T ":
            return value[:10]  # a date sent as midnight timestamp text
        return value
    if not isinstance(value, int) or isinstance(value, bool) or config.date_format == "iso":
        return value
    if kind == "date":
        if semantic in _TIMESTAMP_UNITS or (semantic is None and abs(value) > 10**6):
            # a timestamp column mapped to a date field: its wall-clock date
            unit = _TIMESTAMP_UNITS.get(semantic or "", 0) or _timestamp_unit(value)
            return (EPOCH + timedelta(seconds=value / unit)).date().isoformat()
        return (EPOCH_DATE + timedelta(days=value)).isoformat()
    if kind == "timestamp":
        if semantic in _DATE_NAMES:
            return local_iso((EPOCH + timedelta(days=value)).replace(tzinfo=tz))
        unit = _TIMESTAMP_UNITS.get(semantic or "") or _timestamp_unit(value)
        return _wall_clock(value, unit, tz)
    return value


def _decode_decimal(value: str, parameters: dict[str, Any]) -> Any:
    try:
        scale = int(parameters.get("scale", 0))
        unscaled = int.from_bytes(base64.b64decode(value, validate=True), "big", signed=True)
    except (ValueError, TypeError):
        return value
    return format(Decimal(unscaled).scaleb(-scale), "f")


def _convert(kind: str, value: Any, semantic: dict[str, Any] | None, is_json: bool, tz: Any,
             config: DebeziumConnectorConfig) -> Any:
    """One column value converted for a field of `kind`; what does not convert passes unchanged."""
    if value is None:
        return None
    name = (semantic or {}).get("name")
    if isinstance(value, str) and (is_json or name == _JSON_NAME or (
            kind in ("json", "record", "list") and value[:1] in ("[", "{"))):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if name == _DECIMAL_NAME and isinstance(value, str):
        value = _decode_decimal(value, (semantic or {}).get("parameters") or {})
    if kind in ("date", "timestamp"):
        return _temporal(kind, value, name, tz, config)
    if kind == "decimal":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return number_text(value)  # decimal.handling.mode=double: the hub checks the scale
        return value
    if kind == "bool" and isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)  # MySQL tinyint(1)
    if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)  # a code kept in a numeric column
    if kind == "int" and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return value


def _field_schemas(schema: Any, side: str) -> dict[str, dict[str, Any]]:
    """Column → Connect schema of the `before`/`after` struct in a schema wrapper ({} when absent)."""
    if not isinstance(schema, dict):
        return {}
    for part in schema.get("fields") or ():
        if isinstance(part, dict) and part.get("field") == side:
            return {f.get("field"): f for f in part.get("fields") or () if isinstance(f, dict)}
    return {}


def _row_data(config: DebeziumConnectorConfig, row: dict[str, Any], column_schemas: dict[str, dict]) -> dict:
    tz = ZoneInfo(config.timezone)
    json_fields = set(config.json_columns)
    values: dict[str, Any] = {}
    for path, spec in field_specs(config.entity).items():
        column = config.columns.get(path, path)
        if column not in row:
            continue
        values[path] = _convert(spec.kind, row[column], column_schemas.get(column), path in json_fields, tz, config)
    return assemble(config.entity, values)


def _unwrap(document: Any) -> tuple[dict[str, Any] | None, Any]:
    """(payload, schema) of a Debezium JSON value with or without the schema wrapper."""
    if isinstance(document, dict) and "payload" in document and "op" not in document:
        payload = document.get("payload")
        return (payload if isinstance(payload, dict) else None), document.get("schema")
    return (document if isinstance(document, dict) else None), None


def _occurred_at(payload: dict[str, Any], timestamp_ms: int | None, tz: Any) -> str:
    """When the change was committed in the source: source.ts_ms, else the payload's ts_ms, else Kafka's."""
    source = payload.get("source") if isinstance(payload.get("source"), dict) else {}
    for candidate in (source.get("ts_ms"), payload.get("ts_ms"), timestamp_ms):
        if isinstance(candidate, (int, float)) and not isinstance(candidate, bool) and candidate > 0:
            return local_iso(datetime.fromtimestamp(candidate / 1000, tz))
    return local_iso(datetime.now(tz))


def _message_key(key: bytes | None) -> dict[str, Any]:
    if not key:
        return {}
    try:
        document = json.loads(key)
    except ValueError:
        return {}
    if isinstance(document, dict) and "payload" in document and isinstance(document["payload"], dict):
        return document["payload"]
    return document if isinstance(document, dict) else {}


def to_envelope(config: DebeziumConnectorConfig, message_value: bytes | None, topic: str, partition: int,
                offset: int, *, message_key: bytes | None = None,
                timestamp_ms: int | None = None) -> dict[str, Any] | None:
    """The ingest envelope of one Debezium message, or None for what carries no change.

    None for tombstones, truncates and logical messages. A message that is not Debezium JSON
    becomes an envelope the hub rejects (its DLQ keeps the explanation) rather than vanishing.
    `message_key` (Debezium's key: the primary key columns) completes the key of a delete whose
    `before` lacks a key field (PostgreSQL's default replica identity sends only the primary key).
    """
    if message_value is None:
        return None
    event_id = event_id_for(config.source, topic, partition, offset)
    try:
        document = json.loads(message_value)
    except ValueError as error:
        return _error_envelope(config, event_id, topic, partition, offset, f"not JSON: {error}",
                               message_value[:500].decode("utf-8", "replace"), timestamp_ms)
    if document is None:
        return None  # a JSON null: a tombstone written as text
    payload, schema = _unwrap(document)
    if payload is None:
        return None if isinstance(document, dict) and document.get("payload", 0) is None else _error_envelope(
            config, event_id, topic, partition, offset, "not a Debezium change (no payload)", document, timestamp_ms)
    op = payload.get("op")
    if op in ("t", "m"):
        log.info("skipped Debezium %s event at %s/%d/%d", "truncate" if op == "t" else "message", topic, partition,
                 offset)
        return None
    if op not in OPS:
        return _error_envelope(config, event_id, topic, partition, offset,
                               f"not a Debezium change: op {op!r} is not c, u, d or r", payload, timestamp_ms)
    occurred_at = _occurred_at(payload, timestamp_ms, ZoneInfo(config.timezone))
    if op == "d":
        before = payload.get("before") if isinstance(payload.get("before"), dict) else {}
        row = {**_message_key(message_key), **{k: v for k, v in before.items() if v is not None}}
        data = _row_data(config, row, _field_schemas(schema, "before"))
        return make_envelope(source=config.source, entity=config.entity, op="d", key=key_of(config.entity, data),
                             occurred_at=occurred_at, data=None, event_id=event_id)
    after = payload.get("after")
    if not isinstance(after, dict):
        return _error_envelope(config, event_id, topic, partition, offset,
                               f"Debezium {op!r} change without an 'after' row", payload, timestamp_ms)
    data = _row_data(config, after, _field_schemas(schema, "after"))
    return make_envelope(source=config.source, entity=config.entity, op=op, key=key_of(config.entity, data),
                         occurred_at=occurred_at, data=data, event_id=event_id)


def _error_envelope(config: DebeziumConnectorConfig, event_id: str, topic: str, partition: int, offset: int,
                    reason: str, raw: Any, timestamp_ms: int | None) -> dict[str, Any]:
    log.error("%s/%d/%d: %s", topic, partition, offset, reason)
    occurred_at = _occurred_at({}, timestamp_ms, ZoneInfo(config.timezone))
    return make_envelope(source=config.source, entity=config.entity, op="c", key=f"{topic}/{partition}/{offset}",
                         occurred_at=occurred_at, event_id=event_id,
                         data={DEBEZIUM_ERROR: f"{topic} partition {partition} offset {offset}: {reason}",
                               "_raw": raw})


# --- the connector -------------------------------------------------------------------------------

@register
class DebeziumConnector(SourceConnector):
    """Reads one Debezium topic from the offsets it is started at, every partition, in no group."""

    kind = "debezium"
    config_model = DebeziumConnectorConfig
    config: DebeziumConnectorConfig

    def __init__(self, config: DebeziumConnectorConfig) -> None:
        super().__init__(config)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._positions: dict[str, int] = {}

    def _clients(self) -> KafkaClients:
        """The connection of the connector's principal (set by the runtime), to the cluster of the topic."""
        return (self.kafka or KafkaClients.plain(DEFAULT_BOOTSTRAP)).at(self.config.bootstrap_servers)

    async def start(self, offset: dict[str, Any] | None) -> None:
        config = self.config
        kafka = self._clients()
        consumer = kafka.consumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                  isolation_level="read_committed", client_id=f"eduhub-debezium-{config.name}")
        await kafka.start(consumer)
        try:
            partitions = await self._partitions_of()
            self._partitions = [TopicPartition(config.topic, p) for p in partitions]
            consumer.assign(self._partitions)
            stored = {str(k): int(v) for k, v in ((offset or {}).get("partitions") or {}).items()}
            self._positions = {}
            for tp in self._partitions:
                position = stored.get(str(tp.partition))
                if position is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, position)
                    self._positions[str(tp.partition)] = position
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        log.info("reading %s partitions %s from %s", config.topic, partitions, stored or "the beginning")

    async def _partitions_of(self, bound_s: float = 30.0) -> list[int]:
        """The topic's partitions; waits a little for a topic Debezium has not created yet."""
        kafka = self._clients()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound_s
        while True:
            try:
                return sorted(await partitions_of(kafka, self.config.topic))
            except LookupError:
                if loop.time() > deadline:
                    raise LookupError(f"topic {self.config.topic} does not exist on {kafka.bootstrap_servers}") from None
            await asyncio.sleep(0.5)

    async def poll(self) -> list[SourceRecord]:
        if self._consumer is None:
            raise RuntimeError("poll() before start()")
        batch = await self._consumer.getmany(timeout_ms=int(self.config.poll_interval_s * 1000),
                                             max_records=self.config.batch_size)
        records = []
        for tp in sorted(batch, key=lambda tp: tp.partition):
            for message in batch[tp]:
                self._positions[str(tp.partition)] = message.offset + 1
                envelope = to_envelope(self.config, message.value, message.topic, message.partition,
                                       message.offset, message_key=message.key, timestamp_ms=message.timestamp)
                if envelope is not None:
                    records.append(SourceRecord(envelope, {"partitions": dict(self._positions)}))
        return records

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

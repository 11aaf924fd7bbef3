"""The connector contract: a source connector yields ingest envelopes with the source offset they reach."""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from hub.kafka.clients import KafkaClients

# Namespace of the event ids connectors derive: the same change read twice gets the same id,
# so the hub drops the repeat.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c3f2e-5a57-4c1e-9a3e-0d0e0b000001")


def event_id_for(source: str, *parts: Any) -> str:
    """A deterministic event id (UUID 5) from the source and what identifies the change in it.

    >>> event_id_for("smas", "student", 42, "2026-05-01T08:00:00") == event_id_for("smas", "student", 42, "2026-05-01T08:00:00")
    True
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "|".join([source, *map(str, parts)])))


def make_envelope(*, source: str, entity: str, op: str, key: str, occurred_at: datetime | str,
                  data: dict[str, Any] | None, event_id: str, trace_id: str | None = None) -> dict[str, Any]:
    """An ingest envelope (data dictionary §1) as a dict, ready to publish as JSON."""
    if isinstance(occurred_at, datetime):
        if occurred_at.tzinfo is None:
            occurred_at = occurred_at.replace(tzinfo=timezone.utc)
        occurred_at = occurred_at.isoformat()
    envelope: dict[str, Any] = {"event_id": event_id, "source": source, "entity": entity, "op": op, "key": key,
                                "occurred_at": occurred_at, "data": None if op == "d" else data}
    if trace_id is not None:
        envelope["trace_id"] = trace_id
    return envelope


@dataclass(slots=True)
class SourceRecord:
    """One change to publish, and the source offset the connector has reached once it is published.

    `acknowledged` is set by the runtime when Kafka acknowledged the record (or failed it): a push
    connector (HTTP) awaits it before answering its caller.
    """

    envelope: dict[str, Any]
    offset: dict[str, Any]
    acknowledged: asyncio.Future | None = field(default=None, repr=False)


class ConnectorConfig(BaseModel):
    """Keys every connector has; each kind extends it with its own, declared once with their docs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,59}$", description="unique connector name, e.g. smas-students")
    kind: str = Field(description="connector kind: sql, outbox, http, file or debezium")
    source: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$",
                        description="registered source id; the connector publishes to ingest.<source>")
    poll_interval_s: float = Field(1.0, gt=0, le=3600, description="pause between polls that found nothing, seconds")
    batch_size: int = Field(500, ge=1, le=100_000, description="most changes read in one poll")
    kafka_username: str | None = Field(
        None, min_length=1, description="the connector's own SASL user, so that Kafka sees (and its ACLs allow) "
                                        "this connector only; unset: the hub's kafka.username")
    kafka_password_env: str | None = Field(
        None, pattern=r"^[A-Z][A-Z0-9_]*$",
        description="name of the environment variable holding kafka_username's password, e.g. SMAS_KAFKA_PASSWORD")


class SourceConnector(ABC):
    """Knows one source system and nothing of Kafka: the runtime publishes, stores offsets, retries.

    A connector reads changes after the offset it is started from, returns them from `poll` with
    the offset reached after each, and hears through `committed` which ones Kafka holds.

    Example::

        class Counter(SourceConnector):
            kind = "counter"
            config_model = ConnectorConfig

            async def start(self, offset):
                self.n = (offset or {}).get("n", 0)

            async def poll(self):
                self.n += 1
                envelope = make_envelope(source=self.config.source, entity="school.class", op="c",
                                         key=str(self.n), occurred_at=datetime.now(timezone.utc),
                                         data={...}, event_id=event_id_for(self.config.source, self.n))
                return [SourceRecord(envelope, {"n": self.n})]
    """

    kind: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    # The Kafka connection of the connector's principal, set by the runtime; kinds that read Kafka use it.
    kafka: KafkaClients | None = None

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config

    async def start(self, offset: dict[str, Any] | None) -> None:
        """Open the source and position after `offset` (None: from the very beginning, a snapshot)."""

    @abstractmethod
    async def poll(self) -> list[SourceRecord]:
        """The next changes, oldest first, at most `batch_size`; [] when there is nothing new."""

    async def committed(self, records: Sequence[SourceRecord]) -> None:
        """Kafka acknowledged these records and their offset is stored (an outbox marks rows here)."""

    async def stop(self) -> None:
        """Release the source."""

    def snapshot_progress(self) -> tuple[int, int] | None:
        """(rows read, rows in the snapshot) while a first snapshot runs, else None (for progress bars)."""
        return None


KINDS: dict[str, type[SourceConnector]] = {}


def register(cls: type[SourceConnector]) -> type[SourceConnector]:
    """Class decorator: make a connector kind available to hub.yaml by its `kind` name."""
    KINDS[cls.kind] = cls
    return cls

"""Subscriber configuration: the `subscriptions` models of hub.yaml (entities, filter, projection, PII, delivery).

A subscriber (data dictionary §4) is declared by a `SubscriptionConfig`; hub.routing.policy
turns it into the `SubscriptionPolicy` that decides what the subscriber receives on
`sub.<id>.<entity>`. `DEMO_SUBSCRIPTIONS` are the demo's subscribers.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.core.config import check_id
from hub.routing.filters import compile_filter

PiiPolicy = Literal["keep", "drop", "mask", "pseudonymise"]
ENTITY_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Never a subscriber id: `eduhub-audit` was the label of the audit key (hub.routing.audit.LEGACY_LABEL),
# and audit records written then are still read with it.
RESERVED_IDS = frozenset({"eduhub-audit"})


def _loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: an address that never leaves this machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaDelivery(_Model):
    kind: Literal["kafka"] = Field("kafka", description="deliver to the Kafka topics sub.<id>.<entity>")


class HttpDelivery(_Model):
    kind: Literal["http"] = Field(description="deliver by HTTP POST to the subscriber's endpoint")
    url: str = Field(description="the subscriber's endpoint, an https:// URL (http:// only on a loopback address: "
                     "localhost, 127.0.0.1, ::1)")
    secret_env: str = Field(
        description="name of the environment variable holding the signing secret, e.g. EDUHUB_SUB_PARENT_APP_SECRET"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="how long one POST may take, seconds")
    max_attempts: int = Field(
        8, ge=1, le=1000, description="answered failures (non-2xx other than 408/425/429/502/503/504) before the "
        "event goes to the subscriber's DLQ hub.dlq.sub.<id>")
    backoff_initial_s: float = Field(0.5, gt=0, le=3600, description="first retry delay, seconds (doubles each "
                                     "retry, with full jitter)")
    backoff_max_s: float = Field(60.0, gt=0, le=3600, description="longest retry delay, seconds")
    breaker_failures: int = Field(5, ge=1, le=1000, description="consecutive failures that open the circuit breaker")
    breaker_open_s: float = Field(30.0, gt=0, le=3600, description="how long the open breaker stops all sending "
                                  "before one probe request, seconds")
    max_in_flight: int = Field(16, ge=1, le=1000, description="keys delivered in parallel (each key in order)")
    batch_max_records: int = Field(500, ge=1, le=100_000, description="records fetched from Kafka per poll")
    max_buffered: int = Field(10_000, ge=1, le=1_000_000, description="records fetched but not yet delivered; "
                              "fetching pauses above it (memory bound while the subscriber is slow or down)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https:// and name a host")
        parts = urlsplit(value)
        if parts.scheme.lower() == "http" and not _loopback(parts.hostname or ""):
            # Events carry personal data and their signatures would be readable on the way: TLS or nothing.
            raise ValueError(f"{value} is plain http:// to a host that is not this machine — events would cross the "
                             f"network unencrypted; use https://{value.split('://', 1)[1]} (http:// is only allowed "
                             "on a loopback address: localhost, 127.0.0.1, ::1)")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError("must be an environment variable name, upper-case letters, digits and _")
        return value


Delivery = Annotated[Union[KafkaDelivery, HttpDelivery], Field(discriminator="kind")]


class SubscriptionConfig(_Model):
    id: str = Field(description="subscriber id, ^[a-z0-9][a-z0-9-]{1,39}$; its topics are sub.<id>.<entity>")
    entities: list[str] = Field(
        min_length=1, description='entity names such as school.score, or ["*"] for every entity of the catalogue'
    )
    filter: str | None = Field(
        None, description='optional row filter, e.g. school_code == "HP031" and grade in [10, 11, 12]'
    )
    fields: dict[str, list[str]] | None = Field(
        None, description="optional projection: entity → top-level fields to keep (key fields are always kept)"
    )
    pii: dict[str, PiiPolicy] = Field(
        default_factory=dict, description="PII field name → keep, drop, mask or pseudonymise"
    )
    pii_default: PiiPolicy = Field("drop", description="policy of PII fields not listed under pii: keep, drop, "
                                                       "mask or pseudonymise")
    delivery: Delivery = Field(
        default_factory=KafkaDelivery,
        description='{"kind": "kafka"} or {"kind": "http", "url": ..., "secret_env": ...}',
    )
    kafka_principal: str | None = Field(
        None, pattern=r"^User:[^\s;,]+$",
        description="Kafka principal of a Kafka subscriber, for `eduhub acl` (default User:sub-<id>)",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved: before the audit key had a domain of its own, the audit "
                             "trail's references were this id's pseudonyms; choose another id")
        return check_id(value)

    @field_validator("entities")
    @classmethod
    def _entities(cls, value: list[str]) -> list[str]:
        if "*" in value and value != ["*"]:
            raise ValueError('"*" stands for every entity and must be the only item')
        for name in value:
            if name != "*" and not ENTITY_NAME.match(name):
                raise ValueError(f"{name!r} is not an entity name like school.student")
        if len(set(value)) != len(value):
            raise ValueError("an entity is listed twice")
        return value

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is not None:
            compile_filter(value)  # a SubscriptionError is a ValueError: pydantic reports it under `filter`
        return value



DEMO_SUBSCRIPTIONS: list[dict[str, Any]] = [
    {   # the Ministry's sector database sync: everything, in clear (it is the system of record)
        "id": "moet-sync",
        "entities": ["*"],
        "pii_default": "keep",
    },
    {   # the exam management system
        "id": "exam-mgmt",
        "entities": ["exam.registration", "exam.result"],
        "pii_default": "keep",
    },
    {   # the admission results portal: names shown as initials, no birth date, applicant pseudonymous
        "id": "admission-results",
        "entities": ["enrollment.application", "enrollment.result"],
        "pii": {"full_name": "mask", "applicant_id": "pseudonymise", "date_of_birth": "drop"},
        "pii_default": "drop",
        "delivery": {"kind": "http", "url": "https://tuyensinh.haiphong.edu.vn/api/hub/events",
                     "secret_env": "EDUHUB_SUB_ADMISSION_RESULTS_SECRET"},
    },
    {   # the Department's analytics warehouse: no direct identifiers
        "id": "analytics",
        "entities": ["*"],
        "pii": {"full_name": "drop", "phone": "drop", "guardian_phone": "drop", "email": "drop",
                "address": "mask", "date_of_birth": "mask"},
        "pii_default": "pseudonymise",
    },
    {   # the parent-notification app: scores and term results, no personal ID
        "id": "parent-app",
        "entities": ["school.score", "school.term_result"],
        "fields": {"school.score": ["school_code", "school_year", "term", "subject", "kind", "seq", "score",
                                    "pass_result", "recorded_at"]},
        "pii": {"student_id": "pseudonymise"},
        "pii_default": "drop",
        "delivery": {"kind": "http", "url": "https://phuhuynh.haiphong.edu.vn/api/hub/events",
                     "secret_env": "EDUHUB_SUB_PARENT_APP_SECRET"},
    },
]

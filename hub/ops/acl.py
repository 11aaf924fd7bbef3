"""Least privilege on Kafka: the ACLs hub.yaml implies (`eduhub acl plan`), created with confluent-kafka (`apply`).

`plan(config)` is a pure function of the config: who (principal) may do what (operation) on which
resource (a topic, group or transactional id, literal or prefixed, or the cluster). Everything else
is denied, since the broker runs with `allow.everyone.if.no.acl.found=false`; operators configured
as `super.users` need no ACL but get them anyway, so the plan is the same on any cluster.

- a connector's principal (`kafka_username`) writes its `ingest.<source>` and its offsets to
  `hub.connect.offsets` (a connector without one runs as the hub, which then gets those rights);
- a Kafka subscriber (`User:sub-<id>`, or its `kafka_principal`) reads `sub.<id>.*` in groups `sub.<id>.*`;
- the hub reads the ingest topics, owns `edu.*`, writes `sub.*`, `hub.dlq.*` and `hub.audit` (never
  reads them), uses groups, transactional ids and changelogs `eduhub-*`, creates its topics;
- operators read `hub.dlq.*` and `hub.audit`, and replay dead letters to `ingest.*`.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from hub.contract.topics import (AUDIT_TOPIC, CANONICAL_PREFIX, DLQ_PREFIX, INGEST_PREFIX, REPLAYS_TOPIC,
                                 SUBSCRIBER_PREFIX, ingest_topic)
from hub.core.config import HubConfig

HUB_PREFIX = "eduhub-"  # the worker's groups, transactional ids and dedup changelogs (APP_ID "eduhub")
CLUSTER = "kafka-cluster"  # the name Kafka gives the cluster resource


@dataclass(frozen=True, order=True)
class Binding:
    """One ALLOW ACL: `principal` may do `operation` on the resource; `why` is for people, not Kafka."""

    principal: str
    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER
    pattern_type: str  # LITERAL, PREFIXED
    resource_name: str
    operation: str  # READ, WRITE, DESCRIBE, CREATE, IDEMPOTENT_WRITE
    why: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What Kafka stores (host * and ALLOW are implied): two bindings with one key are one ACL."""
        return self.principal, self.resource_type, self.pattern_type, self.resource_name, self.operation


def hub_principal(config: HubConfig) -> str:
    username = getattr(config.kafka, "username", None)
    return config.acl.hub_principal or (f"User:{username}" if username else "User:hub")


def connector_principal(connector: dict, config: HubConfig) -> str:
    """A connector's own SASL user, or the hub's principal when it has none (it then runs as the hub)."""
    username = connector.get("kafka_username")
    return f"User:{username}" if username else hub_principal(config)


def subscriber_principal(subscription: dict) -> str:
    return subscription.get("kafka_principal") or f"User:sub-{subscription['id']}"


def is_kafka_subscriber(subscription: dict) -> bool:
    """Kafka subscribers read their topics themselves; HTTP ones never touch Kafka (the hub reads for them)."""
    return (subscription.get("delivery") or {}).get("kind", "kafka") == "kafka"


def plan(config: HubConfig) -> list[Binding]:
    """Every ACL that hub.yaml implies, without duplicates, sorted by principal and resource."""
    hub = hub_principal(config)
    offsets = config.connect.offsets_topic
    out: list[Binding] = []

    def allow(principal: str, rtype: str, pattern: str, name: str, ops: Iterable[str], why: str) -> None:
        out.extend(Binding(principal, rtype, pattern, name, op, why) for op in ops)

    # The hub (worker stages; the connector runtime creates topics and reads offsets as the hub).
    allow(hub, "TOPIC", "PREFIXED", INGEST_PREFIX, ("READ", "DESCRIBE", "CREATE"), "validate reads the ingest topics")
    allow(hub, "TOPIC", "PREFIXED", CANONICAL_PREFIX, ("READ", "WRITE", "DESCRIBE", "CREATE"),
          "validate writes and route reads the canonical topics")
    allow(hub, "TOPIC", "PREFIXED", SUBSCRIBER_PREFIX, ("WRITE", "DESCRIBE", "CREATE"), "route writes subscriber topics")
    allow(hub, "TOPIC", "PREFIXED", DLQ_PREFIX, ("WRITE", "DESCRIBE", "CREATE"), "dead letters: write, never read")
    allow(hub, "TOPIC", "LITERAL", AUDIT_TOPIC, ("WRITE", "DESCRIBE", "CREATE"), "the audit trail: write, never read")
    allow(hub, "TOPIC", "LITERAL", offsets, ("READ", "DESCRIBE", "CREATE"), "the connector runtime reads offsets")
    allow(hub, "TOPIC", "PREFIXED", HUB_PREFIX, ("READ", "WRITE", "DESCRIBE", "CREATE"), "dedup changelogs")
    allow(hub, "GROUP", "PREFIXED", HUB_PREFIX, ("READ",), "the stages' consumer groups")
    allow(hub, "TRANSACTIONAL_ID", "PREFIXED", HUB_PREFIX, ("WRITE", "DESCRIBE"), "the stages' transactions")
    allow(hub, "CLUSTER", "LITERAL", CLUSTER, ("IDEMPOTENT_WRITE",), "idempotent producers")
    for subscription in config.subscriptions:
        if not is_kafka_subscriber(subscription):
            allow(hub, "TOPIC", "PREFIXED", f"{SUBSCRIBER_PREFIX}{subscription['id']}.", ("READ",),
                  f"HTTP delivery reads {subscription['id']}'s queue")

    for connector in config.connectors:
        principal = connector_principal(connector, config)
        why = f"connector {connector.get('name')}"
        allow(principal, "TOPIC", "LITERAL", ingest_topic(connector["source"]), ("WRITE", "DESCRIBE"), why)
        allow(principal, "TOPIC", "LITERAL", offsets, ("WRITE", "DESCRIBE"), f"{why}: its source offsets")
        allow(principal, "CLUSTER", "LITERAL", CLUSTER, ("IDEMPOTENT_WRITE",), f"{why}: idempotent producer")

    for subscription in config.subscriptions:
        if is_kafka_subscriber(subscription):
            principal, prefix = subscriber_principal(subscription), f"{SUBSCRIBER_PREFIX}{subscription['id']}."
            why = f"subscriber {subscription['id']}"
            allow(principal, "TOPIC", "PREFIXED", prefix, ("READ", "DESCRIBE"), f"{why}: its topics only")
            allow(principal, "GROUP", "PREFIXED", prefix, ("READ",), f"{why}: its own consumer groups")

    for operator in config.acl.operators:
        allow(operator, "TOPIC", "PREFIXED", DLQ_PREFIX, ("READ", "DESCRIBE"), "operators read dead letters")
        allow(operator, "TOPIC", "LITERAL", AUDIT_TOPIC, ("READ", "DESCRIBE"), "operators read the audit trail")
        allow(operator, "TOPIC", "LITERAL", REPLAYS_TOPIC, ("WRITE", "CREATE"), "`eduhub dlq replay` records replays")
        allow(operator, "TOPIC", "PREFIXED", INGEST_PREFIX, ("WRITE", "DESCRIBE"), "`eduhub dlq replay` republishes")
        allow(operator, "CLUSTER", "LITERAL", CLUSTER, ("IDEMPOTENT_WRITE",), "`eduhub dlq replay`")

    unique: dict[tuple, Binding] = {}
    for binding in out:
        unique.setdefault(binding.key, binding)  # the first reason given wins
    return sorted(unique.values())


def principals(config: HubConfig) -> dict[str, str]:
    """Every principal of the plan → a short role, for creating users (`eduhub local up --secure`)."""
    roles = {hub_principal(config): "the hub (worker, connector runtime's topics and offsets)"}
    for connector in config.connectors:
        roles.setdefault(connector_principal(connector, config), f"connector {connector.get('name')}")
    for subscription in config.subscriptions:
        if is_kafka_subscriber(subscription):
            roles.setdefault(subscriber_principal(subscription), f"Kafka subscriber {subscription['id']}")
    for operator in config.acl.operators:
        roles.setdefault(operator, "operator")
    return roles


def table(bindings: list[Binding]) -> list[str]:
    """The plan as aligned text lines, one per binding."""
    rows = [("PRINCIPAL", "RESOURCE", "PATTERN", "NAME", "OPERATION", "WHY")]
    rows += [(b.principal, b.resource_type, b.pattern_type, b.resource_name, b.operation, b.why) for b in bindings]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[5] for row in rows]


def as_json(bindings: list[Binding]) -> str:
    return json.dumps([asdict(b) for b in bindings], indent=2, ensure_ascii=False)


def _to_confluent(binding: Binding):
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    # librdkafka calls Kafka's CLUSTER resource type BROKER (the same code, 4).
    rtype = "BROKER" if binding.resource_type == "CLUSTER" else binding.resource_type
    return AclBinding(ResourceType[rtype], binding.resource_name,
                      ResourcePatternType[binding.pattern_type], binding.principal, "*",
                      AclOperation[binding.operation], AclPermissionType.ALLOW)


def _key_of(acl) -> tuple[str, str, str, str, str] | None:
    """The key of an ALLOW ACL for any host as the broker lists it; None for others (not ours to compare)."""
    if acl.permission_type.name != "ALLOW" or acl.host != "*":
        return None
    rtype = "CLUSTER" if acl.restype.name == "BROKER" else acl.restype.name
    return acl.principal, rtype, acl.resource_pattern_type.name, acl.name, acl.operation.name


class AclError(Exception):
    """The broker could not be reached, refused the admin's credentials, or refused to create an ACL."""


def apply(bindings: list[Binding], admin_config: dict, timeout_s: float = 20.0,
          describe: str = "") -> list[Binding]:
    """Create the bindings the broker does not have yet (idempotent); returns the ones added.

    `admin_config` is a librdkafka config (bootstrap.servers, security.protocol, sasl.*, ssl.ca.location)
    of a principal allowed to create ACLs: a super user such as User:admin. `describe` names the
    listener and the principal in errors ("SASL_SSL 127.0.0.1:9092 as User:admin"), never the password.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)

    describe = describe or admin_config.get("bootstrap.servers", "")
    refused: list[str] = []
    seen: list[str] = []

    def on_error(error) -> None:  # a refused login or TLS handshake arrives here, not in the futures
        seen.append(error.str())
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            refused.append(error.str())

    # librdkafka's own log lines would repeat on stderr what error_cb reports.
    admin = AdminClient({**admin_config, "error_cb": on_error, "log_level": 0})

    def wait(future):
        deadline = time.monotonic() + timeout_s
        while True:
            admin.poll(0)  # serves error_cb
            if refused:
                raise AclError(f"Kafka refused {describe}: {refused[0]}")
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if time.monotonic() > deadline:
                    last = f": {seen[-1]}" if seen else ""
                    raise AclError(f"no answer from Kafka ({describe}) in {timeout_s:.0f} s{last}") from None
            except KafkaException as exc:
                raise AclError(f"{describe}: {exc.args[0].str() if exc.args else exc}") from None

    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    have = {k for k in map(_key_of, wait(admin.describe_acls(everything, request_timeout=timeout_s)))
            if k is not None}
    missing = [b for b in bindings if b.key not in have]
    if missing:
        for future in admin.create_acls([_to_confluent(b) for b in missing], request_timeout=timeout_s).values():
            wait(future)
    return missing


def admin_config(config: HubConfig, username: str | None, password: str | None) -> tuple[dict, str]:
    """librdkafka settings for `username` on the brokers and TLS of hub.yaml's `kafka`, and how to name the
    connection in messages ("SASL_SSL 127.0.0.1:9092 as User:admin")."""
    kafka = config.kafka
    protocol = getattr(kafka, "security_protocol", "PLAINTEXT")
    settings: dict = {"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": protocol}
    if protocol.endswith("SSL"):
        for key, name in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                          ("ssl_keyfile", "ssl.key.location")):
            if getattr(kafka, key, None):
                settings[name] = str(getattr(kafka, key))
        key_password = getattr(kafka, "ssl_key_password", None)
        if key_password is not None:
            settings["ssl.key.password"] = key_password.get_secret_value()
        check = getattr(kafka, "ssl_check_hostname", True)
        settings["ssl.endpoint.identification.algorithm"] = "https" if check else "none"
    who = "User:ANONYMOUS"
    if protocol.startswith("SASL_"):
        settings.update({"sasl.mechanism": getattr(kafka, "sasl_mechanism", "SCRAM-SHA-512"),
                         "sasl.username": username or "", "sasl.password": password or ""})
        who = f"User:{username}"
    return settings, f"{protocol} listener {kafka.bootstrap_servers} as {who}"

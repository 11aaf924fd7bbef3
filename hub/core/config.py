"""The `hub.yaml` model: every key declared once, validated at start-up, overridable by env."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")


def check_id(value: str) -> str:
    """A source or subscriber id: it becomes part of topic names, so lower-case letters, digits, hyphen."""
    if not SOURCE_ID.match(value):
        raise ValueError("must match ^[a-z0-9][a-z0-9-]{1,39}$ (lower-case letters, digits, hyphen)")
    return value

# Environment variables that override a key of hub.yaml: endpoints and secrets belong to the
# environment a hub runs in, not to the file checked into a repository.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "EDUHUB_KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "EDUHUB_KAFKA_USERNAME": ("kafka", "username"),
    "EDUHUB_KAFKA_PASSWORD": ("kafka", "password"),
    "EDUHUB_KAFKA_SSL_KEY_PASSWORD": ("kafka", "ssl_key_password"),
    "EDUHUB_REGISTRY_URL": ("registry", "url"),
    "EDUHUB_REGISTRY_USERNAME": ("registry", "username"),
    "EDUHUB_REGISTRY_PASSWORD": ("registry", "password"),
    "EDUHUB_WORKER_INSTANCE_ID": ("worker", "instance_id"),
    "EDUHUB_WORKER_STATE_DIR": ("worker", "state_dir"),
    "EDUHUB_WEB_HOST": ("worker", "web_host"),
    "EDUHUB_WEB_PORT": ("worker", "web_port"),
    "EDUHUB_CONNECT_URL": ("worker", "connect_url"),
    "EDUHUB_CONNECT_HOST": ("connect", "host"),
    "EDUHUB_CONNECT_ALLOWED_HOSTS": ("connect", "allowed_hosts"),
    "EDUHUB_LOCAL_KAFKA_PORT": ("local", "kafka_port"),
    "EDUHUB_LOCAL_REGISTRY_PORT": ("local", "registry_port"),
    "EDUHUB_LOCAL_STATE_DIR": ("local", "state_dir"),
}


class ConfigError(Exception):
    """hub.yaml or the environment holds a value the hub cannot start with."""


class _Section(BaseModel):
    # A misspelt key must fail loudly, not fall back to a default silently.
    model_config = ConfigDict(extra="forbid")


class KafkaConfig(_Section):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="comma-separated host:port list of Kafka brokers, e.g. 127.0.0.1:9092",
    )
    ingest_partitions: int = Field(
        12, ge=1, le=1000, description="partitions of each ingest.<source> topic the hub creates (1-1000)"
    )
    canonical_partitions: int = Field(
        12, ge=1, le=1000, description="partitions of each edu.<domain>.<entity> topic the hub creates (1-1000)"
    )
    replication_factor: int = Field(
        1, ge=1, le=10, description="replication factor of topics the hub creates (3 on a production cluster)"
    )
    dlq_retention_days: int = Field(
        30, ge=1, le=3650, description="days a dead letter is kept in the hub.dlq.* topics the hub creates "
        "(they hold the original records, personal data included: keep it no longer than needed to fix and replay)"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every client reaches the brokers: PLAINTEXT (the embedded local broker), SSL, "
        "SASL_PLAINTEXT or SASL_SSL (SCRAM over TLS: production)")
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism with SASL_*: SCRAM-SHA-512 or SCRAM-SHA-256")
    username: str | None = Field(None, min_length=1, description="the hub's SASL user (worker and CLI tools), "
                                 "needed with SASL_*; a connector may have its own (kafka_username)")
    password: SecretStr | None = Field(None, description="the SASL password: set EDUHUB_KAFKA_PASSWORD, never hub.yaml")
    ssl_cafile: Path | None = Field(None, description="PEM file of the CA that signed the brokers' certificates, "
                                    "with SSL/SASL_SSL (default: the system's CAs)")
    ssl_certfile: Path | None = Field(None, description="PEM client certificate, for brokers that require one "
                                      "(with ssl_keyfile)")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile")
    ssl_key_password: SecretStr | None = Field(None, description="password of an encrypted ssl_keyfile: set "
                                               "EDUHUB_KAFKA_SSL_KEY_PASSWORD")
    ssl_check_hostname: bool = Field(True, description="check that a broker's certificate names the host connected "
                                     "to (keep true outside tests)")

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts(cls, value: str) -> str:
        for part in value.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{part.strip()!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        problems = []
        protocol = self.security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        # keys set away from their default that this protocol ignores (a dumped config round-trips)
        changed = {k for k in self.model_fields_set if getattr(self, k) != type(self).model_fields[k].default}
        unused = [k for k in ("sasl_mechanism", "username", "password") if not sasl and k in changed]
        unused += [k for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password", "ssl_check_hostname")
                   if not tls and k in changed]
        if unused:
            names = ", ".join("kafka.password (EDUHUB_KAFKA_PASSWORD)" if k == "password" else
                              "kafka.ssl_key_password (EDUHUB_KAFKA_SSL_KEY_PASSWORD)" if k == "ssl_key_password"
                              else f"kafka.{k}" for k in unused)
            problems.append(f"kafka.security_protocol is {protocol}, which does not use {names}: remove them, or "
                            f"set kafka.security_protocol to one that does (SASL_SSL: SCRAM over TLS)")
        if sasl and not self.username:
            problems.append(f"kafka.username: kafka.security_protocol is {protocol}: set the hub's SASL user")
        if sasl and self.password is None:
            problems.append(f"kafka.password: kafka.security_protocol is {protocol}: set the environment variable "
                            f"EDUHUB_KAFKA_PASSWORD to the password of kafka.username")
        if tls:
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                path = getattr(self, key)
                if path is not None and not path.is_file():
                    problems.append(f"kafka.{key}: {path} does not exist or is not a file")
                elif path is not None and not os.access(path, os.R_OK):
                    problems.append(f"kafka.{key}: {path} is not readable by this user")
            if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
                problems.append("kafka.ssl_certfile and kafka.ssl_keyfile: set both (a client certificate and its "
                                "private key) or neither")
            if self.ssl_key_password is not None and self.ssl_keyfile is None:
                problems.append("kafka.ssl_key_password (EDUHUB_KAFKA_SSL_KEY_PASSWORD): set without "
                                "kafka.ssl_keyfile")
        if problems:
            raise ValueError("\n    ".join(problems))
        return self


class RegistryConfig(_Section):
    url: str = Field(
        "http://127.0.0.1:8081/apis/ccompat/v7",
        description="base URL of a Confluent-compatible schema registry API "
        "(Apicurio: http://HOST:PORT/apis/ccompat/v7; Confluent: http://HOST:8081)",
    )
    username: str | None = Field(None, description="basic-auth user for the registry, if it needs one")
    password: SecretStr | None = Field(None, description="basic-auth password (set EDUHUB_REGISTRY_PASSWORD)")
    auto_register: bool = Field(
        True, description="register the catalogue's schemas at worker start (false: they must already be there)"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="registry HTTP timeout in seconds")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https:// and name a host")
        return value.rstrip("/")


class WorkerConfig(_Section):
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="name of this worker on the status page (default: the host "
        "name); fencing no longer depends on it: each partition's transactional id is the same on every worker",
    )
    web_host: str = Field("127.0.0.1", description="address the worker's HTTP server binds")
    web_port: int = Field(6066, ge=1, le=65535, description="port of /metrics, /healthz, /readyz and the status page")
    batch_max_records: int = Field(
        20_000, ge=1, le=100_000, description="most records the validate stage reads and commits in one transaction"
    )
    batch_max_wait_ms: int = Field(
        50, ge=0, le=10_000, description="longest the validate stage waits to fill a batch, in ms"
    )
    connect_url: str | None = Field(
        None, pattern=r"^https?://[^/\s]+",
        description="where the status page asks the connector runtime for connector states, e.g. "
        "http://connect:8083 (default: connect.host and connect.port)",
    )
    dedup_window_s: int = Field(
        7 * 24 * 3600, ge=0, le=90 * 24 * 3600,
        description="seconds during which a repeated event_id is dropped (default 7 days; 0 turns dedup off)",
    )
    state_dir: Path = Field(Path(".eduhub/state"), description="folder of the worker's local state, the dedup "
                            "window's store (in <state_dir>/<instance_id>/dedup; relative to the working directory): "
                            "local disk, one per worker, never shared between hosts")
    shutdown_timeout_s: float = Field(
        30.0, ge=1, le=600,
        description="longest a worker takes to stop after SIGTERM/SIGINT; past it the process exits at once "
        "(open transactions abort, nothing is lost)",
    )
    stall_timeout_s: float = Field(
        120.0, ge=5, le=3600,
        description="/healthz fails when a stage's loop has not turned for this many seconds (a stalled stage)",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain of the worker's web server (status "
                                       "page, /metrics, /healthz, /readyz); with tls_key_file it serves HTTPS")
    tls_key_file: Path | None = Field(None, description="PEM private key (unencrypted) of tls_cert_file")
    connect_ca_file: Path | None = Field(
        None, description="PEM CA bundle that verifies the connector runtime's HTTPS certificate (status page and "
        "`eduhub connectors`; default: the system's CAs)",
    )


class SourceConfig(_Section):
    id: str = Field(description="source system id, ^[a-z0-9][a-z0-9-]{1,39}$; its events arrive on ingest.<id>")
    description: str = Field("", description="what the system is, for operators")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if value == "route":  # hub.dlq.route holds the route stage's dead letters
            raise ValueError("'route' is reserved (hub.dlq.route is the route stage's dead-letter topic): "
                             "choose another source id")
        return check_id(value)


class LocalConfig(_Section):
    kafka_port: int = Field(9092, ge=1, le=65535, description="port of the local broker (`eduhub local up`)")
    controller_port: int = Field(9093, ge=1, le=65535, description="port of the local KRaft controller")
    registry_port: int = Field(8081, ge=1, le=65535, description="port of the local Apicurio registry")
    kafka_heap: str = Field("512m", pattern=r"^\d+[mg]$", description="JVM heap of the local broker, e.g. 512m")
    registry_heap: str = Field("384m", pattern=r"^\d+[mg]$", description="JVM heap of the local registry, e.g. 384m")
    state_dir: Path = Field(
        Path(".eduhub/local"),
        description="folder for the local broker's data, logs and pid file (relative to the working directory)",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "eduhub",
        description="folder where Maven-resolved jars are kept between runs, outside the repository",
    )


class ExamConfig(_Section):
    council_code: str = Field("03", pattern=r"^\d{2}$", description="two-digit exam council code of this province")


class ConnectConfig(_Section):
    host: str = Field("127.0.0.1", description="address the connector runtime's REST API binds")
    port: int = Field(8083, ge=1, le=65535, description="port of the connector runtime's REST API (as Kafka Connect)")
    token_env: str = Field(
        "EDUHUB_CONNECT_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the REST API's bearer token (at least 16 characters; "
        "`eduhub connectors` and the worker's status page send it; `make run` makes one per run)",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names the REST API answers to besides localhost, 127.0.0.1, ::1, connect.host and "
        "worker.connect_url's host, e.g. [connect.hub.internal] (Host header check against DNS rebinding)",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain of the REST API; with "
                                       "tls_key_file it serves HTTPS")
    tls_key_file: Path | None = Field(None, description="PEM private key (unencrypted) of tls_cert_file")

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return [h.strip() for h in value.split(",") if h.strip()] if isinstance(value, str) else value
    # The literal is hub.contract.topics.CONNECT_OFFSETS_TOPIC (core imports nothing of ours; a unit test checks they agree).
    offsets_topic: str = Field("hub.connect.offsets", description="compacted topic holding connectors' source offsets")


class RoutingConfig(_Section):
    key_env: str = Field("EDUHUB_PSEUDONYM_KEY", pattern=r"^[A-Z][A-Z0-9_]*$",
                         description="name of the environment variable holding the master key of pseudonyms "
                                     "and audit references (keep it secret and stable: changing it changes every pseudonym)")


class AclConfig(_Section):
    operators: list[str] = Field(
        ["User:admin"], description="Kafka principals allowed to read hub.dlq.* and hub.audit and to replay "
        "dead letters, e.g. [User:admin, User:alice] (`eduhub acl plan`)")
    hub_principal: str | None = Field(
        None, pattern=r"^User:[A-Za-z0-9._-]+$",
        description="the worker's Kafka principal (default: User:<kafka.username>, else User:hub)")


class HubConfig(_Section):
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    sources: list[SourceConfig] = Field(default_factory=list, description="registered source systems")
    local: LocalConfig = Field(default_factory=LocalConfig)
    connect: ConnectConfig = Field(default_factory=ConnectConfig)
    connectors: list[dict[str, Any]] = Field(
        default_factory=list, description="connector instances: name, kind, source and the kind's own keys")
    exam: ExamConfig = Field(default_factory=ExamConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    acl: AclConfig = Field(default_factory=AclConfig)
    subscriptions: list[dict[str, Any]] = Field(
        default_factory=list, description="subscribers: id, entities, filter, fields, pii policies, delivery")

    @field_validator("sources")
    @classmethod
    def _unique(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for source in value:
            if source.id in seen:
                raise ValueError(f"source id {source.id!r} is declared twice")
            seen.add(source.id)
        return value

    @property
    def source_ids(self) -> list[str]:
        return [s.id for s in self.sources]


def _describe(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The declared description of the key at `loc`, used as the fix in an error."""
    current: Any = model
    description = None
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return description
        info = fields[part]
        description = info.description
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        current = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return description


def format_errors(error: ValidationError, origin: str, model: type[BaseModel] | None = None,
                  prefix: str = "") -> str:
    """A pydantic error as lines naming each key (under `prefix`), what is wrong and what is expected."""
    lines = [f"{origin} is not valid:"]
    for item in error.errors():
        key = prefix + (".".join(str(p) for p in item["loc"]) or "(top level)")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (misspelt?)"
        fix = _describe(model or HubConfig, tuple(item["loc"]))
        lines.append(f"  {key}: {message}" + (f" — expected {fix}" if fix else ""))
    return "\n".join(lines)


SECRET_ENV = ("EDUHUB_KAFKA_PASSWORD", "EDUHUB_KAFKA_SSL_KEY_PASSWORD", "EDUHUB_REGISTRY_PASSWORD")


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> list[str]:
    applied = []
    for name, path in ENV_OVERRIDES.items():
        if name in environ and environ[name] != "":
            section = raw.setdefault(path[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"hub.yaml: {path[0]} must be a mapping")
            section[path[1]] = environ[name]
            applied.append(name)
    return applied


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> HubConfig:
    """Read hub.yaml (or the file EDUHUB_CONFIG names), apply env overrides, validate every key.

    >>> load_config(path=None, environ={"EDUHUB_KAFKA_BOOTSTRAP_SERVERS": "k1:9092"}).kafka.bootstrap_servers
    'k1:9092'
    """
    environ = dict(os.environ if environ is None else environ)
    if path is None and environ.get("EDUHUB_CONFIG"):
        path = environ["EDUHUB_CONFIG"]
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (set EDUHUB_CONFIG or pass --config)")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (kafka, registry, worker, sources, ...)")
        raw = loaded
    for name in SECRET_ENV:  # a file is copied, committed and shown on screens: secrets come from the environment
        section, key = ENV_OVERRIDES[name]
        if isinstance(raw.get(section), dict) and raw[section].get(key) is not None:
            raise ConfigError(f"{origin}: {section}.{key}: a secret does not belong in the config file; "
                              f"remove it and set the environment variable {name}")
    applied = _apply_env(raw, environ)
    if applied:
        origin += " + environment (" + ", ".join(applied) + ")"
    try:
        return HubConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, origin)) from None

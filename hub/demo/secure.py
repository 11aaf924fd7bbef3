"""The secure mode of the local broker: TLS files, SCRAM users and their passwords, the broker's and registry's settings."""

from __future__ import annotations

import json
import re
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from string import Template

from hub.demo.certs import BROKER_CN, TlsFiles, ensure_certificates, write_private

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"
REGISTRY = "registry"
USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# What the local registry (Apicurio, kafkasql storage, registry.id "apicurio") needs as User:registry.
# (resource type, pattern type, name, operations)
REGISTRY_ACLS = (
    ("TOPIC", "PREFIXED", "kafkasql-", ("READ", "WRITE", "DESCRIBE", "CREATE", "DESCRIBE_CONFIGS")),
    ("TOPIC", "LITERAL", "registry-events", ("WRITE", "DESCRIBE", "CREATE")),
    ("GROUP", "PREFIXED", "apicurio-", ("READ",)),
    ("CLUSTER", "LITERAL", "kafka-cluster", ("IDEMPOTENT_WRITE",)),
)


@dataclass(frozen=True)
class User:
    """A SCRAM user of the local broker, the variable its password goes to in credentials.env, and why it exists."""

    name: str
    env: str
    role: str


def env_name(username: str) -> str:
    """EDUHUB_KAFKA_PASSWORD_<NAME>: the default variable of a user's password (conn-smas → ..._CONN_SMAS)."""
    return "EDUHUB_KAFKA_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", username.upper())


BASE_USERS = (
    User(ADMIN, "EDUHUB_KAFKA_ADMIN_PASSWORD", "operator, super user (inter-broker traffic, `eduhub acl apply`)"),
    User(REGISTRY, env_name(REGISTRY), "the local Apicurio registry's kafkasql storage"),
)


def merge_properties(base: str, overrides: str) -> str:
    """`base` without the keys `overrides` sets, then `overrides`: one value per key, comments kept."""
    keys = {line.split("=", 1)[0].strip() for line in overrides.splitlines()
            if "=" in line and not line.lstrip().startswith("#")}
    kept = [line for line in base.splitlines()
            if line.lstrip().startswith("#") or "=" not in line or line.split("=", 1)[0].strip() not in keys]
    return "\n".join(kept).rstrip() + "\n\n" + overrides


class SecureSetup:
    """Everything secure mode keeps in the state folder: tls/ (CA, broker key), users.json and credentials.env.

    Passwords are random, made once per user and kept (0600) so that a restart finds the same users.
    """

    def __init__(self, state_dir: Path, users: list[User] | tuple[User, ...] = ()) -> None:
        self.state_dir = Path(state_dir)
        self.users_file = self.state_dir / "users.json"
        self.credentials_file = self.state_dir / "credentials.env"
        self.registry_properties = self.state_dir / "registry-kafka.properties"
        wanted: dict[str, User] = {}
        for user in (*BASE_USERS, *users):
            if not USERNAME.match(user.name):
                raise ValueError(f"Kafka user name {user.name!r} must match {USERNAME.pattern}")
            wanted.setdefault(user.name, user)
        self.users = list(wanted.values())

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.state_dir / "tls")

    def passwords(self) -> dict[str, str]:
        """username → password as stored (empty before `prepare`)."""
        try:
            return json.loads(self.users_file.read_text())
        except (OSError, ValueError):
            return {}

    def password(self, username: str) -> str:
        stored = self.passwords()
        if username not in stored:
            raise KeyError(f"no password for Kafka user {username!r} in {self.users_file}")
        return stored[username]

    def prepare(self) -> dict[str, str]:
        """Make the certificates and the missing passwords; write users.json and credentials.env (0600)."""
        ensure_certificates(self.tls.folder)
        stored = self.passwords()
        for user in self.users:
            stored.setdefault(user.name, secrets.token_urlsafe(24))
        write_private(self.users_file, json.dumps(stored, indent=2, sort_keys=True).encode())
        lines = ["# Kafka users of the local secure broker (`eduhub local up --secure`). Secrets: keep this file 0600.",
                 "# Load with: set -a; . " + str(self.credentials_file) + "; set +a",
                 f"# CA certificate of the listener: {self.tls.ca_cert}"]
        known = {user.name for user in self.users}
        earlier = [User(name, env_name(name), "made by an earlier `up`, not in this hub.yaml")
                   for name in sorted(stored) if name not in known]
        for user in (*self.users, *earlier):
            lines += [f"# User:{user.name}: {user.role}", f"{user.env}={stored[user.name]}"]
        write_private(self.credentials_file, ("\n".join(lines) + "\n").encode())
        return stored

    def redact(self, text: str) -> str:
        """`text` with every password replaced by ***."""
        for secret in self.passwords().values():
            text = text.replace(secret, "***")
        return text

    def format_args(self) -> list[str]:
        """StorageTool arguments that create every user at format time."""
        stored = self.passwords()
        return [arg for user in self.users
                for arg in ("--add-scram", f"{MECHANISM}=[name={user.name},password={stored[user.name]}]")]

    def server_properties(self, base: str, overrides: Template, **values) -> str:
        """server.properties for secure mode: the base file with the secure listener, TLS and authorizer keys."""
        tls = self.tls
        secure = overrides.substitute(
            **values, admin_user=ADMIN, admin_password=self.password(ADMIN), keystore=tls.keystore,
            ca_cert=tls.ca_cert, super_users=f"User:{ADMIN};User:CN={BROKER_CN}")
        return merge_properties(base, secure)

    def registry_args(self) -> list[str]:
        """JVM options that make the registry's Kafka clients use SASL_SSL as User:registry.

        The settings (password included) go to a 0600 file Quarkus reads, not to the command line.
        `apicurio.kafka.common.*` is passed to the registry's producer, consumer and admin client.
        """
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{REGISTRY}" '
                f'password="{self.password(REGISTRY)}";')
        settings = {"security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM, "sasl.jaas.config": jaas,
                    "ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.tls.ca_cert)}
        text = "".join(f"apicurio.kafka.common.{k}={v}\n" for k, v in settings.items())
        write_private(self.registry_properties, text.encode())
        return [f"-Dquarkus.config.locations={self.registry_properties.as_uri()}"]

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the local CA only, hostname check on."""
        return ssl.create_default_context(cafile=str(self.tls.ca_cert))

    def aiokafka_kwargs(self, username: str = ADMIN, password: str | None = None) -> dict:
        """Keyword arguments of an aiokafka client for `username` (default: admin) on the SASL_SSL listener."""
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM, "sasl_plain_username": username,
                "sasl_plain_password": self.password(username) if password is None else password,
                "ssl_context": self.ssl_context()}

    def confluent_config(self, bootstrap_servers: str, username: str = ADMIN) -> dict:
        """librdkafka settings of a confluent-kafka client for `username` (default: admin)."""
        return {"bootstrap.servers": bootstrap_servers, "security.protocol": "SASL_SSL",
                "sasl.mechanism": MECHANISM, "sasl.username": username, "sasl.password": self.password(username),
                "ssl.ca.location": str(self.tls.ca_cert), "ssl.endpoint.identification.algorithm": "https",
                "log_level": 3}  # errors only


def sync_users(admin_config: dict, passwords: dict[str, str], timeout_s: float = 15.0) -> list[str]:
    """Create on a running broker the SCRAM users of `passwords` it does not know yet; returns their names.

    A user added to hub.yaml after the first `eduhub local up --secure` is created here, not by StorageTool.
    """
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)

    admin = AdminClient(admin_config)
    known = set()
    for name, future in admin.describe_user_scram_credentials(list(passwords)).items():
        try:
            future.result(timeout=timeout_s)
            known.add(name)
        except Exception as exc:  # RESOURCE_NOT_FOUND for a user without credentials
            if "RESOURCE_NOT_FOUND" not in str(exc) and "not found" not in str(exc).lower():
                raise
    missing = sorted(set(passwords) - known)
    if missing:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upserts = [UserScramCredentialUpsertion(name, info, passwords[name].encode()) for name in missing]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result(timeout=timeout_s)
    return missing


def grant_registry(admin_config: dict, timeout_s: float = 15.0) -> None:
    """Create the registry's ACLs (idempotent: creating an existing binding is a no-op in Kafka)."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                       ResourceType)

    # confluent-kafka (librdkafka) calls Kafka's CLUSTER resource type BROKER (the same code, 4).
    bindings = [AclBinding(ResourceType["BROKER" if rtype == "CLUSTER" else rtype], name, ResourcePatternType[pattern], f"User:{REGISTRY}", "*",
                           AclOperation[op], AclPermissionType.ALLOW)
                for rtype, pattern, name, ops in REGISTRY_ACLS for op in ops]
    admin = AdminClient(admin_config)  # kept referenced until every future is done
    for future in admin.create_acls(bindings).values():
        future.result(timeout=timeout_s)

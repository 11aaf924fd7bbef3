"""Kafka client options from hub.yaml (TLS, SASL/SCRAM, principal) and fail-fast on refused credentials."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (AuthenticationFailedError, IllegalSaslStateError, KafkaConnectionError, KafkaError,
                             SaslAuthenticationFailed, UnsupportedSaslMechanismError)
from pydantic import SecretStr

from hub.core.config import ConfigError

if TYPE_CHECKING:
    from hub.core.config import KafkaConfig

log = logging.getLogger(__name__)
PASSWORD_ENV = "EDUHUB_KAFKA_PASSWORD"
DIAGNOSE_TIMEOUT_S = 10.0


class KafkaSecurityError(ConfigError):
    """The broker refused this client's credentials or TLS: a configuration error, fatal at start-up.

    Names the listener and the principal, never a secret."""


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


@dataclass(frozen=True)
class KafkaClients:
    """How every Kafka client of the hub connects: the brokers, TLS and SASL settings, one principal.

    Built once from `kafka:` of hub.yaml (`from_config`), or with another principal for a connector
    (`as_principal`); `options()` are the keyword arguments of every aiokafka client, `describe()` what
    logs and errors show ("SASL_SSL 10.0.0.5:9094 as User:eduhub", never the password).

    >>> KafkaClients.plain("127.0.0.1:9092").describe()
    'PLAINTEXT 127.0.0.1:9092 as User:ANONYMOUS'
    """

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: SecretStr | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    # where the principal's credentials are set, for the message of a refusal
    credentials: str = f"kafka.username and {PASSWORD_ENV}"

    @classmethod
    def plain(cls, bootstrap_servers: str) -> KafkaClients:
        """No TLS, no SASL: the embedded local broker and the tests' default."""
        return cls(bootstrap_servers)

    @classmethod
    def from_config(cls, kafka: KafkaConfig) -> KafkaClients:
        """The hub's own connection (worker stages, CLI tools); ConfigError when a TLS file cannot be loaded."""
        clients = cls(
            bootstrap_servers=kafka.bootstrap_servers, security_protocol=kafka.security_protocol,
            sasl_mechanism=kafka.sasl_mechanism, username=kafka.username, password=kafka.password,
            ssl_cafile=None if kafka.ssl_cafile is None else str(kafka.ssl_cafile),
            ssl_certfile=None if kafka.ssl_certfile is None else str(kafka.ssl_certfile),
            ssl_keyfile=None if kafka.ssl_keyfile is None else str(kafka.ssl_keyfile),
            ssl_key_password=kafka.ssl_key_password, ssl_check_hostname=kafka.ssl_check_hostname)
        clients.ssl_context  # noqa: B018 — load the CA and the client certificate now, not at the first connection
        return clients

    def as_principal(self, username: str, password: SecretStr, credentials: str) -> KafkaClients:
        """The same brokers and TLS with another SASL principal (a connector's own); `credentials`
        names where its user and password are set, for the message of a refusal."""
        return dataclasses.replace(self, username=username, password=password, credentials=credentials)

    def at(self, bootstrap_servers: str | None) -> KafkaClients:
        """The same security settings on other brokers (a Debezium topic on another cluster); None: these."""
        if not bootstrap_servers or bootstrap_servers == self.bootstrap_servers:
            return self
        return dataclasses.replace(self, bootstrap_servers=bootstrap_servers)

    @property
    def sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def principal(self) -> str:
        """Who the broker sees: the SASL user, the client certificate's subject, or ANONYMOUS."""
        if self.sasl:
            return f"User:{self.username}"
        if self.tls and self.ssl_certfile:
            return f"the client certificate {self.ssl_certfile}"
        return "User:ANONYMOUS"

    def describe(self) -> str:
        return f"{self.security_protocol} {self.bootstrap_servers} as {self.principal}"

    def __str__(self) -> str:
        return self.describe()

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every connection shares: the CA (or the system's), the client certificate if
        any, hostname check; None without TLS."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"kafka.ssl_cafile: cannot load {self.ssl_cafile} as PEM CA certificates ({exc})") from None
        if self.ssl_certfile:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password=_secret(self.ssl_key_password))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"kafka.ssl_certfile / kafka.ssl_keyfile: cannot load the client certificate "
                                  f"{self.ssl_certfile} with its key {self.ssl_keyfile} ({exc}; an encrypted key "
                                  f"needs EDUHUB_KAFKA_SSL_KEY_PASSWORD)") from None
        context.check_hostname = self.ssl_check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and AIOKafkaAdminClient."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers,
                                   "security_protocol": self.security_protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context
        if self.sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=_secret(self.password))
        return options

    def producer(self, **kwargs: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.options(), **kwargs)

    def consumer(self, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.options(), **kwargs)

    def admin(self, **kwargs: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.options(), **kwargs)

    async def start(self, client: Any) -> None:
        """Start an aiokafka client; a refused login or TLS handshake raises KafkaSecurityError (fatal:
        retrying cannot help), an unreachable broker the client's own error (worth retrying)."""
        try:
            await client.start()
        except KafkaConnectionError:
            refused = await self.diagnose()
            if refused is not None:
                await _close(client)
                raise refused from None
            raise

    def _hosts(self) -> list[tuple[str, int]]:
        hosts = []
        for part in self.bootstrap_servers.split(","):
            host, _, port = part.strip().rpartition(":")
            hosts.append((host.strip("[]"), int(port)))
        return hosts

    async def diagnose(self, timeout_s: float = DIAGNOSE_TIMEOUT_S) -> KafkaSecurityError | None:
        """Why no bootstrap broker would talk to us, when the reason is our credentials or TLS; None when
        a broker accepts this client or none can be reached (aiokafka's start() hides the cause)."""
        from aiokafka.conn import create_conn

        options = self.options()
        options.pop("bootstrap_servers")
        for host, port in self._hosts():
            listener = f"{self.security_protocol} listener {host}:{port}"
            try:
                conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(timeout_s * 1000),
                                                          **options), timeout_s)
            except (SaslAuthenticationFailed, AuthenticationFailedError):
                return KafkaSecurityError(f"Kafka refused {self.principal} on {listener}: authentication failed "
                                          f"(check {self.credentials}; kafka.sasl_mechanism is {self.sasl_mechanism})")
            except (UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
                return KafkaSecurityError(f"Kafka {listener} does not accept SASL {self.sasl_mechanism} for "
                                          f"{self.principal}: {exc} (check kafka.security_protocol and "
                                          f"kafka.sasl_mechanism)")
            except ssl.SSLCertVerificationError as exc:
                return KafkaSecurityError(f"TLS verification of Kafka {listener} failed for {self.principal}: "
                                          f"{exc.verify_message} (check kafka.ssl_cafile, and that the broker's "
                                          f"certificate names {host}; kafka.ssl_check_hostname)")
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                continue  # the connection closed mid-handshake: a broker going down, not our settings
            except ssl.SSLError as exc:
                return KafkaSecurityError(f"TLS handshake with Kafka {listener} failed for {self.principal}: "
                                          f"{exc.reason or exc} (check kafka.security_protocol, kafka.ssl_certfile "
                                          f"and kafka.ssl_keyfile)")
            except (OSError, KafkaError, asyncio.TimeoutError):
                continue
            conn.close()
            return None
        return None


async def _close(client: Any) -> None:
    close = getattr(client, "stop", None) or getattr(client, "close", None)
    try:
        await asyncio.wait_for(close(), 5.0)
    except Exception as exc:  # noqa: BLE001 — a half-started client: closing is best effort
        log.debug("closing a refused client: %r", exc)

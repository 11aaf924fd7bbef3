"""Kafka security settings: validation naming the key, the TLS/SASL options of every client, refusals that fail
fast naming listener and principal, and secrets that never show."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.core.config import ConfigError, load_config
from hub.kafka.clients import KafkaClients, KafkaSecurityError

PASSWORD = "pw-Zq81-never-shown"
KEY_PASSWORD = "keypw-Lx44-never-shown"
ROOT = Path(__file__).resolve().parents[2]


# --- throwaway TLS files ---------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, hosts: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, password: str | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict[str, Path]:
    """A CA, a broker certificate for 127.0.0.1/localhost, a client certificate (key encrypted), another CA."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {"ca": _pem(_cert("test-ca", ca_key, "test-ca", ca_key, ca=True)),
             "other_ca": _pem(_cert("other-ca", other_key, "other-ca", other_key, ca=True))}
    for name, hosts in (("broker", ("127.0.0.1", "localhost")), ("elsewhere", ("broker.example",))):
        key = ec.generate_private_key(ec.SECP256R1())
        files[name] = _pem(_cert(f"{name}", key, "test-ca", ca_key, ca=False, hosts=hosts))
        files[f"{name}_key"] = _key_pem(key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    files["client"] = _pem(_cert("conn-smas", client_key, "test-ca", ca_key, ca=False))
    files["client_key"] = _key_pem(client_key, KEY_PASSWORD)
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def _config(tmp_path: Path, kafka: str, environ: dict[str, str] | None = None, extra: str = ""):
    path = tmp_path / "hub.yaml"
    path.write_text("kafka:\n" + "".join(f"  {line}\n" for line in kafka.strip().splitlines()) + extra)
    return load_config(path, environ=environ or {})


def _refused(tmp_path: Path, kafka: str, environ: dict[str, str] | None = None, extra: str = "") -> str:
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, kafka, environ, extra)
    return str(error.value)


# --- validation at start-up ------------------------------------------------------------------------

def test_every_bad_combination_names_the_key_and_the_fix(tmp_path, tls):
    assert "kafka.username" in _refused(tmp_path, "username: hub")
    text = _refused(tmp_path, "security_protocol: PLAINTEXT", {"EDUHUB_KAFKA_PASSWORD": PASSWORD})
    assert "kafka.password (EDUHUB_KAFKA_PASSWORD)" in text and PASSWORD not in text
    assert "kafka.ssl_cafile" in _refused(tmp_path, f"ssl_cafile: {tls['ca']}")
    assert "kafka.ssl_check_hostname" in _refused(tmp_path, "ssl_check_hostname: false")
    assert "kafka.ssl_cafile" in _refused(tmp_path, f"security_protocol: SASL_PLAINTEXT\nusername: hub\n"
                                                    f"ssl_cafile: {tls['ca']}", {"EDUHUB_KAFKA_PASSWORD": PASSWORD})
    assert "kafka.sasl_mechanism" in _refused(tmp_path, "security_protocol: SSL\nsasl_mechanism: SCRAM-SHA-256")
    assert "kafka.sasl_mechanism" in _refused(tmp_path, "security_protocol: SASL_SSL\nsasl_mechanism: PLAIN\n"
                                                        "username: hub", {"EDUHUB_KAFKA_PASSWORD": PASSWORD})
    assert "kafka.security_protocol" in _refused(tmp_path, "security_protocol: SCRAM")
    text = _refused(tmp_path, "security_protocol: SASL_SSL")
    assert "kafka.username: kafka.security_protocol is SASL_SSL" in text and "EDUHUB_KAFKA_PASSWORD" in text
    text = _refused(tmp_path, "security_protocol: SASL_SSL\nusername: hub")
    assert "kafka.password" in text and "EDUHUB_KAFKA_PASSWORD" in text and "kafka.username:" not in text
    text = _refused(tmp_path, f"security_protocol: SSL\nssl_cafile: {tmp_path / 'missing.pem'}")
    assert "kafka.ssl_cafile" in text and "does not exist" in text
    text = _refused(tmp_path, f"security_protocol: SSL\nssl_certfile: {tls['client']}")
    assert "kafka.ssl_certfile and kafka.ssl_keyfile: set both" in text
    text = _refused(tmp_path, "security_protocol: SSL", {"EDUHUB_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD})
    assert "kafka.ssl_key_password (EDUHUB_KAFKA_SSL_KEY_PASSWORD)" in text and KEY_PASSWORD not in text


def test_an_unreadable_tls_file_is_named(tmp_path, tls, monkeypatch):
    unreadable = tmp_path / "ca.pem"
    unreadable.write_bytes(tls["ca"].read_bytes())
    unreadable.chmod(0)
    if os.geteuid() == 0:  # root reads every file (CI runs as root): answer as another user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == unreadable
                            else real_access(path, mode))
    assert "is not readable" in _refused(tmp_path, f"security_protocol: SSL\nssl_cafile: {unreadable}")


def test_a_good_secure_config_loads_with_secrets_from_the_environment(tmp_path, tls):
    config = _config(tmp_path, f"security_protocol: SASL_SSL\nusername: hub\nssl_cafile: {tls['ca']}",
                     {"EDUHUB_KAFKA_PASSWORD": PASSWORD})
    assert config.kafka.password.get_secret_value() == PASSWORD
    assert config.kafka.sasl_mechanism == "SCRAM-SHA-512" and config.kafka.ssl_check_hostname is True
    assert load_config(None, environ={}).kafka.security_protocol == "PLAINTEXT"  # `make run` needs nothing


def test_a_pem_file_that_does_not_load_is_a_config_error_naming_the_key(tmp_path, tls):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    config = _config(tmp_path, f"security_protocol: SSL\nssl_cafile: {garbage}")
    with pytest.raises(ConfigError, match="kafka.ssl_cafile"):
        KafkaClients.from_config(config.kafka)
    config = _config(tmp_path, f"security_protocol: SSL\nssl_cafile: {tls['ca']}\nssl_certfile: {tls['client']}\n"
                               f"ssl_keyfile: {tls['client_key']}", {"EDUHUB_KAFKA_SSL_KEY_PASSWORD": "badpw-Q9"})
    with pytest.raises(ConfigError) as error:
        KafkaClients.from_config(config.kafka)
    assert "kafka.ssl_keyfile" in str(error.value) and "badpw-Q9" not in str(error.value)


# --- the options of every client -------------------------------------------------------------------

def test_plaintext_options_are_just_the_brokers():
    assert KafkaClients.plain("127.0.0.1:9092").options() == {"bootstrap_servers": "127.0.0.1:9092",
                                                              "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_options_verify_the_broker_with_the_ca_and_its_hostname(tmp_path, tls):
    config = _config(tmp_path, f"bootstrap_servers: 127.0.0.1:9094\nsecurity_protocol: SASL_SSL\nusername: hub\n"
                               f"ssl_cafile: {tls['ca']}", {"EDUHUB_KAFKA_PASSWORD": PASSWORD})
    options = KafkaClients.from_config(config.kafka).options()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "hub" and options["sasl_plain_password"] == PASSWORD
    context: ssl.SSLContext = options["ssl_context"]
    assert context.check_hostname is True and context.verify_mode == ssl.CERT_REQUIRED
    assert [dict(item[0] for item in c["subject"])["commonName"] for c in context.get_ca_certs()] == ["test-ca"]


def test_a_client_certificate_with_an_encrypted_key_loads_and_hostname_check_can_be_off(tmp_path, tls):
    config = _config(tmp_path, f"security_protocol: SSL\nssl_cafile: {tls['ca']}\nssl_certfile: {tls['client']}\n"
                               f"ssl_keyfile: {tls['client_key']}\nssl_check_hostname: false",
                     {"EDUHUB_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD})
    clients = KafkaClients.from_config(config.kafka)
    options = clients.options()
    assert "sasl_plain_password" not in options
    assert options["ssl_context"].check_hostname is False
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # the CA is still checked
    assert clients.principal == f"the client certificate {tls['client']}"


def test_a_connection_object_builds_every_client_with_the_same_options(tmp_path, tls):
    clients = KafkaClients(bootstrap_servers="127.0.0.1:1", security_protocol="SASL_SSL", username="hub",
                           password=_secret(PASSWORD), ssl_cafile=str(tls["ca"]))

    async def build() -> None:
        producer, consumer, admin = clients.producer(), clients.consumer(group_id=None), clients.admin()
        for client in (producer.client, consumer._client, admin._client):
            assert client._security_protocol == "SASL_SSL" and client._sasl_plain_username == "hub"
            assert client._ssl_context is clients.ssl_context
        await producer.stop()
        await consumer.stop()
        await admin.close()

    asyncio.run(build())


def _secret(value: str):
    from pydantic import SecretStr

    return SecretStr(value)


# --- refusals fail fast, naming the listener and the principal -------------------------------------

class _FailingClient:
    async def start(self) -> None:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9094, <AddressFamily.AF_INET: 2>)]")

    async def stop(self) -> None:
        pass


def _sasl_clients(**kwargs) -> KafkaClients:
    return KafkaClients(bootstrap_servers="127.0.0.1:9094", security_protocol="SASL_SSL", username="hub",
                        password=_secret(PASSWORD), **kwargs)


def _start_with(monkeypatch, clients: KafkaClients, failure: BaseException) -> BaseException:
    import aiokafka.conn

    async def create_conn(*args, **kwargs):
        raise failure

    monkeypatch.setattr(aiokafka.conn, "create_conn", create_conn)
    with pytest.raises(Exception) as error:
        asyncio.run(clients.start(_FailingClient()))
    return error.value


def test_wrong_credentials_fail_fast_naming_listener_and_principal_never_the_secret(monkeypatch):
    error = _start_with(monkeypatch, _sasl_clients(), SaslAuthenticationFailed(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"))
    assert isinstance(error, KafkaSecurityError) and isinstance(error, ConfigError)  # fatal, never retried
    assert str(error).startswith("Kafka refused User:hub on SASL_SSL listener 127.0.0.1:9094: authentication failed "
                                 "(check kafka.username and EDUHUB_KAFKA_PASSWORD")
    assert PASSWORD not in str(error) and PASSWORD not in repr(error)


def test_a_connector_principal_is_named_with_its_own_settings(monkeypatch):
    clients = _sasl_clients().as_principal("conn-smas", _secret("other-secret"),
                                           credentials="connectors.0.kafka_username and SMAS_KAFKA_PASSWORD")
    error = _start_with(monkeypatch, clients, SaslAuthenticationFailed("invalid credentials"))
    assert "Kafka refused User:conn-smas on SASL_SSL listener 127.0.0.1:9094" in str(error)
    assert "connectors.0.kafka_username and SMAS_KAFKA_PASSWORD" in str(error) and "other-secret" not in str(error)


def test_a_mechanism_the_listener_lacks_is_fatal_too(monkeypatch):
    error = _start_with(monkeypatch, _sasl_clients(), UnsupportedSaslMechanismError("enabled: ['PLAIN']"))
    assert isinstance(error, KafkaSecurityError) and "kafka.sasl_mechanism" in str(error)


def test_an_unreachable_broker_stays_a_retriable_connection_error(monkeypatch):
    error = _start_with(monkeypatch, _sasl_clients(), ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(error, KafkaConnectionError) and not isinstance(error, ConfigError)


async def _tls_listener(cert: Path, key: Path) -> asyncio.Server:
    """A TLS listener that never answers a Kafka request: enough to test the handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    return await asyncio.start_server(hold, "127.0.0.1", 0, ssl=context)


def _diagnose(tls, *, cafile: Path, broker: str = "broker", host: str = "127.0.0.1", **kwargs) -> str | None:
    async def go() -> str | None:
        server = await _tls_listener(tls[broker], tls[f"{broker}_key"])
        port = server.sockets[0].getsockname()[1]
        clients = KafkaClients(bootstrap_servers=f"{host}:{port}", security_protocol="SSL", ssl_cafile=str(cafile),
                               **kwargs)
        try:
            found = await clients.diagnose(timeout_s=2)
        finally:
            server.close()
        return None if found is None else str(found).replace(str(port), "PORT")
    return asyncio.run(go())


def test_a_broker_certificate_from_another_ca_is_named_with_the_listener(tls):
    text = _diagnose(tls, cafile=tls["other_ca"])
    assert text is not None and text.startswith("TLS verification of Kafka SSL listener 127.0.0.1:PORT failed")
    assert "kafka.ssl_cafile" in text


def test_a_broker_certificate_for_another_host_is_refused_unless_the_hostname_check_is_off(tls):
    text = _diagnose(tls, cafile=tls["ca"], broker="elsewhere")
    assert text is not None and "127.0.0.1" in text and "kafka.ssl_check_hostname" in text
    assert _diagnose(tls, cafile=tls["ca"], broker="elsewhere", ssl_check_hostname=False) is None
    assert _diagnose(tls, cafile=tls["ca"]) is None  # the right CA and host: nothing to complain about


def test_a_worker_whose_tls_is_refused_exits_at_start_up_with_the_reason(tmp_path, tls):
    """The worker does not retry a refusal forever: it exits non-zero, naming listener and principal."""
    async def listen() -> tuple[asyncio.Server, int]:
        server = await _tls_listener(tls["broker"], tls["broker_key"])
        return server, server.sockets[0].getsockname()[1]

    loop = asyncio.new_event_loop()
    server, port = loop.run_until_complete(listen())
    path = tmp_path / "hub.yaml"
    path.write_text(f"kafka:\n  bootstrap_servers: 127.0.0.1:{port}\n  security_protocol: SASL_SSL\n  username: hub\n"
                    f"  ssl_cafile: {tls['other_ca']}\nregistry:\n  url: http://127.0.0.1:1\n"
                    f"worker:\n  web_port: {_free_port()}\nsources:\n  - id: smas\n")
    env = {**os.environ, "EDUHUB_CONFIG": str(path), "EDUHUB_KAFKA_PASSWORD": PASSWORD}
    process = subprocess.Popen([sys.executable, "-m", "hub", "worker"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async def wait() -> bytes:
            while process.poll() is None:
                await asyncio.sleep(0.1)
            return process.stdout.read()
        output = loop.run_until_complete(asyncio.wait_for(wait(), 60)).decode()
    finally:
        if process.poll() is None:
            process.kill()
        server.close()
        loop.close()
    assert process.returncode != 0, output
    assert f"TLS verification of Kafka SASL_SSL listener 127.0.0.1:{port} failed for User:hub" in output, output
    assert PASSWORD not in output


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- secrets never show ----------------------------------------------------------------------------

def test_no_secret_in_config_dumps_connection_objects_or_their_logs(tmp_path, tls):
    config = _config(tmp_path, f"security_protocol: SASL_SSL\nusername: hub\nssl_cafile: {tls['ca']}\n"
                               f"ssl_certfile: {tls['client']}\nssl_keyfile: {tls['client_key']}",
                     {"EDUHUB_KAFKA_PASSWORD": PASSWORD, "EDUHUB_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD})
    clients = KafkaClients.from_config(config.kafka)
    shown = [repr(config), str(config), config.model_dump_json(), str(config.model_dump()), repr(clients), str(clients),
             clients.describe(), repr(clients.as_principal("conn", _secret(PASSWORD), "x"))]
    for text in shown:
        assert PASSWORD not in text and KEY_PASSWORD not in text
    assert clients.describe() == "SASL_SSL 127.0.0.1:9092 as User:hub"


# --- connectors with their own principal -----------------------------------------------------------

def _with_connectors(tmp_path: Path, kafka: str, environ: dict[str, str], own: str):
    entry = ("  - name: {name}\n    kind: sql\n    source: smas\n    url: sqlite:///{db}\n    table: schools\n"
             "    entity: school.school\n")
    extra = ("sources:\n  - id: smas\nconnectors:\n" + entry.format(name="smas-own", db=tmp_path / "s.db") + own
             + entry.format(name="smas-shared", db=tmp_path / "s.db"))
    return _config(tmp_path, kafka, environ, extra)


SECURE = "security_protocol: SASL_SSL\nusername: hub"
OWN = "    kafka_username: conn-smas\n    kafka_password_env: SMAS_KAFKA_PASSWORD\n"


def test_a_connector_principal_needs_both_keys_sasl_and_its_variable(tmp_path, monkeypatch):
    from connectors.runtime import build_connectors

    hub_env = {"EDUHUB_KAFKA_PASSWORD": PASSWORD}
    with pytest.raises(ConfigError, match="connectors.0.kafka_username and connectors.0.kafka_password_env: set both"):
        build_connectors(_with_connectors(tmp_path, SECURE, hub_env, "    kafka_username: conn-smas\n"))
    with pytest.raises(ConfigError, match="connectors.0.kafka_username: kafka.security_protocol is PLAINTEXT"):
        build_connectors(_with_connectors(tmp_path, "security_protocol: PLAINTEXT", {}, OWN))
    monkeypatch.delenv("SMAS_KAFKA_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="connectors.0.kafka_password_env: the environment variable "
                                          "SMAS_KAFKA_PASSWORD is empty or unset"):
        build_connectors(_with_connectors(tmp_path, SECURE, hub_env, OWN))


def test_a_connector_with_its_own_principal_publishes_and_stores_offsets_through_its_own_producer(tmp_path,
                                                                                                  monkeypatch):
    from connectors.runtime import ConnectService

    monkeypatch.setenv("SMAS_KAFKA_PASSWORD", "conn-secret-Hy7")
    config = _with_connectors(tmp_path, SECURE, {"EDUHUB_KAFKA_PASSWORD": PASSWORD}, OWN)

    async def build() -> dict[str, str]:
        service = ConnectService(config)
        users = {c.config.name: c.kafka.username for c in service._connectors}
        assert {kafka.username for kafka in service.producers} == {"hub", "conn-smas"}
        for kafka, producer in service.producers.items():
            assert producer.client._sasl_plain_username == kafka.username
        own = next(c for c in service._connectors if c.config.name == "smas-own")
        assert own.kafka.credentials == "connectors.0.kafka_username and SMAS_KAFKA_PASSWORD"
        assert "conn-secret-Hy7" not in repr(own.kafka) + own.kafka.describe()
        for producer in service.producers.values():
            await producer.stop()
        return users

    assert asyncio.run(build()) == {"smas-own": "conn-smas", "smas-shared": "hub"}


def test_a_dumped_plaintext_config_loads_again(tmp_path):
    import yaml

    path = tmp_path / "dumped.yaml"
    path.write_text(yaml.safe_dump(load_config(None, environ={}).model_dump(mode="json")))
    assert load_config(path, environ={}).kafka.security_protocol == "PLAINTEXT"

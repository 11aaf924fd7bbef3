"""`eduhub local up --secure` without a broker: the throwaway CA, the broker certificate, users and settings."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path
from string import Template

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hub.demo.certs import BROKER_CN, ensure_certificates
from hub.demo.local import DEPLOY_DIR
from hub.demo.secure import SecureSetup, User, env_name, merge_properties


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_broker_certificate_names_the_loopback_addresses_and_is_signed_by_the_ca(tmp_path):
    files = ensure_certificates(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.broker_cert.read_bytes())  # the first of the chain
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert cert.subject.rfc4514_string() == f"CN={BROKER_CN}"
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages and ExtendedKeyUsageOID.CLIENT_AUTH in usages


def test_private_keys_are_owner_only_and_certificates_are_reused(tmp_path):
    files = ensure_certificates(tmp_path / "tls")
    for secret in (files.ca_key, files.broker_key, files.keystore):
        assert mode(secret) == 0o600, secret
        assert b"PRIVATE KEY" in secret.read_bytes()
    assert b"PRIVATE KEY" not in files.ca_cert.read_bytes() + files.broker_cert.read_bytes()
    assert mode(files.folder) == 0o700
    before = files.broker_cert.read_bytes()
    assert ensure_certificates(tmp_path / "tls").broker_cert.read_bytes() == before  # not remade on each up


def test_a_cluster_certificate_names_every_broker_and_is_remade_when_one_is_added(tmp_path):
    """`eduhub deploy certs`: the brokers of a cluster share one certificate naming them all."""
    def names(files):
        cert = x509.load_pem_x509_certificate(files.broker_cert.read_bytes())
        return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                   .get_values_for_type(x509.DNSName))

    files = ensure_certificates(tmp_path / "tls", hosts=("kafka-1", "kafka-2"))
    assert names(files) == {"kafka-1", "kafka-2"}
    before = files.broker_cert.read_bytes()
    assert ensure_certificates(tmp_path / "tls", hosts=("kafka-2",)).broker_cert.read_bytes() == before
    assert names(ensure_certificates(tmp_path / "tls", hosts=("kafka-1", "kafka-2", "kafka-3"))) == {
        "kafka-1", "kafka-2", "kafka-3"}


def test_a_python_client_verifies_the_broker_certificate_with_hostname_check(tmp_path):
    """A TLS server with the broker's keystore; a client trusting only the throwaway CA connects to
    127.0.0.1 and to localhost with the hostname check on, and one trusting the system CAs fails."""
    files = ensure_certificates(tmp_path / "tls")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.broker_cert, files.broker_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count: int) -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, args=(3,), daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.getpeercert()["subject"] == ((("commonName", BROKER_CN),),)
            tls.send(b"x")
    with socket.create_connection(("127.0.0.1", port)) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(5)
    listener.close()


def test_users_get_random_kept_passwords_in_owner_only_files(tmp_path):
    setup = SecureSetup(tmp_path, [User("hub", "EDUHUB_KAFKA_PASSWORD", "the hub"),
                                   User("sub-moet-sync", env_name("sub-moet-sync"), "subscriber")])
    first = setup.prepare()
    assert set(first) == {"admin", "registry", "hub", "sub-moet-sync"}
    assert len(set(first.values())) == 4 and all(len(p) >= 32 for p in first.values())
    assert mode(setup.users_file) == 0o600 and mode(setup.credentials_file) == 0o600
    env = setup.credentials_file.read_text()
    assert f"EDUHUB_KAFKA_PASSWORD={first['hub']}" in env
    assert f"EDUHUB_KAFKA_ADMIN_PASSWORD={first['admin']}" in env
    assert f"EDUHUB_KAFKA_PASSWORD_SUB_MOET_SYNC={first['sub-moet-sync']}" in env
    assert "USERNAME" not in env  # user names belong in hub.yaml (kafka.username, kafka_username)
    # a second `up` keeps the passwords and adds new users only
    again = SecureSetup(tmp_path, [User("hub", "EDUHUB_KAFKA_PASSWORD", "the hub"), User("conn-smas", "X", "c")])
    second = again.prepare()
    assert {k: second[k] for k in first} == first and "conn-smas" in second
    assert f"EDUHUB_KAFKA_PASSWORD_SUB_MOET_SYNC={first['sub-moet-sync']}" in again.credentials_file.read_text()


def test_storage_format_adds_a_scram_user_each(tmp_path):
    setup = SecureSetup(tmp_path, [User("hub", "EDUHUB_KAFKA_PASSWORD", "the hub")])
    passwords = setup.prepare()
    args = setup.format_args()
    assert args.count("--add-scram") == 3
    assert f"SCRAM-SHA-512=[name=hub,password={passwords['hub']}]" in args


def test_user_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="must match"):
        SecureSetup(tmp_path, [User("a,b=c", "X", "bad")])


def test_secure_server_properties_replace_the_plain_listener(tmp_path):
    setup = SecureSetup(tmp_path)
    setup.prepare()
    values = dict(kafka_port=19092, controller_port=19093, data_dir=tmp_path / "data")
    base = Template((DEPLOY_DIR / "kafka" / "server.properties").read_text()).substitute(values)
    text = setup.server_properties(base, Template((DEPLOY_DIR / "kafka" / "secure.properties").read_text()), **values)
    props = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            assert key not in props, f"{key} set twice"
            props[key] = value
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == f"User:admin;User:CN={BROKER_CN}"
    assert "PLAINTEXT" not in props["listeners"] + props["advertised.listeners"]
    assert setup.password("admin") in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert props["log.dirs"] == str(tmp_path / "data")  # the rest of the base file stays


def test_merge_properties_keeps_one_value_per_key():
    merged = merge_properties("# c\na=1\nb=2\n", "b=3\nc=4\n")
    assert merged.splitlines() == ["# c", "a=1", "", "b=3", "c=4"]


def test_registry_settings_go_to_an_owner_only_file_not_the_command_line(tmp_path):
    setup = SecureSetup(tmp_path)
    setup.prepare()
    args = setup.registry_args()
    assert not any(setup.password("registry") in a for a in args)
    text = setup.registry_properties.read_text()
    assert mode(setup.registry_properties) == 0o600
    assert "apicurio.kafka.common.security.protocol=SASL_SSL" in text
    assert f'username="registry" password="{setup.password("registry")}"' in text


def test_local_up_secure_makes_a_user_per_principal_with_its_password_variable():
    from hub.core.config import HubConfig
    from hub.ops.cli.local import _users

    config = HubConfig.model_validate({
        "sources": [{"id": "smas"}],
        "connectors": [{"name": "smas-students", "kind": "sql", "source": "smas", "kafka_username": "conn-smas",
                        "kafka_password_env": "SMAS_KAFKA_PASSWORD"}],
        "subscriptions": [{"id": "moet-sync", "entities": ["*"]},
                          {"id": "parent-app", "entities": ["*"],
                           "delivery": {"kind": "http", "url": "https://x.example", "secret_env": "S"}}],
    })
    users = {u.name: u.env for u in _users(config)}
    assert users == {"hub": "EDUHUB_KAFKA_PASSWORD", "conn-smas": "SMAS_KAFKA_PASSWORD",
                     "sub-moet-sync": "EDUHUB_KAFKA_PASSWORD_SUB_MOET_SYNC", "admin": "EDUHUB_KAFKA_ADMIN_PASSWORD"}

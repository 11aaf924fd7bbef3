"""A throwaway CA and the local broker's TLS certificate (`eduhub local up --secure`), made with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The broker's certificate names the loopback addresses clients dial (hostname checks stay on).
BROKER_HOSTS = ("localhost",)
BROKER_IPS = ("127.0.0.1", "::1")
# The subject of the broker's certificate; as a TLS client (to its own controller listener) its
# principal is `User:CN=eduhub-broker`, a super user of the local broker.
BROKER_CN = "eduhub-broker"
VALID_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    """Where the PEM files of one local stack are; the `*_key`/`keystore` files are 0600."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def broker_cert(self) -> Path:
        return self.folder / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.folder / "broker-key.pem"

    @property
    def keystore(self) -> Path:
        """Key, certificate and CA in one file: Kafka's PEM keystore (`ssl.keystore.type=PEM`)."""
        return self.folder / "broker-keystore.pem"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only (0600, whatever the umask), replacing any old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    # PKCS#8 unencrypted: what Kafka's PEM keystore, Python's ssl and librdkafka all read.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(now: dt.datetime | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EduHub local CA (throwaway)")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, common_name: str, hosts=BROKER_HOSTS,
          ips=BROKER_IPS, now: dt.datetime | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An end-entity certificate for server and client use, with the hosts and IPs as SANs."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = _key()
    sans = [x509.DNSName(h) for h in hosts] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _still_good(path: Path, now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - now > RENEW_BEFORE


def _names(path: Path) -> set[str]:
    """The DNS names a PEM certificate's SANs hold."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))


def ensure_certificates(folder: Path, hosts: tuple[str, ...] = BROKER_HOSTS,
                        ips: tuple[str, ...] = BROKER_IPS) -> TlsFiles:
    """The CA and broker certificate under `folder` (0700), made on first use and again near expiry
    or when the certificate does not name every host of `hosts` (`eduhub deploy certs`: the brokers
    of a cluster share one certificate that names them all).

    Only the certificates are world-readable; the keys and the keystore are 0600.
    """
    files = TlsFiles(Path(folder))
    files.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(files.folder, 0o700)
    now = dt.datetime.now(dt.timezone.utc)
    if all(p.exists() for p in (files.ca_key, files.keystore)) and all(
            _still_good(p, now) for p in (files.ca_cert, files.broker_cert)) and set(hosts) <= _names(files.broker_cert):
        return files
    ca_key, ca_cert = make_ca(now)
    key, cert = issue(ca_key, ca_cert, BROKER_CN, hosts=hosts, ips=ips, now=now)
    write_private(files.ca_key, _pem_key(ca_key))
    write_private(files.broker_key, _pem_key(key))
    write_private(files.keystore, _pem_key(key) + _pem(cert) + _pem(ca_cert))
    files.ca_cert.write_bytes(_pem(ca_cert))
    files.broker_cert.write_bytes(_pem(cert) + _pem(ca_cert))
    return files

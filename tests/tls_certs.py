"""Throwaway TLS material for tests: a CA and a server certificate for localhost and 127.0.0.1, made by the
same code as `eduhub local up --secure` (hub/demo/certs.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from hub.demo.certs import issue, make_ca


@dataclass(frozen=True)
class Certs:
    ca: Path    # PEM CA certificate: what a client verifies with
    cert: Path  # PEM server certificate, signed by the CA
    key: Path   # PEM unencrypted server key


def make_certs(folder: Path) -> Certs:
    """Write ca.pem, server.pem and server-key.pem into `folder`."""
    ca_key, ca = make_ca()
    key, cert = issue(ca_key, ca, "localhost", hosts=("localhost",), ips=("127.0.0.1",))
    folder.mkdir(parents=True, exist_ok=True)
    certs = Certs(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return certs

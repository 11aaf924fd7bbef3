"""`eduhub deploy certs`: the compose cluster's CA and shared broker certificate, readable by the brokers' user."""

from __future__ import annotations

import os
import stat

from cryptography import x509
from typer.testing import CliRunner

from hub.ops.cli import app


def test_writes_a_certificate_naming_every_host_with_private_keys_kept_private(tmp_path):
    folder = tmp_path / "certs"
    done = CliRunner().invoke(app, ["deploy", "certs", str(folder), "--host", "kafka-1", "--host", "kafka-2",
                                    "--host", "kafka-3"])
    assert done.exit_code == 0, done.output
    cert = x509.load_pem_x509_certificate((folder / "broker.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {"kafka-1", "kafka-2", "kafka-3"} <= set(names)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # other users (the workers) read ca.pem
    for name in ("ca-key.pem", "broker-key.pem", "broker-keystore.pem"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    before = (folder / "broker.pem").read_bytes()
    assert CliRunner().invoke(app, ["deploy", "certs", str(folder), "--host", "kafka-1"]).exit_code == 0
    assert (folder / "broker.pem").read_bytes() == before  # a restart of the one-shot service changes nothing


def test_owner_hands_the_files_to_the_brokers_user_and_refuses_a_name(tmp_path):
    uid, gid = os.getuid(), os.getgid()  # root in CI chowns for real; anyone may chown to themselves
    folder = tmp_path / "certs"
    done = CliRunner().invoke(app, ["deploy", "certs", str(folder), "--host", "k", "--owner", f"{uid}:{gid}"])
    assert done.exit_code == 0, done.output
    assert (folder / "broker-keystore.pem").stat().st_uid == uid
    bad = CliRunner().invoke(app, ["deploy", "certs", str(tmp_path / "other"), "--host", "k", "--owner", "appuser"])
    assert bad.exit_code == 2 and "numeric UID:GID" in bad.output
    assert not (tmp_path / "other").exists()  # nothing written on a bad option

"""The worker's web server (status page, /metrics, probes): security headers and a status-page CSP that still lets
the page work; TLS keys of every listener validated at start-up; HTTP subscribers only over https:// off loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.core.config import ConfigError, HubConfig
from hub.core.websec import host_name, server_ssl_context
from hub.routing.policy import load_subscriptions
from hub.routing.subscriptions import HttpDelivery, SubscriptionConfig
from hub.runtime.web import STATUS_PAGE, page_policy
from tests.tls_certs import make_certs


def worker_app(**worker):
    from hub.runtime.worker import create_app

    return create_app(HubConfig.model_validate({"sources": [{"id": "smas"}], "worker": worker}))


# -- the worker's web server -------------------------------------------------------------------


def test_every_worker_answer_carries_the_security_headers():
    app = worker_app()

    async def scenario():
        async with TestClient(TestServer(app.web.web_app)) as client:
            for path in ("/", "/status.json", "/metrics", "/healthz", "/readyz", "/nope"):
                response = await client.get(path)
                headers = response.headers
                assert headers["X-Content-Type-Options"] == "nosniff", path
                assert headers["X-Frame-Options"] == "DENY", path
                assert headers["Referrer-Policy"] == "no-referrer", path
                assert headers["Cache-Control"] == "no-store", path
                assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
                assert "Strict-Transport-Security" not in headers, path
            page = await client.get("/")
            assert page.headers["Content-Security-Policy"] == page_policy(STATUS_PAGE.read_bytes())

    asyncio.run(scenario())


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_status_page_policy_allows_exactly_its_own_inline_script_and_style():
    html = STATUS_PAGE.read_text(encoding="utf-8")
    policy = dict(part.strip().split(" ", 1) for part in page_policy(STATUS_PAGE.read_bytes()).split(";"))
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    assert policy["script-src"] == _sha(scripts[0]) and policy["style-src"] == _sha(styles[0])
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"  # status.json only
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'none'"
    assert "unsafe-inline" not in page_policy(STATUS_PAGE.read_bytes())
    # What a hash cannot allow must not be in the page: inline handlers, style attributes, javascript: URLs.
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, re.I)
    assert not re.search(r"<[^>]+\sstyle\s*=", html, re.I)
    assert not re.search(r"""setAttribute\(\s*["'](style|on[a-z]+)["']""", html)
    assert "javascript:" not in html and "eval(" not in html and "new Function" not in html


def test_the_worker_serves_https_when_given_a_certificate(tmp_path):
    certs = make_certs(tmp_path / "tls")
    app = worker_app(tls_cert_file=str(certs.cert), tls_key_file=str(certs.key))
    assert app.conf.web_ssl_context is not None
    assert worker_app().conf.web_ssl_context is None


# -- TLS keys validated at start-up ------------------------------------------------------------


def test_tls_files_are_checked_at_start_up_naming_the_key(tmp_path):
    certs = make_certs(tmp_path / "tls")
    other = make_certs(tmp_path / "other")
    assert server_ssl_context(None, None, "worker") is None
    assert server_ssl_context(certs.cert, certs.key, "worker") is not None
    cases = [((certs.cert, None), "worker.tls_key_file: not set"),
             ((None, certs.key), "worker.tls_cert_file: not set"),
             ((tmp_path / "missing.pem", certs.key), "worker.tls_cert_file: .*missing.pem does not exist"),
             ((certs.cert, other.key), "worker.tls_cert_file / worker.tls_key_file: cannot load"),
             ((certs.key, certs.cert), "cannot load")]
    for (cert, key), message in cases:
        with pytest.raises(ConfigError, match=message):
            server_ssl_context(cert, key, "worker")
    with pytest.raises(ConfigError, match="worker.tls_key_file"):
        worker_app(tls_cert_file=str(certs.cert))


def test_an_encrypted_key_fails_instead_of_prompting(tmp_path):
    from cryptography.hazmat.primitives import serialization

    certs = make_certs(tmp_path / "tls")
    key = serialization.load_pem_private_key(certs.key.read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pass-phrase")))
    with pytest.raises(ConfigError, match="unencrypted private key"):
        server_ssl_context(certs.cert, locked, "connect")


def test_host_names_are_read_strictly():
    assert host_name("LocalHost:8083") == "localhost"
    assert host_name("[::1]:8083") == "::1"
    assert host_name("example.org.") == "example.org"
    for bad in (None, "", ":8083", "a:b", "[::1", "[::1]x", "host:80:80"):
        assert host_name(bad) is None, bad


# -- HTTP subscribers --------------------------------------------------------------------------


def _subscription(url: str) -> dict:
    return {"id": "parent-app", "entities": ["school.score"],
            "delivery": {"kind": "http", "url": url, "secret_env": "EDUHUB_SUB_PARENT_APP_SECRET"}}


def test_http_subscribers_need_https_except_on_loopback():
    for url in ("https://phuhuynh.haiphong.edu.vn/api/hub/events", "http://127.0.0.1:8090/hooks/x",
                "http://localhost:8090/x", "http://[::1]:8090/x", "http://127.0.0.2/x"):
        assert HttpDelivery(kind="http", url=url, secret_env="X").url == url
    for url in ("http://phuhuynh.haiphong.edu.vn/api/hub/events", "http://10.0.0.7/hook", "http://localhost.evil.io/x",
                "http://127.0.0.1.nip.io/x", "http://[::ffff:10.0.0.1]/x", "ftp://example.org/x"):
        with pytest.raises(ValueError):
            HttpDelivery(kind="http", url=url, secret_env="X")


def test_a_plain_http_subscriber_is_a_config_error_naming_the_subscription_and_the_fix():
    from hub.contract.schemas import Catalogue

    with pytest.raises(ConfigError) as error:
        load_subscriptions([_subscription("http://phuhuynh.haiphong.edu.vn/api/hub/events")], Catalogue.load(),
                           b"k" * 32)
    message = str(error.value)
    assert "subscriptions.0.delivery.http.url" in message
    assert "use https://phuhuynh.haiphong.edu.vn/api/hub/events" in message


def test_the_demo_and_hub_yaml_subscribers_still_validate():
    from hub.core.config import load_config
    from hub.routing.subscriptions import DEMO_SUBSCRIPTIONS

    for item in [*DEMO_SUBSCRIPTIONS, *load_config("hub.yaml", environ={}).subscriptions]:
        SubscriptionConfig.model_validate(item)

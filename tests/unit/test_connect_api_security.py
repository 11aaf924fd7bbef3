"""The connector REST API answers only its token holders, on its own host names, never to a cross-site page;
the CLI, the worker's status page and `make run` hand the token around without anyone setting it up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from connectors.rest import make_app, serve
from connectors.runtime import ConnectorStatus
from hub.core import websec
from hub.core.config import ConfigError, HubConfig
from hub.core.metrics import HubMetrics
from hub.core.websec import allowed_hosts
from hub.runtime.status import connect_options, connector_states
from tests.tls_certs import make_certs

TOKEN = "unit-test-connect-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAME = "smas-schools"
# Below 32768 (see tests/conftest.py), apart from the other unit tests' ports.
BASE_PORT = 28300


@dataclass
class FakeRuntime:
    status: ConnectorStatus = field(default_factory=lambda: ConnectorStatus(NAME, "sql", "smas", "RUNNING"))
    calls: list[str] = field(default_factory=list)

    @property
    def config(self) -> Any:
        return type("C", (), {"name": NAME})()

    async def restart(self) -> None:
        self.calls.append("restart")

    def pause(self) -> None:
        self.calls.append("pause")
        self.status.state = "PAUSED"

    def resume(self) -> None:
        self.calls.append("resume")

    async def stop(self) -> None:
        self.calls.append("stop")
        self.status.state = "STOPPED"

    async def reset_offset(self, offset: dict | None) -> None:
        self.calls.append(f"offset {offset}")


class FakeClient:
    async def fetch_all_metadata(self) -> None:
        return None


class FakeOffsets:
    async def read_all(self) -> dict:
        return {NAME: {"id": 3}}


class FakeService:
    def __init__(self) -> None:
        self.runtime = FakeRuntime()
        self.runtimes = {NAME: self.runtime}
        self.metrics = HubMetrics()
        self.offsets = FakeOffsets()
        self.producer = type("P", (), {"client": FakeClient()})()
        self.producers = {None: self.producer}  # one per Kafka principal
        self.kafka = type("K", (), {"describe": lambda self: "fake"})()

    def get(self, name: str) -> FakeRuntime:
        if name not in self.runtimes:
            raise KeyError(name)
        return self.runtimes[name]


@contextlib.asynccontextmanager
async def api(hosts: frozenset[str] | None = None) -> AsyncIterator[tuple[TestClient, FakeService]]:
    service = FakeService()
    app = make_app(service, token=TOKEN.encode(), hosts=hosts)  # type: ignore[arg-type]
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, service


def run(coro) -> Any:
    return asyncio.run(coro)


# -- the token ---------------------------------------------------------------------------------


def test_no_token_or_a_wrong_one_is_401_and_changes_nothing():
    async def scenario():
        async with api() as (client, service):
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
                for method, path in (("GET", "/connectors"), ("GET", f"/connectors/{NAME}/status"),
                                     ("POST", f"/connectors/{NAME}/restart"), ("PUT", f"/connectors/{NAME}/stop"),
                                     ("DELETE", f"/connectors/{NAME}/offsets"), ("GET", "/connectors/nope/status")):
                    response = await client.request(method, path, headers=headers)
                    assert response.status == 401, (headers, method, path)
                    assert (await response.json())["reason"] == "unauthorized"
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert service.runtime.calls == []

    run(scenario())


def test_the_token_opens_every_route():
    async def scenario():
        async with api() as (client, service):
            assert await (await client.get("/connectors", headers=AUTH)).json() == [NAME]
            assert (await client.get(f"/connectors/{NAME}/status", headers=AUTH)).status == 200
            bare = {"headers": AUTH, "skip_auto_headers": ["Content-Type"]}  # as curl and httpx send: no body, no type
            assert (await client.post(f"/connectors/{NAME}/restart", **bare)).status == 202
            json_type = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
            assert (await client.put(f"/connectors/{NAME}/pause", headers=json_type)).status == 202
            changed = await client.patch(f"/connectors/{NAME}/offsets", json={"offset": {"id": 1}}, headers=AUTH)
            assert changed.status == 200
            assert service.runtime.calls == ["restart", "pause", "offset {'id': 1}"]

    run(scenario())


def test_the_token_is_compared_in_constant_time(monkeypatch):
    compared = []
    real = websec.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(websec.hmac, "compare_digest", spy)
    assert websec.bearer_matches(f"Bearer {TOKEN}", TOKEN.encode())
    assert not websec.bearer_matches("Bearer nope", TOKEN.encode())
    assert not websec.bearer_matches(None, TOKEN.encode())
    assert not websec.bearer_matches("Bearer ", b"")  # no token configured never matches an empty one
    assert len(compared) == 4


def test_readiness_holds_while_a_source_is_down_and_waits_for_connectors_to_be_handed_over():
    async def scenario():
        async with api() as (client, service):
            service.runtime.status.state = "RETRYING"  # its database is down: the process still serves
            ready = await client.get("/readyz")
            assert ready.status == 200 and (await ready.json())["connectors"] == {NAME: "RETRYING"}
            service.runtime.status.state = "UNASSIGNED"  # not started yet
            assert (await client.get("/readyz")).status == 503
            service.runtimes.clear()
            assert (await client.get("/readyz")).status == 503

    run(scenario())


def test_probes_answer_without_token_and_are_read_only():
    async def scenario():
        async with api() as (client, service):
            assert (await client.get("/healthz")).status == 200
            ready = await client.get("/readyz")
            assert ready.status == 200 and (await ready.json())["connectors"] == {NAME: "RUNNING"}
            metrics = await client.get("/metrics")
            assert metrics.status == 200 and "eduhub_" in await metrics.text()
            # Probes answer whatever Host a probe or Prometheus uses (a pod IP), and nothing but GET.
            assert (await client.get("/healthz", headers={"Host": "10.1.2.3:8083"})).status == 200
            assert (await client.post("/metrics")).status == 401
            assert service.runtime.calls == []

    run(scenario())


# -- Host and cross-site -----------------------------------------------------------------------


def test_a_host_not_configured_is_403_even_with_the_token():
    async def scenario():
        async with api() as (client, service):
            for host in ("evil.example", "evil.example:8083", "127.0.0.1.nip.io:8083", "localhost.evil.example",
                         "127.0.0.1:abc", ""):
                response = await client.post(f"/connectors/{NAME}/restart", headers={**AUTH, "Host": host})
                assert response.status == 403, host
                body = await response.json()
                assert body["reason"] == "host_not_allowed" and "connect.allowed_hosts" in body["error"]
            for host in ("localhost:8083", "LOCALHOST", "127.0.0.1:8083", "[::1]:8083", "localhost."):
                response = await client.get("/connectors", headers={**AUTH, "Host": host})
                assert response.status == 200, host
            assert service.runtime.calls == []

    run(scenario())


def test_configured_host_names_are_answered():
    assert allowed_hosts("0.0.0.0", ["Connect.Hub.Internal"]) == {"localhost", "127.0.0.1", "::1",
                                                                  "connect.hub.internal"}
    assert "10.0.0.5" in allowed_hosts("10.0.0.5")
    config = HubConfig.model_validate({"connect": {"allowed_hosts": "a.example, b.example"}})
    assert config.connect.allowed_hosts == ["a.example", "b.example"]

    async def scenario():
        async with api(allowed_hosts("0.0.0.0", ["connect.hub.internal"])) as (client, _):
            ok = await client.get("/connectors", headers={**AUTH, "Host": "connect.hub.internal:8083"})
            assert ok.status == 200

    run(scenario())


def test_the_worker_url_host_is_allowed_by_default():
    from connectors.process import api_hosts

    config = HubConfig.model_validate({"worker": {"connect_url": "http://connect:8083"},
                                       "connect": {"allowed_hosts": ["ops.example"]}})
    assert api_hosts(config) == ["ops.example", "connect"]


def test_a_plain_text_post_from_a_web_page_cannot_restart_a_connector():
    """The finding: a page on another site posts text/plain (no CORS preflight) to restart a connector."""
    async def scenario():
        async with api() as (client, service):
            page = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
            assert (await client.post(f"/connectors/{NAME}/restart", data="x", headers=page)).status == 403
            # Even a page that somehow knew the token is refused for its origin ...
            for origin in ("http://evil.example", "null", "http://localhost:3000"):
                refused = await client.post(f"/connectors/{NAME}/restart", headers={**AUTH, "Origin": origin},
                                            skip_auto_headers=["Content-Type"])
                assert refused.status == 403 and (await refused.json())["reason"] == "cross_site", origin
            fetched = await client.post(f"/connectors/{NAME}/restart", headers={**AUTH, "Sec-Fetch-Site": "cross-site"},
                                        skip_auto_headers=["Content-Type"])
            assert fetched.status == 403
            # ... and a body that is not JSON is refused whatever sends it.
            for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
                sent = await client.post(f"/connectors/{NAME}/restart", data="x",
                                         headers={**AUTH, "Content-Type": content_type})
                assert sent.status == 415, content_type
            blob = await client.put(f"/connectors/{NAME}/stop", data=b"x", headers=AUTH,  # a body, no type
                                    skip_auto_headers=["Content-Type"])
            assert blob.status == 415
            assert service.runtime.calls == []
            same_origin = await client.post(f"/connectors/{NAME}/restart", skip_auto_headers=["Content-Type"],
                                            headers={**AUTH, "Origin": str(client.make_url("")).rstrip("/")})
            assert same_origin.status == 202
            assert service.runtime.calls == ["restart"]

    run(scenario())


def test_every_answer_carries_the_security_headers():
    async def scenario():
        async with api() as (client, _):
            for path, headers in (("/connectors", AUTH), ("/connectors", {}), ("/connectors/nope/status", AUTH),
                                  ("/metrics", {}), ("/healthz", {})):
                response = await client.get(path, headers=headers)
                assert response.headers["X-Content-Type-Options"] == "nosniff", path
                assert response.headers["X-Frame-Options"] == "DENY"
                assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
                assert response.headers["Referrer-Policy"] == "no-referrer"
                assert response.headers["Cache-Control"] == "no-store"
                assert "Strict-Transport-Security" not in response.headers  # plain HTTP

    run(scenario())


# -- the process: no token, no start -----------------------------------------------------------


def test_eduhub_connect_refuses_to_start_without_a_token(monkeypatch):
    import connectors.process as process

    def never(*args, **kwargs):
        raise AssertionError("no connector may start before the token is checked")

    monkeypatch.setattr(process, "ConnectService", never)
    for value in (None, "", "short"):
        if value is None:
            monkeypatch.delenv("EDUHUB_CONNECT_TOKEN", raising=False)
        else:
            monkeypatch.setenv("EDUHUB_CONNECT_TOKEN", value)
        with pytest.raises(ConfigError, match="connect.token_env: the environment variable EDUHUB_CONNECT_TOKEN"):
            process.run_connect(HubConfig(), echo=lambda line: None)
    monkeypatch.setenv("OTHER_TOKEN", "")
    with pytest.raises(ConfigError, match="OTHER_TOKEN"):
        process.run_connect(HubConfig.model_validate({"connect": {"token_env": "OTHER_TOKEN"}}), echo=print)


# -- the clients: the status page's sampler and the CLI ----------------------------------------


@contextlib.asynccontextmanager
async def listening(**kwargs: Any) -> AsyncIterator[tuple[int, FakeService]]:
    service = FakeService()
    for port in range(BASE_PORT, BASE_PORT + 40):
        try:
            runner = await serve(service, "127.0.0.1", port, token=TOKEN.encode(), **kwargs)  # type: ignore[arg-type]
        except OSError:
            continue
        try:
            yield port, service
        finally:
            await runner.cleanup()
        return
    raise RuntimeError("no free port")


def hub_config(port: int, **connect: Any) -> HubConfig:
    return HubConfig.model_validate({"connect": {"port": port, **connect}, "connectors": [{"name": NAME}]})


def test_the_status_sampler_sends_the_token(monkeypatch):
    async def scenario():
        async with listening() as (port, _):
            monkeypatch.setenv("EDUHUB_CONNECT_TOKEN", TOKEN)
            states, error = await connector_states(connect_options(hub_config(port)))
            assert error is None and [s["state"] for s in states] == ["RUNNING"]
            monkeypatch.setenv("EDUHUB_CONNECT_TOKEN", "a-wrong-token-of-some-length")
            states, error = await connector_states(connect_options(hub_config(port)))
            assert states == [] and "refused" in error and "unauthorized" in error
            assert "a-wrong-token" not in error
            monkeypatch.delenv("EDUHUB_CONNECT_TOKEN")
            states, error = await connector_states(connect_options(hub_config(port)))
            assert states == [] and "EDUHUB_CONNECT_TOKEN" in error

    run(scenario())


def cli(config_path: Path, *args: str) -> Any:
    from hub.ops.cli import app

    return CliRunner().invoke(app, ["--config", str(config_path), *args])


def write_hub_yaml(tmp_path: Path, port: int, **extra: Any) -> Path:
    import yaml

    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"connect": {"port": port}, "local": {"state_dir": str(tmp_path / "state")},
                                    **extra}))
    return path


def test_the_cli_sends_the_token_from_the_environment_or_from_make_run(tmp_path, monkeypatch):
    from hub.demo.run import hand_out_connect_token

    async def scenario():
        async with listening() as (port, service):
            path = write_hub_yaml(tmp_path, port)
            monkeypatch.delenv("EDUHUB_CONNECT_TOKEN", raising=False)
            missing = await asyncio.to_thread(cli, path, "connectors", "list")
            assert missing.exit_code != 0 and "EDUHUB_CONNECT_TOKEN" in missing.output
            monkeypatch.setenv("EDUHUB_CONNECT_TOKEN", TOKEN)
            listed = await asyncio.to_thread(cli, path, "connectors", "restart", NAME)
            assert listed.exit_code == 0, listed.output
            assert service.runtime.calls == ["restart"]
            # `make run` makes a token per run and leaves it, owner-only, where the CLI finds it.
            from hub.core.config import load_config

            config = load_config(path, environ={})
            monkeypatch.delenv("EDUHUB_CONNECT_TOKEN")
            env: dict[str, str] = {}
            token_file = hand_out_connect_token(config, env)
            assert token_file is not None and len(env["EDUHUB_CONNECT_TOKEN"]) >= 32
            assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
            wrong = await asyncio.to_thread(cli, path, "connectors", "list")
            assert wrong.exit_code != 0 and "Bearer" in wrong.output  # the server's reason, not a traceback
            token_file.write_text(TOKEN)
            found = await asyncio.to_thread(cli, path, "connectors", "list")
            assert found.exit_code == 0 and NAME in found.output, found.output
            # An operator's own token is used as it is, and no file is written.
            assert hand_out_connect_token(config, {"EDUHUB_CONNECT_TOKEN": "mine-mine-mine-mine"}) is None

    run(scenario())


# -- TLS ---------------------------------------------------------------------------------------


def test_the_rest_api_serves_https_with_hsts_and_clients_verify_it(tmp_path, monkeypatch):
    certs = make_certs(tmp_path / "tls")
    context = websec.server_ssl_context(certs.cert, certs.key, "connect")

    async def scenario():
        async with listening(ssl_context=context) as (port, _):
            config = HubConfig.model_validate({
                "connect": {"port": port, "tls_cert_file": str(certs.cert), "tls_key_file": str(certs.key)},
                "worker": {"connect_ca_file": str(certs.ca)}, "connectors": [{"name": NAME}]})
            monkeypatch.setenv("EDUHUB_CONNECT_TOKEN", TOKEN)
            options = connect_options(config)
            assert options["base_url"] == f"https://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=options["base_url"], verify=options["verify"]) as client:
                answer = await client.get("/connectors", headers=AUTH)
                assert answer.status_code == 200
                assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
            assert (await connector_states(options))[1] is None
            async with httpx.AsyncClient() as plain:  # the system's CAs do not know the throwaway CA
                with pytest.raises(httpx.ConnectError):
                    await plain.get(f"https://127.0.0.1:{port}/healthz")
                with pytest.raises(httpx.HTTPError):
                    await plain.get(f"http://127.0.0.1:{port}/healthz")

    run(scenario())


def test_web_types_are_what_the_api_uses():
    assert isinstance(make_app(FakeService(), token=b"t" * 16), web.Application)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_app(FakeService(), token=b"")  # type: ignore[arg-type]

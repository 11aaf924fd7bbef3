"""Shared fixtures: the real local Kafka broker and Apicurio registry, and hub workers as processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from hub.core.config import HubConfig, LocalConfig, load_config
from hub.demo.local import LocalStack

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent
# Ports of the suite's own broker and registry, apart from a `make run` stack on the defaults.
# All below 32768: Linux hands out ports from 32768 up to outgoing connections, and a listener
# there can find its port taken.
# EDUHUB_TEST_PORT_OFFSET moves the broker, the registry and the workers' ports, so that two suites
# (two checkouts, or a developer's run beside CI's) can run on one machine at once.
PORT_OFFSET = int(os.environ.get("EDUHUB_TEST_PORT_OFFSET", "0"))
TEST_PORTS = {"kafka_port": 29092 + PORT_OFFSET, "controller_port": 29093 + PORT_OFFSET,
              "registry_port": 28081 + PORT_OFFSET}
# The connector REST API requires a bearer token (connect.token_env): `eduhub connect`, the workers' status pages
# and `eduhub connectors` started by the suite inherit this one.
CONNECT_TOKEN = os.environ.setdefault("EDUHUB_CONNECT_TOKEN", f"test-suite-connect-token-{uuid.uuid4().hex}")
CONNECT_AUTH = {"Authorization": f"Bearer {CONNECT_TOKEN}"}


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} is not installed: the integration suite needs it (.ci/run installs it)"
        if IN_CI:
            pytest.fail(message)  # in CI a missing service is a failure, never a skip
        pytest.skip(message)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory) -> LocalStack:
    """A real single-node Kafka and Apicurio registry for the whole session, stopped at the end."""
    _need("java")
    _need("mvn")
    state_dir = Path(os.environ.get("EDUHUB_TEST_STATE_DIR", tmp_path_factory.mktemp("local")))
    stack = LocalStack(LocalConfig(state_dir=state_dir, **TEST_PORTS))
    try:
        stack.up(echo=lambda line: print(line, file=sys.stderr))
    except Exception:
        stack.down(echo=lambda line: None)
        raise
    yield stack
    stack.down(echo=lambda line: None)


# The secure stack (`eduhub local up --secure`: SASL_SSL + SCRAM, TLS, StandardAuthorizer) of tests/integration/
# test_acl.py, on ports of its own 100 above the plain stack's. Its users: the principals of that test's hub.yaml.
SECURE_TEST_PORTS = {name: port + 100 for name, port in TEST_PORTS.items()}
SECURE_TEST_USERS = ("hub", "conn-a", "conn-b", "sub-alpha", "sub-beta", "alice")


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory) -> LocalStack:
    """A real single-node Kafka in secure mode and its registry (kafkasql over SASL_SSL), stopped at the end."""
    from hub.demo.secure import User, env_name

    _need("java")
    _need("mvn")
    users = [User(name, env_name(name), "test user") for name in SECURE_TEST_USERS]
    stack = LocalStack(LocalConfig(state_dir=tmp_path_factory.mktemp("secure"), **SECURE_TEST_PORTS),
                       secure=True, users=users)
    try:
        stack.up(echo=lambda line: print(line, file=sys.stderr))
    except Exception:
        stack.down(echo=lambda line: None)
        raise
    yield stack
    stack.down(echo=lambda line: None)


def write_config(path: Path, stack: LocalStack, sources: list[str], *, web_port: int, instance_id: str,
                 subscriptions: list[dict] | None = None, extra: dict | None = None) -> Path:
    document = {
        "kafka": {"bootstrap_servers": stack.bootstrap_servers, "ingest_partitions": 3, "canonical_partitions": 3},
        "registry": {"url": stack.registry_url},
        # each test's workers keep their dedup stores beside their hub.yaml (one folder per instance_id)
        "worker": {"instance_id": instance_id, "web_port": web_port, "state_dir": str(path.parent / "worker-state")},
        "sources": [{"id": s} for s in sources],
        "local": {"state_dir": str(stack.state_dir), **TEST_PORTS},
        "subscriptions": subscriptions or [],
        **(extra or {}),
    }
    path.write_text(yaml.safe_dump(document))
    return path


class WorkerProcess:
    """`eduhub worker` as a child process, stopped by its pid."""

    def __init__(self, config_path: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = env or {}  # extra environment, e.g. EDUHUB_KAFKA_PASSWORD for a secure broker
        self.config: HubConfig = load_config(config_path, environ=self.env)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.worker.web_port}"

    def start(self, ready_timeout: float = 120.0) -> "WorkerProcess":
        env = {**os.environ, **self.env, "EDUHUB_CONFIG": str(self.config_path)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "hub", "worker"], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"worker not ready in {ready_timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def unique_source() -> str:
    return f"it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def start_worker(local_stack, tmp_path):
    """Factory: start a worker for the given sources; every worker started is stopped afterwards."""
    started: list[WorkerProcess] = []
    ports = iter(range(26066 + PORT_OFFSET, 26100 + PORT_OFFSET))

    def start(sources: list[str], instance_id: str | None = None,
              subscriptions: list[dict] | None = None, extra: dict | None = None) -> WorkerProcess:
        """A restarted worker passes its predecessor's instance_id, so it fences its transactions."""
        port = next(ports)
        config = write_config(tmp_path / f"hub-{port}.yaml", local_stack, sources, web_port=port,
                              instance_id=instance_id or f"it-{uuid.uuid4().hex[:8]}", subscriptions=subscriptions,
                              extra=extra)
        worker = WorkerProcess(config, tmp_path / f"worker-{port}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    """After the run: the fault scenarios' table (tests/faults), when any scenario ran."""
    from tests.faults.report import RESULTS, table

    if RESULTS:
        terminalreporter.section("fault scenarios")
        for line in table():
            terminalreporter.write_line(line)

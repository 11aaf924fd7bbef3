"""The Dockerfile, parsed (no container engine here), and the HEALTHCHECK's probe against a real HTTP server."""

from __future__ import annotations

import http.server
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hub.core.config import ENV_OVERRIDES, load_config
from hub.ops import healthcheck

ROOT = Path(__file__).resolve().parents[2]
EXACT_TAG = re.compile(r"^[a-z0-9./_-]+:v?\d+\.\d+\.\d+(?:-[a-z0-9.-]+)?$")
# Variables of the base image and of Python/pip themselves, besides the hub's.
TOOL_ENV = re.compile(r"^(PYTHON|PIP_)\w+$")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        current += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


DOCKERFILE = instructions((ROOT / "Dockerfile").read_text())


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order (the ARGs before the first FROM are not a stage)."""
    found: list[list[tuple[str, str]]] = []
    for instruction in DOCKERFILE:
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def global_args() -> dict[str, str]:
    args = {}
    for name, value in DOCKERFILE:
        if name == "FROM":
            break
        if name == "ARG" and "=" in value:
            key, default = value.split("=", 1)
            args[key] = default
    return args


def bases() -> list[str]:
    args = global_args()
    return [re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], value.split()[0])
            for stage in stages() for name, value in stage if name == "FROM"]


def env_names(stage: list[tuple[str, str]]) -> set[str]:
    return {pair.split("=", 1)[0] for name, value in stage if name == "ENV" for pair in shlex.split(value)}


def test_two_stages_on_the_same_exactly_pinned_base():
    found = bases()
    assert len(found) >= 2
    for base in found:
        assert EXACT_TAG.match(base), f"{base}: pin an exact version tag (no latest, no floating 3.11)"
    assert len(set(found)) == 1, "builder and runtime must run the same Python"


def test_the_builder_makes_wheels_and_the_runtime_installs_only_them():
    builder, runtime = stages()[0], stages()[-1]
    builder_runs = " ".join(value for name, value in builder if name == "RUN")
    assert "pip wheel --no-deps -w /wheels ." in builder_runs and "pip wheel -w /wheels ." in builder_runs
    runtime_runs = " ".join(value for name, value in runtime if name == "RUN")
    assert "--no-index" in runtime_runs and "/wheels" in runtime_runs  # nothing fetched from an index
    assert "PIP_NO_CACHE_DIR" in env_names(runtime) or "--no-cache-dir" in runtime_runs
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", runtime_runs), "no compilers at run time"
    assert not any(name == "COPY" and "/wheels" in value for name, value in runtime), "wheels must not become a layer"


def test_runs_as_a_numeric_non_root_user_that_owns_the_state_volume():
    runtime = stages()[-1]
    user = [value for name, value in runtime if name == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), "numeric, so runAsNonRoot can check it"
    runs = " ".join(value for name, value in runtime if name == "RUN")
    # The state volume, and the folder compose's cluster-certs service writes the cluster's CA into.
    assert re.search(rf"chown {user} (\S+ )*/var/lib/eduhub\b", runs) and re.search(rf"chown {user} .*/certs\b", runs)
    assert ("VOLUME", "/var/lib/eduhub") in runtime


def test_entrypoint_command_ports_and_healthcheck():
    runtime = dict(stages()[-1])
    assert json.loads(runtime["ENTRYPOINT"]) == ["eduhub"]
    assert json.loads(runtime["CMD"]) == ["worker"]
    config = load_config(ROOT / "hub.yaml", environ={})
    http_ports = {c["port"] for c in config.connectors if c["kind"] == "http"}
    assert {config.worker.web_port, config.connect.port} | http_ports <= {int(p) for p in runtime["EXPOSE"].split()}
    probe = runtime["HEALTHCHECK"]
    command = json.loads(probe[probe.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-m"], "exec form, python: the slim base has no curl"
    module = ROOT / (command[2].replace(".", "/") + ".py")
    assert module.is_file(), f"HEALTHCHECK runs {command[2]}, which does not exist"


def test_copies_what_the_processes_read_and_sets_only_variables_the_hub_reads():
    copies = [value.split() for stage in stages() for name, value in stage if name == "COPY"]
    for args in copies:
        if any(a.startswith("--from") for a in args):
            continue
        for source in [a for a in args if not a.startswith("--")][:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    runtime = stages()[-1]
    env = dict(pair.split("=", 1) for name, value in runtime if name == "ENV" for pair in shlex.split(value))
    read = set(ENV_OVERRIDES) | {"EDUHUB_CONFIG", "EDUHUB_SCHEMA_DIR", "EDUHUB_DEPLOY_DIR", healthcheck.URL_ENV}
    assert {n for n in env if not TOOL_ENV.match(n)} <= read
    destinations = {args[-1].rstrip("/").removeprefix("./") for args in copies}
    # WORKDIR /app: relative destinations land there; the installed package has neither file.
    assert env["EDUHUB_CONFIG"].removeprefix("/app/") in destinations
    assert env["EDUHUB_SCHEMA_DIR"].removeprefix("/app/") in destinations


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip().lstrip("*/").rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".eduhub", ".git", "test-artifacts", "__pycache__"} <= ignored


# ---- hub/ops/healthcheck.py, as the HEALTHCHECK runs it: a process and its exit code --------------------

class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.server.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def probe(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.ops.healthcheck"], env={healthcheck.URL_ENV: url},
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_probe_exits_0_only_when_healthz_answers_200(server, status, code):
    server.status = status
    result = probe(f"http://127.0.0.1:{server.server_port}/healthz")
    assert result.returncode == code, result
    assert str(status) in result.stdout + result.stderr


def test_probe_fails_when_nothing_listens():
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert probe(f"http://127.0.0.1:{port}/healthz").returncode == 1


def test_probe_defaults_to_the_workers_port():
    assert healthcheck.health_url({}) == "http://127.0.0.1:6066/healthz"
    assert healthcheck.health_url({"EDUHUB_WEB_PORT": "7000"}) == "http://127.0.0.1:7000/healthz"
    assert healthcheck.health_url({healthcheck.URL_ENV: "http://127.0.0.1:8083/healthz",
                                   "EDUHUB_WEB_PORT": "7000"}) == "http://127.0.0.1:8083/healthz"
    assert healthcheck.DEFAULT_PORT == load_config(ROOT / "hub.yaml", environ={}).worker.web_port

"""The hub image without Docker: its wheel, /app rebuilt from the Dockerfile, its commands on a broker of its own."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import secrets
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, ResourceType

from hub.contract.schemas import Catalogue
from hub.core.config import HubConfig, LocalConfig, load_config
from hub.demo.local import LocalStack
from hub.ops.deploy_k8s import MIN_INSYNC_REPLICAS, kafka_topics
from hub.ops.topology import TopicSpec, topic_plan
from tests.conftest import PORT_OFFSET, _need
from tests.compose import interpolate
from tests.dockerfile import Copy, ImageRoot, Stage, stages

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE, COMPOSE = ROOT / "Dockerfile", ROOT / "docker-compose.yml"
# A broker and registry of this module's own: other tests create the same topic names on the session's stack.
OWN_PORTS = {"kafka_port": 29392 + PORT_OFFSET, "controller_port": 29393 + PORT_OFFSET,
             "registry_port": 28381 + PORT_OFFSET}
# Where this machine puts the ports a container has to itself: the worker's web port, connect.port, the http source's.
WEB_PORT, CONNECT_PORT, HTTP_PORT = 26366 + PORT_OFFSET, 28383 + PORT_OFFSET, 28388 + PORT_OFFSET
READY_BOUND_S = 120.0
# Apicurio's own topics: the kafkasql storage's journal (and snapshots), and its event stream.
REGISTRY_TOPIC = re.compile(r"^(kafkasql-.*|registry-events)$")
PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")


@dataclass
class Image:
    stage: Stage
    root: ImageRoot
    wheel: Path
    venv: Path
    from_other_stages: list[Copy]
    home: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


@dataclass
class Run:
    """One long-running command of the image: what its HEALTHCHECK said before, while and after it ran."""
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_before: int | None = None
    ready: bool = False
    seen: str = ""
    returncode: int | None = None
    health_after: int | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def problems(self) -> list[str]:
        return [line for line in self.log.splitlines() if PROBLEM.search(line)]


def _wheel_context_stage(all_stages: list[Stage]) -> Stage:
    """The stage that copies pyproject.toml from the build context: the one that builds the wheel."""
    for stage in all_stages:
        if any(c.from_stage is None and ("pyproject.toml" in c.sources or "." in c.sources) for c in stage.copies):
            return stage
    raise AssertionError("no stage of the Dockerfile copies pyproject.toml: nothing can build the wheel")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    """Build the wheel from what the Dockerfile copies, assemble its final stage's /app, install the wheel."""
    tmp = tmp_path_factory.mktemp("image")
    all_stages = stages(DOCKERFILE.read_text())
    final = all_stages[-1]
    builder = ImageRoot(tmp / "builder", _wheel_context_stage(all_stages))
    builder.copy_from_context(ROOT)
    assert (builder.workdir / "pyproject.toml").is_file(), f"no pyproject.toml in the builder's {builder.stage.workdir}"
    # The venv's setuptools is older than pyproject's build requirement (setuptools>=77): build isolation,
    # as `pip wheel .` in the image does.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                            "-w", str(tmp / "dist"), str(builder.workdir)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = (tmp / "dist").glob("eduhub-*.whl")
    root = ImageRoot(tmp / "root", final)
    from_other_stages = root.copy_from_context(ROOT)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies without a download: a plain path line joins sys.path after the venv's own site-packages;
    # the .pth files in that folder are not processed, so the checkout's editable install stays out.
    (Path(purelib) / "eduhub-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "--no-index", "--ignore-installed",
                                "--disable-pip-version-check", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    (tmp / "home").mkdir()
    return Image(final, root, wheel, venv, from_other_stages, tmp / "home")


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory) -> LocalStack:
    _need("java")
    _need("mvn")
    stack = LocalStack(LocalConfig(state_dir=tmp_path_factory.mktemp("own-stack"), **OWN_PORTS))
    try:
        stack.up(echo=lambda line: print(line, file=sys.stderr))
        yield stack
    finally:
        stack.down(echo=lambda line: None)


def _local(value: str, image: Image, stack: LocalStack, ports: dict[int, int]) -> str:
    """A compose value moved onto this machine: this folder for an image path, the test's broker, registry
    and ports for compose's service names and the container's own ports."""
    value = image.root.rewrite(value)
    value = re.sub(r"\bkafka:\d+", stack.bootstrap_servers, value)
    value = re.sub(r"\bregistry:\d+", f"127.0.0.1:{stack.config.registry_port}", value)
    value = re.sub(r"\b(?:127\.0\.0\.1|localhost|connect|worker[-\w]*):(\d+)",
                   lambda m: f"127.0.0.1:{ports.get(int(m.group(1)), int(m.group(1)))}", value)
    return "127.0.0.1" if value == "0.0.0.0" else value


COMPOSE_SECRETS: dict[str, str] = {}


def _secret(name: str) -> str:
    """A required compose variable (a secret): one random value per name, the same for every service."""
    return COMPOSE_SECRETS.setdefault(name, secrets.token_urlsafe(32))


def _compose(command: str) -> dict:
    """The first compose service of our image that runs `command` (worker-1 for "worker")."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for service in services.values():
        if service.get("build") is not None and (service.get("command") or ["worker"]) == [command]:
            return service
    raise AssertionError(f"no service of docker-compose.yml runs {command!r}")


def service_env(image: Image, stack: LocalStack, service: str, config: HubConfig) -> dict[str, str]:
    """The Dockerfile's ENV, then what compose gives the service running `service`, moved onto this machine."""
    ports = {config.worker.web_port: WEB_PORT, config.connect.port: CONNECT_PORT,
             **{int(c["port"]): HTTP_PORT for c in config.connectors if c.get("kind") == "http" and c.get("port")}}
    env = {"PATH": f"{image.bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(image.home), "LANG": "C.UTF-8"}
    env.update({k: image.root.rewrite(v) for k, v in image.stage.env.items() if k not in ("PATH", "VIRTUAL_ENV")})
    environment = _compose(service).get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    for name, value in environment.items():
        if name == "EDUHUB_CONFIG" and image.root.rewrite(str(value)) == str(value):
            continue  # compose mounts a hub.yaml of its own (its connectors need its demo-db): run the image's
        env[name] = _local(interpolate(str(value), COMPOSE_SECRETS, required=_secret), image, stack, ports)
    # The container's own port 6066 is this machine's WEB_PORT (the HEALTHCHECK's default follows EDUHUB_WEB_PORT).
    env["EDUHUB_WEB_PORT"] = str(WEB_PORT)
    return env


def healthcheck_argv(image: Image, service: str) -> list[str]:
    """compose's healthcheck of the service when it has one, else the image's HEALTHCHECK."""
    test = (_compose(service).get("healthcheck") or {}).get("test")
    if test is not None:
        if isinstance(test, str) or test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", test if isinstance(test, str) else test[1]]
        return list(test[1:])
    check = image.stage.healthcheck
    assert check not in (None, "NONE"), "the Dockerfile's final stage has no HEALTHCHECK"
    return ["/bin/sh", "-c", check] if isinstance(check, str) else list(check)


def _health(argv: list[str], run: Run, cwd: Path) -> int:
    try:
        done = subprocess.run(argv, env=run.env, cwd=cwd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        run.seen = "the healthcheck did not finish in 30 s"
        return -1
    run.seen = (done.stdout + done.stderr).strip()
    return done.returncode


def run_service(image: Image, argv: list[str], env: dict[str, str], health: list[str], ready_url: str,
                log_path: Path) -> Run:
    """Start argv as the container would, wait (bounded) until HEALTHCHECK passes and /readyz answers 200,
    then SIGTERM it by pid; the process is stopped whatever happens."""
    run = Run(argv, env, log_path)
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable and Path(executable).parent == image.bin, f"{argv[0]} resolves to {executable}"
    cwd = image.root.workdir
    run.health_before = _health(health, run, cwd)
    with log_path.open("wb") as log:
        process = subprocess.Popen([executable, *argv[1:]], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_BOUND_S
        while process.poll() is None and time.monotonic() < deadline:
            if _health(health, run, cwd) == 0:
                try:
                    if httpx.get(ready_url, timeout=3).status_code == 200:
                        run.ready = True
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        run.returncode = process.returncode
    run.health_after = _health(health, run, cwd)
    return run


@dataclass
class Runs:
    worker: Run
    connect: Run
    connect_config_path: Path
    replay: subprocess.CompletedProcess
    configs: dict[str, HubConfig] = field(default_factory=dict)


def _connect_config(image: Image, path: Path) -> Path:
    """The image's hub.yaml with connect.port and the http source's port moved to this test's (no variable
    overrides them: a deployment mounts its own hub.yaml); everything else as the image has it."""
    document = yaml.safe_load(image.root.path(image.stage.env["EDUHUB_CONFIG"]).read_text())
    document.setdefault("connect", {})["port"] = CONNECT_PORT
    for connector in document.get("connectors") or []:
        if connector.get("kind") == "http":
            connector["port"] = HTTP_PORT
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(image, own_stack, tmp_path_factory) -> Runs:
    """`eduhub worker` (ENTRYPOINT + CMD), then `eduhub connect` (compose's command), then `eduhub dlq replay`."""
    tmp = tmp_path_factory.mktemp("runs")
    image_config = image.root.path(image.stage.env["EDUHUB_CONFIG"])
    base = load_config(image_config, environ={})
    assert isinstance(image.stage.entrypoint, list) and isinstance(image.stage.cmd, list), \
        "ENTRYPOINT and CMD must be in exec (JSON) form, or SIGTERM reaches a shell instead of the hub"
    entrypoint = image.stage.entrypoint

    worker_env = service_env(image, own_stack, "worker", base)
    worker = run_service(image, entrypoint + image.stage.cmd, worker_env, healthcheck_argv(image, "worker"),
                         f"http://127.0.0.1:{WEB_PORT}/readyz", tmp / "worker.log")

    # hub.yaml's demo connectors read .eduhub/demo under the working directory; the image has no such folder
    # (without it `eduhub connect` exits 1 at start: "unable to open database file"). Here a volume would hold
    # the seed systems: made by the checkout's demo code, as `make run` makes them.
    subprocess.run([sys.executable, "-c", "from hub.demo.run import prepare_systems; prepare_systems()"],
                   cwd=image.root.workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, timeout=120)
    connect_env = service_env(image, own_stack, "connect", base)
    connect_env["EDUHUB_CONFIG"] = str(_connect_config(image, tmp / "hub.connect.yaml"))
    command = _compose("connect")["command"]
    connect = run_service(image, entrypoint + list(command), connect_env, healthcheck_argv(image, "connect"),
                          f"http://127.0.0.1:{CONNECT_PORT}/readyz", tmp / "connect.log")

    # Nothing was ingested, so no dead letter exists: the replay sends nothing but creates hub.dlq.replays.
    replay = subprocess.run([shutil.which(entrypoint[0], path=worker_env["PATH"]), *entrypoint[1:], "dlq", "replay"],
                            cwd=image.root.workdir, env=worker_env, capture_output=True, text=True, timeout=180)
    found = Runs(worker, connect, Path(connect_env["EDUHUB_CONFIG"]), replay)
    found.configs = {"worker": load_config(image_config, environ=worker_env),
                     "connect": load_config(found.connect_config_path, environ=connect_env)}
    for name, run in (("worker", worker), ("connect", connect)):
        print(f"--- {name}: {run.argv} exit {run.returncode}, ready {run.ready}, healthcheck {run.seen!r}; "
              f"problem lines:", *run.problems()[:20], sep="\n", file=sys.stderr)
    return found


def test_the_wheel_carries_both_packages_the_status_page_and_the_eduhub_command(image):
    with zipfile.ZipFile(image.wheel) as wheel:
        names = set(wheel.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        parser.read_string(wheel.read(entry_points).decode())
    modules = {p.relative_to(ROOT).as_posix() for package in ("hub", "connectors")
               for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert "hub/__init__.py" in modules and "connectors/__init__.py" in modules
    assert sorted(modules - names) == []
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "hub" / "runtime" / "static").glob("*.html")}
    assert "hub/runtime/static/status.html" in pages and pages <= names
    assert dict(parser["console_scripts"]) == {"eduhub": "hub.ops.cli:main"}
    assert not [n for n in names if n.startswith(("tests/", "schemas/", "deploy/"))]


def test_the_image_root_has_what_the_env_points_at_and_runs_the_installed_wheel(image):
    env = image.stage.env
    paths = {name: image.root.rewrite(value) for name, value in env.items() if image.root.rewrite(value) != value}
    assert {"EDUHUB_CONFIG", "EDUHUB_SCHEMA_DIR", "EDUHUB_WORKER_STATE_DIR"} <= set(paths)
    assert [f"{name}={env[name]}" for name, path in paths.items() if not Path(path).exists()] == []
    assert list(Path(paths["EDUHUB_SCHEMA_DIR"]).glob("*/*.avsc"))
    probe = ("import hub, connectors, importlib.metadata as m; print(hub.__file__); print(connectors.__file__); "
             "print(m.distribution('eduhub').locate_file(''))")
    done = subprocess.run([str(image.bin / "python"), "-c", probe], cwd=image.home, capture_output=True, text=True,
                          check=True, timeout=60)
    for line in done.stdout.splitlines():
        assert Path(line).resolve().is_relative_to(image.venv.resolve()), line
        assert not Path(line).resolve().is_relative_to(ROOT), line


def test_the_worker_image_is_healthy_ready_and_stops_cleanly_on_sigterm(runs):
    worker = runs.worker
    assert worker.health_before != 0, "the HEALTHCHECK passed before the worker started"
    assert worker.ready, f"not healthy and ready in {READY_BOUND_S:.0f} s ({worker.seen}):\n{worker.log[-4000:]}"
    assert worker.returncode == 0, worker.log[-4000:]
    assert worker.health_after != 0, "the HEALTHCHECK still passes after the worker stopped"
    assert worker.problems() == []


def test_the_connect_image_is_healthy_ready_and_stops_cleanly_on_sigterm(runs):
    connect = runs.connect
    assert connect.health_before != 0, "the HEALTHCHECK passed before the connector runtime started"
    assert connect.ready, f"not healthy and ready in {READY_BOUND_S:.0f} s ({connect.seen}):\n{connect.log[-4000:]}"
    assert connect.returncode == 0, connect.log[-4000:]
    assert connect.health_after != 0
    assert connect.problems() == []


def _broker_topics(bootstrap: str) -> tuple[dict[str, int], dict[str, dict[str, tuple[str, bool]]]]:
    """Partitions and configs (value, set on the topic) of every topic but Kafka's and the registry's own."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=30)
    partitions = {name: len(t.partitions) for name, t in metadata.topics.items()
                  if not name.startswith("__") and not REGISTRY_TOPIC.match(name)}
    configs, dynamic = {}, ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    for resource, future in admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in partitions]).items():
        configs[resource.name] = {k: (e.value, int(getattr(e.source, "value", e.source)) == dynamic)
                                  for k, e in future.result(timeout=30).items()}
    return partitions, configs


def plan_diff(plan: list[TopicSpec], partitions: dict[str, int], configs: dict[str, dict]) -> list[str]:
    diff = []
    for spec in plan:
        if spec.name not in partitions:
            diff.append(f"- {spec.name}: planned ({spec.partitions} partitions, {spec.configs}, by {spec.created_by}), "
                        "not on the broker")
            continue
        if partitions[spec.name] != spec.partitions:
            diff.append(f"~ {spec.name}: plan {spec.partitions} partitions, broker {partitions[spec.name]}")
        for key, value in spec.configs.items():
            actual = configs[spec.name].get(key, (None, False))[0]
            if actual != value:
                diff.append(f"~ {spec.name}: {key} plan {value!r}, broker {actual!r}")
    for name in sorted(set(partitions) - {s.name for s in plan}):
        set_here = {k: v for k, (v, dynamic) in configs[name].items() if dynamic}
        diff.append(f"+ {name}: on the broker ({partitions[name]} partitions, {set_here}), not in the plan")
    return diff


def test_the_broker_holds_exactly_the_topics_topic_plan_declares(runs, own_stack, image):
    assert runs.replay.returncode == 0, runs.replay.stdout + runs.replay.stderr
    assert "(of 0 matching)" in runs.replay.stdout, runs.replay.stdout
    catalogue = Catalogue.load(image.root.path(image.stage.env["EDUHUB_SCHEMA_DIR"]))
    plan = topic_plan(runs.configs["worker"], catalogue)
    assert plan == topic_plan(runs.configs["connect"], catalogue)  # the connect config differs in ports only
    assert {s.created_by for s in plan} == {"worker", "connect", "eduhub dlq replay"}
    partitions, configs = _broker_topics(own_stack.bootstrap_servers)
    diff = plan_diff(plan, partitions, configs)
    assert diff == [], "topic_plan vs the broker after worker, connect and dlq replay ran:\n" + "\n".join(diff)
    undeclared = {name: {k: v for k, (v, dynamic) in configs[name].items() if dynamic and k not in spec.configs}
                  for spec in plan for name in [spec.name]}
    print("configs set on the broker that the plan does not declare:",
          {n: c for n, c in undeclared.items() if c} or "none", file=sys.stderr)


def test_the_generated_kafka_topics_are_the_topics_the_processes_created(runs, own_stack):
    """What `eduhub deploy k8s` writes for this very config, read back from its KafkaTopics: the same topics,
    partitions and configs as the broker holds (min.insync.replicas is the cluster's, not the hub's)."""
    declared = []
    for doc in kafka_topics(runs.configs["worker"]):
        config = dict(doc["spec"]["config"])
        assert config.pop("min.insync.replicas") == str(MIN_INSYNC_REPLICAS)
        declared.append(TopicSpec(doc["spec"]["topicName"], doc["spec"]["partitions"], config))
    partitions, configs = _broker_topics(own_stack.bootstrap_servers)
    diff = plan_diff(declared, partitions, configs)
    assert diff == [], "generated KafkaTopics vs the broker:\n" + "\n".join(diff)

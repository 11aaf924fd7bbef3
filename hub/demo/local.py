"""Local real parts: a single-node Kafka (KRaft) and an Apicurio registry, as processes we own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

import httpx

from hub.core.config import LocalConfig

if TYPE_CHECKING:
    from hub.demo.secure import User

DEPLOY_DIR = Path(os.environ.get("EDUHUB_DEPLOY_DIR", Path(__file__).resolve().parents[2] / "deploy"))
KAFKA_POM = DEPLOY_DIR / "kafka" / "pom.xml"
REGISTRY_POM = DEPLOY_DIR / "registry" / "pom.xml"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


class LocalError(Exception):
    """A local part could not be resolved, started or stopped; the message says what to do."""


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _mvn(args: list[str], log_path: Path) -> None:
    if shutil.which("mvn") is None:
        raise LocalError("Maven (mvn) is not on PATH: install it (Debian: apt-get install maven)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        done = subprocess.run(["mvn", "-B", "-q", *args], stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise LocalError(f"mvn {' '.join(args)} failed (exit {done.returncode}); see {log_path}")


def resolve_kafka(cache_dir: Path, echo=print) -> Path:
    """The folder of Kafka's jars, resolved from deploy/kafka/pom.xml with Maven on first use."""
    libs = cache_dir / f"kafka-{_fingerprint(KAFKA_POM)}" / "libs"
    if (libs / ".complete").exists():
        return libs
    echo(f"resolving Kafka jars with Maven into {libs} (first time only)…")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    _mvn(["-f", str(KAFKA_POM), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
         cache_dir / "logs" / "mvn-kafka.log")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".complete").touch()
    return libs


def resolve_registry(cache_dir: Path, echo=print) -> Path:
    """The runnable jar of Apicurio Registry, copied from Maven Central and unpacked on first use."""
    home = cache_dir / f"registry-{_fingerprint(REGISTRY_POM)}"
    if not (home / ".complete").exists():
        echo(f"resolving Apicurio Registry with Maven into {home} (first time only)…")
        shutil.rmtree(home, ignore_errors=True)
        download = home / "download"
        _mvn(["-f", str(REGISTRY_POM), "dependency:copy", f"-Dregistry.outputDirectory={download}"],
             cache_dir / "logs" / "mvn-registry.log")
        archives = list(download.glob("*.tar.gz"))
        if len(archives) != 1:
            raise LocalError(f"expected one registry archive in {download}, found {archives}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(home / "app", filter="data")
        archives[0].unlink()
        (home / ".complete").touch()
    # 3.0.x ships `*-runner.jar`; later versions ship `quarkus-run.jar`.
    jars = sorted((home / "app").glob("quarkus-run.jar")) + sorted((home / "app").glob("*-runner.jar"))
    if not jars:
        raise LocalError(f"no runnable jar in {home / 'app'}; delete {home} and run `eduhub local up` again")
    return jars[0]


def _cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _alive(pid: int, marker: str) -> bool:
    """True when `pid` is running and is one of ours (its command line carries our marker)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if marker.encode() not in cmdline:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _running(pid: int) -> bool:
    """True while the pid exists and is not a zombie (an exiting process loses its cmdline first,
    so `_alive` would already say no)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Part:
    name: str
    pid: int
    log: str
    url: str


class LocalStack:
    """The local broker and registry of one state folder: start, check, stop exactly what we started.

    Example::

        stack = LocalStack(LocalConfig(kafka_port=19092, controller_port=19093, registry_port=18081,
                                       state_dir=Path("/tmp/eduhub-test")))
        stack.up()       # resolves jars on first use, starts Kafka then the registry, waits for both
        stack.status()   # {"kafka": {...pid, log, url, running}, "registry": {...}}
        stack.down()     # SIGTERM, then SIGKILL after 30 s, by the recorded pids only
    """

    def __init__(self, config: LocalConfig, secure: bool = False, users: list[User] | tuple[User, ...] = ()) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir).resolve()
        self.cache_dir = Path(config.cache_dir).expanduser()
        self.pid_file = self.state_dir / "pids.json"
        self.logs = self.state_dir / "logs"
        # Passed to each JVM as a system property, so a pid is only ever taken for ours.
        self.marker = f"-Deduhub.local={self.state_dir}"
        self._children: dict[int, subprocess.Popen] = {}
        # Secure mode (`--secure`): SASL_SSL + SCRAM, TLS from a throwaway CA, StandardAuthorizer (hub/demo/secure.py).
        if secure:
            from hub.demo.secure import SecureSetup
        self.secure = SecureSetup(self.state_dir, users) if secure else None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.config.kafka_port}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.config.registry_port}/apis/ccompat/v7"

    def _read_pids(self) -> dict[str, Part]:
        try:
            raw = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return {}
        return {name: Part(**part) for name, part in raw.items()}

    def _write_pids(self, parts: dict[str, Part]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps({n: p.__dict__ for n, p in parts.items()}, indent=2))

    def status(self) -> dict[str, dict]:
        return {
            name: {**part.__dict__, "running": _alive(part.pid, self.marker)}
            for name, part in self._read_pids().items()
        }

    def up(self, echo=print) -> dict[str, Part]:
        """Start what is not running yet (running twice is harmless) and wait until both answer."""
        parts = self._read_pids()
        java = shutil.which("java")
        if java is None:
            raise LocalError("Java is not on PATH: install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
        self.logs.mkdir(parents=True, exist_ok=True)

        # Kafka first: the registry keeps its schemas in it.
        self._ensure(parts, "kafka", lambda: self._start_kafka(java, resolve_kafka(self.cache_dir, echo)),
                     self._kafka_answers, echo)
        self._secure_users()
        self._ensure(parts, "registry", lambda: self._start_registry(java, resolve_registry(self.cache_dir, echo)),
                     self._registry_answers, echo)
        return parts

    def _secure_users(self) -> None:
        """Secure mode, broker up: create users added to hub.yaml since the format, and the registry's ACLs."""
        if self.secure is not None:
            from hub.demo.secure import grant_registry, sync_users

            admin = self.secure.confluent_config(self.bootstrap_servers)
            sync_users(admin, self.secure.prepare())
            grant_registry(admin)

    def _ensure(self, parts: dict[str, Part], name: str, start: Callable[[], Part], answers: Callable[[], bool],
                echo: Callable[[str], None]) -> None:
        """Reuse the part if our process still runs, else start it (pids saved at once); wait until it answers."""
        part = parts.get(name)
        if part is None or not _alive(part.pid, self.marker):
            part = parts[name] = start()
            self._write_pids(parts)
        self._wait(part, answers)
        echo(f"{name:9} {part.url}  pid {part.pid}  log {part.log}")

    def _spawn(self, name: str, argv: list[str], url: str, cwd: Path) -> Part:
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            # A session of its own: Ctrl-C in the caller's terminal does not reach it half-way,
            # and `down` can signal it and its children as one group.
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=cwd, start_new_session=True)
        self._children[process.pid] = process
        return Part(name, process.pid, str(log_path), url)

    def _start_kafka(self, java: str, libs: Path) -> Part:
        cfg = self.config
        data_dir = self.state_dir / "kafka-data"
        properties = self.state_dir / "server.properties"
        values = dict(kafka_port=cfg.kafka_port, controller_port=cfg.controller_port, data_dir=data_dir)
        text = Template((DEPLOY_DIR / "kafka" / "server.properties").read_text()).substitute(values)
        mode_file, mode = self.state_dir / "kafka-mode", "secure" if self.secure else "plain"
        if (data_dir / "meta.properties").exists() and (mode_file.read_text().strip() if mode_file.exists()
                                                        else "plain") != mode:
            raise LocalError(f"{data_dir} was formatted for a {'plain' if self.secure else 'secure'} broker: run "
                             f"`eduhub local down` and delete {data_dir}, or use another local.state_dir")
        if self.secure is not None:
            self.secure.prepare()
            text = self.secure.server_properties(text, Template((DEPLOY_DIR / "kafka" / "secure.properties")
                                                                .read_text()), **values)
        properties.unlink(missing_ok=True)
        properties.touch(mode=0o600)  # secure mode: it holds the admin password
        properties.write_text(text)
        classpath = f"{libs}/*"
        if not (data_dir / "meta.properties").exists():
            formatted = subprocess.run(
                # `--cluster-id=ID`, not `-t ID`: one id in 64 starts with "-", which argparse
                # would take for an option. Secure mode adds `--add-scram` for every user.
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                 f"--cluster-id={_cluster_id()}", "-c", str(properties),
                 *(self.secure.format_args() if self.secure else [])],
                capture_output=True, text=True, check=False)
            if formatted.returncode != 0:
                out = formatted.stderr or formatted.stdout
                raise LocalError(f"formatting KRaft storage failed: {self.secure.redact(out) if self.secure else out}")
            mode_file.write_text(mode)
        argv = [java, self.marker, f"-Xmx{cfg.kafka_heap}", f"-Xms{cfg.kafka_heap}",
                f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'kafka' / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.logs}", "-cp", classpath, "kafka.Kafka", str(properties)]
        return self._spawn("kafka", argv, self.bootstrap_servers, self.state_dir)

    def _start_registry(self, java: str, jar: Path) -> Part:
        cfg = self.config
        argv = [java, self.marker, f"-Xmx{cfg.registry_heap}",
                f"-Dquarkus.http.port={cfg.registry_port}", "-Dquarkus.http.host=127.0.0.1",
                # Schemas live in a Kafka topic (like Confluent's _schemas), so ids survive restarts.
                "-Dapicurio.storage.kind=kafkasql",
                f"-Dapicurio.kafkasql.bootstrap.servers={self.bootstrap_servers}",
                *(self.secure.registry_args() if self.secure else []), "-jar", str(jar)]
        return self._spawn("registry", argv, self.registry_url, jar.parent)

    def _kafka_answers(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        # Refused connections are expected while the broker boots; aiokafka logs each one.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000,
                                        **(self.secure.aiokafka_kwargs() if self.secure else {}))
            try:
                await admin.start()
                await admin.list_topics()
                return True
            except Exception:
                return False
            finally:
                await admin.close()

        return asyncio.run(probe())

    def _registry_answers(self) -> bool:
        try:
            return httpx.get(f"{self.registry_url}/subjects", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, part: Part, answers) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        child = self._children.get(part.pid)
        while time.monotonic() < deadline:
            # A child we just spawned may not have exec'd java yet, so ask the handle, not /proc.
            running = child.poll() is None if child is not None else _alive(part.pid, self.marker)
            if not running:
                raise LocalError(f"{part.name} (pid {part.pid}) exited during start-up; its log ends:\n"
                                 f"{_tail(Path(part.log))}")
            if answers():
                return
            time.sleep(0.5)
        raise LocalError(f"{part.name} did not answer within {START_TIMEOUT_S:.0f} s; see {part.log}")

    def stop_part(self, name: str, echo=print) -> int | None:
        """Stop ONE running part ("kafka" or "registry") by its recorded pid and forget it; its ports,
        data and config stay, so `start_part` brings it back as it was. Returns the pid stopped, or
        None when it was not running. (Fault tests use this to take one part away mid-stream.)"""
        if name not in ("kafka", "registry"):
            raise LocalError(f"unknown local part {name!r}: expected kafka or registry")
        parts = self._read_pids()
        part = parts.pop(name, None)
        stopped = None
        if part is not None and _alive(part.pid, self.marker):
            self._stop(part)
            stopped = part.pid
            echo(f"stopped {name} (pid {part.pid})")
        self._write_pids(parts)
        return stopped

    def answers(self, name: str) -> bool:
        """True when the part ("kafka" or "registry") answers a request now."""
        return {"kafka": self._kafka_answers, "registry": self._registry_answers}[name]()

    def start_part(self, name: str, echo=print) -> Part:
        """Start ONE part again (same ports, same data folder) unless it runs, and wait until it answers.
        The registry keeps its schemas in Kafka (kafkasql): it is only started while the broker answers."""
        java = shutil.which("java")
        if java is None:
            raise LocalError("Java is not on PATH: install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
        self.logs.mkdir(parents=True, exist_ok=True)
        parts = self._read_pids()
        if name == "kafka":
            self._ensure(parts, "kafka", lambda: self._start_kafka(java, resolve_kafka(self.cache_dir, echo)),
                         self._kafka_answers, echo)
            self._secure_users()
        elif name == "registry":
            if not self._kafka_answers():
                raise LocalError("the registry keeps its schemas in Kafka: start the broker first")
            self._ensure(parts, "registry",
                         lambda: self._start_registry(java, resolve_registry(self.cache_dir, echo)),
                         self._registry_answers, echo)
        else:
            raise LocalError(f"unknown local part {name!r}: expected kafka or registry")
        return parts[name]

    def down(self, echo=print) -> list[int]:
        """Stop the processes this state folder started (registry first), by recorded pid only."""
        parts = self._read_pids()
        stopped = []
        for name in ("registry", "kafka"):
            part = parts.get(name)
            if part is None:
                continue
            if _alive(part.pid, self.marker):
                self._stop(part)
                stopped.append(part.pid)
                echo(f"stopped {name} (pid {part.pid})")
            del parts[name]
            self._write_pids(parts)
        return stopped

    def _stop(self, part: Part) -> None:
        os.killpg(part.pid, signal.SIGTERM)
        child = self._children.pop(part.pid, None)
        if child is not None:
            # Our own child: wait() both waits and reaps, so no zombie keeps the pid.
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(part.pid, signal.SIGKILL)
                child.wait()
            return
        # Started by an earlier `eduhub local up`: not ours to reap; init does that.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _running(part.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _running(part.pid):
            os.killpg(part.pid, signal.SIGKILL)

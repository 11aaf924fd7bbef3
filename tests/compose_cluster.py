"""docker-compose.yml's `cluster` profile without containers: three real Kafka nodes, each kafka-cluster.sh."""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hub.demo.local import DEPLOY_DIR, resolve_kafka

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "compose" / "kafka-cluster.sh"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
NODE_ENV: dict[str, str] = COMPOSE["x-kafka-node-environment"]
# The class hub/demo/local.py formats the local broker's storage with (what bin/kafka-storage.sh runs).
STORAGE_TOOL = "kafka.tools.StorageTool"
LOG4J = DEPLOY_DIR / "kafka" / "log4j2.properties"  # the local broker's: INFO to stdout, the node's kafka.log
HEAP = "-Xmx256m -Xms256m"  # not compose's 512m: three nodes beside another suite on a 2-core machine
ADMIN_PASSWORD_ENV = "EDUHUB_KAFKA_ADMIN_PASSWORD"


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose env file (comments and blank lines left out)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


CLUSTER_ENV = env_file(ROOT / "deploy" / "compose" / "cluster.env")


def scram_users() -> dict[str, str]:
    """compose's KAFKA_SCRAM_USERS: user name → the variable of its password."""
    return dict(entry.split("=", 1) for entry in NODE_ENV["KAFKA_SCRAM_USERS"].split())


def password() -> str:
    """24 URL-safe characters, what kafka-cluster.sh accepts (`secrets.token_urlsafe(18)`)."""
    return secrets.token_urlsafe(18)


def launcher(path: Path, main_class: str, libs: Path) -> None:
    """A stand-in for one of the distribution's bin/ scripts: the real Kafka class on the real jars."""
    path.write_text("#!/usr/bin/env bash\n"
                    "# Stand-in for the Apache Kafka distribution's launcher (kafka-run-class.sh): same JVM options.\n"
                    f'exec java $KAFKA_HEAP_OPTS -Dlog4j2.configurationFile="{LOG4J}" '
                    f'-Dkafka.logs.dir="$LOG_DIR" -cp "{libs}/*" {main_class} "$@"\n')
    path.chmod(0o755)


def kafka_home(folder: Path, cache_dir: Path) -> Path:
    """KAFKA_HOME with bin/kafka-storage.sh and bin/kafka-server-start.sh over the jars hub/demo/local.py resolves."""
    libs = resolve_kafka(cache_dir, echo=lambda line: None)
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    launcher(folder / "bin" / "kafka-storage.sh", STORAGE_TOOL, libs)
    launcher(folder / "bin" / "kafka-server-start.sh", "kafka.Kafka", libs)
    return folder


@dataclass
class Node:
    node_id: int
    client_port: int
    controller_port: int
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log(self) -> Path:
        return self.folder / "kafka.log"

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Cluster:
    """Three nodes, each `bash kafka-cluster.sh` with the environment compose gives kafka-1..3 (hosts → 127.0.0.1)."""

    base: Path
    certs: Path
    first_port: int
    cache_dir: Path
    passwords: dict[str, str] = field(default_factory=dict)  # variable name → password
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        variables = [ADMIN_PASSWORD_ENV, *scram_users().values()]
        self.passwords = {variable: password() for variable in variables}
        self.home = kafka_home(self.base / "kafka-home", self.cache_dir)
        self.nodes = [Node(n, self.first_port + 2 * (n - 1), self.first_port + 2 * (n - 1) + 1, self.base / f"node-{n}")
                      for n in (1, 2, 3)]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def password_of(self, user: str) -> str:
        return self.passwords[ADMIN_PASSWORD_ENV if user == "admin" else scram_users()[user]]

    def node_environment(self, node: Node) -> dict[str, str]:
        """compose's x-kafka-node-environment and kafka-N's own keys, each key accounted for: a new one fails here."""
        service = COMPOSE["services"][f"kafka-{node.node_id}"]["environment"]
        assert service["KAFKA_NODE_ID"] == str(node.node_id), service
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        env: dict[str, str] = {}
        for key, value in NODE_ENV.items():
            if key == "KAFKA_CLUSTER_ID":  # ${EDUHUB_COMPOSE_KAFKA_CLUSTER_ID:-}, set by cluster.env
                assert "EDUHUB_COMPOSE_KAFKA_CLUSTER_ID" in value, value
                env[key] = CLUSTER_ENV["EDUHUB_COMPOSE_KAFKA_CLUSTER_ID"]
            elif key == "KAFKA_QUORUM_VOTERS":  # 1@kafka-1:9093,... with our host and ports
                assert len(value.split(",")) == len(self.nodes), value
                env[key] = voters
            elif key == "KAFKA_HEAP_OPTS":
                env[key] = HEAP
            elif key == "KAFKA_SCRAM_USERS":
                env[key] = value
            elif key in self.passwords:  # ${EDUHUB_COMPOSE_CLUSTER:+${NAME:?...}}: the operator's password
                assert key in value, value
                env[key] = self.passwords[key]
            else:
                raise AssertionError(f"x-kafka-node-environment has {key}, which this test does not know: add it")
        assert set(self.passwords) <= set(env), "a password variable of KAFKA_SCRAM_USERS is not in the node env"
        folder = node.folder
        return {
            "PATH": os.environ["PATH"], "HOME": str(folder), **env,
            "KAFKA_NODE_ID": service["KAFKA_NODE_ID"], "KAFKA_ADVERTISED_HOST": "127.0.0.1",
            "KAFKA_CLIENT_PORT": str(node.client_port), "KAFKA_CONTROLLER_PORT": str(node.controller_port),
            "KAFKA_LISTEN_HOST": "127.0.0.1",
            "KAFKA_HOME": str(self.home), "KAFKA_USER": pwd.getpwuid(os.getuid()).pw_name,
            "KAFKA_CERTS_DIR": str(self.certs), "KAFKA_DATA_DIR": str(folder / "data"),
            "KAFKA_PRIVATE_DIR": str(folder / "private"), "LOG_DIR": str(folder / "logs"),
        }

    def start(self) -> None:
        for node in self.nodes:
            (node.folder / "logs").mkdir(parents=True, exist_ok=True)
            with node.log.open("ab") as log:
                # exec all the way (script → setpriv → launcher → java): the pid is the broker's JVM.
                node.process = subprocess.Popen(["bash", str(SCRIPT)], env=self.node_environment(node), cwd=node.folder,
                                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)

    def kill(self, node: Node) -> None:
        """SIGKILL one node by its pid (a crash: no controlled shutdown)."""
        assert node.process is not None and node.process.poll() is None, node.tail()
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)

    def stop(self, bound_s: float = 30.0) -> None:
        """SIGTERM every running node by its pid (its session: a format still running goes too), then SIGKILL."""
        running = [n.process for n in self.nodes if n.process is not None and n.process.poll() is None]
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + bound_s
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def admin_config(self, user: str = "admin", bootstrap: str | None = None) -> dict:
        """librdkafka settings of `user` over SASL_SSL, verifying the brokers' certificate and host name."""
        return {"bootstrap.servers": bootstrap or self.bootstrap, "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": self.password_of(user),
                "ssl.ca.location": str(self.certs / "ca.pem"), "ssl.endpoint.identification.algorithm": "https",
                "log_level": 0}

    def answering(self) -> list[int]:
        """The ids of the nodes that answer admin's metadata request over SASL_SSL on their own listener and
        see all three brokers."""
        from confluent_kafka.admin import AdminClient

        answered = []
        for node in self.nodes:
            try:
                metadata = AdminClient(self.admin_config(bootstrap=node.bootstrap)).list_topics(timeout=5)
            except Exception:
                continue
            if metadata.orig_broker_id == node.node_id and len(metadata.brokers) == len(self.nodes):
                answered.append(node.node_id)
        return answered

    def wait_answering(self, bound_s: float = 240.0) -> float:
        """Wait (bounded) until every node answers; returns the seconds it took. A node that exits fails at once."""
        started = time.monotonic()
        while time.monotonic() - started < bound_s:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise AssertionError(f"kafka-{node.node_id} exited with {node.process.returncode}:\n{node.tail()}")
            if len(self.answering()) == len(self.nodes):
                return time.monotonic() - started
            time.sleep(1)
        raise AssertionError(f"the cluster did not answer in {bound_s:.0f} s:\n" +
                             "\n".join(f"--- kafka-{n.node_id}\n{n.tail(15)}" for n in self.nodes))

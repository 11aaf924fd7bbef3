"""docker-compose.yml cannot run here (no container engine): validate it, resolve both modes as compose would, cross-check."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import typer.main
import yaml

from hub.core.config import ENV_OVERRIDES, load_config
from hub.ops import healthcheck
from tests.compose import interpolate

ROOT = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HUB_SERVICES = ("worker-1", "worker-2", "connect", "acl-apply")
ONE_SHOTS = {"cluster-certs", "acl-apply"}
EXACT_TAG = re.compile(r"^[a-z0-9./_-]+:v?\d+\.\d+\.\d+(?:-[a-z0-9.-]+)?$")
# PostgreSQL numbers its releases major.minor (16.4): that is its exact version, 16 the floating one.
POSTGRES_TAG = re.compile(r"^postgres:\d+\.\d+-[a-z]+$")
GATE = "EDUHUB_COMPOSE_CLUSTER"
CLUSTER_PASSWORDS = ("EDUHUB_KAFKA_ADMIN_PASSWORD", "EDUHUB_KAFKA_PASSWORD", "EDUHUB_KAFKA_PASSWORD_SUB_MOET_SYNC",
                     "EDUHUB_KAFKA_PASSWORD_SUB_EXAM_MGMT", "EDUHUB_KAFKA_PASSWORD_SUB_ANALYTICS")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")


def pom_property(path: str, name: str) -> str:
    return ET.parse(ROOT / path).getroot().find(f"m:properties/m:{name}", POM_NS).text


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


# The secrets the operator sets (both modes), then what cluster mode adds.
SECRETS = {name: f"{name.lower()}-value-0123456789" for name in (
    "EDUHUB_CONNECT_TOKEN", "EDUHUB_PSEUDONYM_KEY", "EDUHUB_HTTP_SECRET", "EDUHUB_SUB_ADMISSION_RESULTS_SECRET",
    "EDUHUB_SUB_PARENT_APP_SECRET", "EDUHUB_REGISTRY_DB_PASSWORD", "EDUHUB_DEMO_DB_PASSWORD",
    "EDUHUB_GRAFANA_ADMIN_PASSWORD")}
MODES = {
    "one-host": dict(SECRETS),
    "cluster": {**SECRETS, **{n: f"{n.lower()}-0123456789" for n in CLUSTER_PASSWORDS},
                **env_file(ROOT / "deploy" / "compose" / "cluster.env")},
}


def services(mode: str) -> dict[str, dict[str, Any]]:
    return resolve(RAW, MODES[mode])["services"]


def running(mode: str) -> dict[str, dict[str, Any]]:
    """The services compose starts: no profiles or an active one (COMPOSE_PROFILES), and not scaled to 0."""
    active = set(filter(None, MODES[mode].get("COMPOSE_PROFILES", "").split(",")))
    return {name: svc for name, svc in services(mode).items()
            if (not svc.get("profiles") or active & set(svc["profiles"])) and int(svc.get("scale", 1)) != 0}


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of the bind mounts (short syntax; named volumes left out)."""
    found = {}
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/")):
            found[rest.split(":")[0]] = (ROOT / source).resolve()
    return found


def hub_environment(mode: str, service: str, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A hub service's environment and the hub.yaml it mounts, its CA path pointed at a real file."""
    svc = services(mode)[service]
    config = bind_mounts(svc)[svc["environment"]["EDUHUB_CONFIG"]]
    raw = yaml.safe_load(config.read_text())
    cafile = raw["kafka"].get("ssl_cafile")
    if cafile:  # the cluster-certs volume holds it at run time; prove it is mounted, then stand in for it
        assert any(v.startswith("cluster-certs:") and cafile.startswith(v.split(":")[1] + "/")
                   for v in svc["volumes"]), f"{service} reads {cafile}: mount cluster-certs there"
        (tmp_path / "ca.pem").write_text("CA")
        raw["kafka"]["ssl_cafile"] = str(tmp_path / "ca.pem")
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(raw))
    return svc["environment"], tmp_path / "hub.yaml"


# ---- the file itself -----------------------------------------------------------------------------------

def compose_spec_errors(document: dict[str, Any]) -> list[str]:
    """The errors the check-jsonschema CLI finds against its vendored compose spec (the spec `docker compose`
    validates with)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "compose.json"
        path.write_text(json.dumps(document))
        done = subprocess.run([str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema",
                               "vendor.compose-spec", "--output-format", "json", str(path)],
                              capture_output=True, text=True)
    report = json.loads(done.stdout)
    assert not report.get("parse_errors"), report
    return [f"{e['path']}: {e['message']}" for e in report["errors"]]


def test_validates_against_the_compose_spec_and_the_check_bites():
    assert compose_spec_errors(RAW) == []
    broken = copy.deepcopy(RAW)
    broken["services"]["worker-1"]["restart"] = ["always"]
    broken["services"]["connect"]["healtcheck"] = {}
    assert len(compose_spec_errors(broken)) == 2


def test_every_image_is_pinned_to_an_exact_version():
    for name, svc in RAW["services"].items():
        assert EXACT_TAG.match(svc["image"]) or POSTGRES_TAG.match(svc["image"]), f"{name}: {svc['image']} is not an exact version tag"
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert RAW["x-eduhub-image"]["image"] == f"eduhub:{version}"


def test_images_run_the_versions_the_local_stack_runs():
    kafka = f"apache/kafka:{pom_property('deploy/kafka/pom.xml', 'kafka.version')}"
    assert {svc["image"] for name, svc in RAW["services"].items() if name.startswith("kafka")} == {kafka}
    assert RAW["services"]["registry"]["image"] == (
        f"apicurio/apicurio-registry:{pom_property('deploy/registry/pom.xml', 'apicurio.version')}")


def test_every_service_restarts_and_has_a_healthcheck():
    for name, svc in RAW["services"].items():
        assert svc["restart"] == ("on-failure" if name in ONE_SHOTS else "unless-stopped"), name
        check = svc.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


# ---- the two modes, resolved -----------------------------------------------------------------------------

def test_each_mode_runs_its_services():
    both = {"registry-db", "registry", "demo-db", "worker-1", "worker-2", "connect", "prometheus", "alertmanager",
            "grafana"}
    assert set(running("one-host")) == both | {"kafka"}
    assert set(running("cluster")) == both | {"kafka-1", "kafka-2", "kafka-3", "cluster-certs", "acl-apply"}


@pytest.mark.parametrize("mode", MODES)
def test_every_dependency_is_satisfied(mode):
    up = running(mode)
    # Users: the certificates' writer is the hub's user (it reads ca.pem); brokers start as root, then drop.
    assert "user" not in RAW["services"]["cluster-certs"] and RAW["services"]["kafka-1"]["user"] == "0:0"
    for name, svc in up.items():
        depends = svc.get("depends_on", {})
        for dep, how in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            assert dep in services(mode), f"{name} depends on {dep}: no such service"
            if how.get("required", True):
                assert dep in up, f"{mode}: {name} needs {dep}, which does not run"
            if dep in up and how.get("condition") == "service_completed_successfully":
                assert dep in ONE_SHOTS, f"{name} waits for {dep} to exit, which never does"
    # Nothing of the hub starts before its brokers can take it.
    waits = {dep for dep in up["worker-1"]["depends_on"] if dep in up}
    assert {"kafka"} <= waits if mode == "one-host" else {"acl-apply"} <= waits


@pytest.mark.parametrize("mode", MODES)
def test_bind_mounts_exist(mode):
    for name, svc in running(mode).items():
        for target, source in bind_mounts(svc).items():
            assert source.exists(), f"{mode}: {name} mounts {source} at {target}: no such file"


@pytest.mark.parametrize(("mode", "service"), [(m, s) for m in MODES for s in HUB_SERVICES if s in running(m)])
def test_hub_services_set_only_variables_the_hub_reads_and_their_config_validates(mode, service, tmp_path):
    env, config_path = hub_environment(mode, service, tmp_path)
    config = load_config(config_path, environ=env)
    read = set(ENV_OVERRIDES) | {"EDUHUB_CONFIG", healthcheck.URL_ENV, config.routing.key_env, config.connect.token_env,
                                 "EDUHUB_KAFKA_ADMIN_PASSWORD"}
    read |= {s["delivery"]["secret_env"] for s in config.subscriptions if s.get("delivery", {}).get("kind") == "http"}
    read |= {c["secret_env"] for c in config.connectors if c.get("secret_env")}
    read |= {n for c in config.connectors for n in re.findall(r"\$\{(\w+)\}", c.get("url", ""))}
    assert set(env) <= read, f"{service}: the hub reads none of {set(env) - read}"
    loaded = config
    assert loaded.kafka.bootstrap_servers == env["EDUHUB_KAFKA_BOOTSTRAP_SERVERS"]
    for host in loaded.kafka.bootstrap_servers.split(","):
        assert host.split(":")[0] in running(mode), f"{mode}: {service} reaches Kafka at {host}: no such service"
    if mode == "cluster":
        assert (loaded.kafka.security_protocol, loaded.kafka.username) == ("SASL_SSL", "hub")
        assert loaded.kafka.password is not None and loaded.kafka.replication_factor == 3
    else:
        assert loaded.kafka.security_protocol == "PLAINTEXT" and loaded.kafka.password is None


def test_the_two_hub_configs_differ_only_in_kafka_and_follow_the_repositorys():
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "hub.yaml").read_text())
    cluster = yaml.safe_load((ROOT / "deploy" / "compose" / "hub-cluster.yaml").read_text())
    assert {k: v for k, v in compose.items() if k != "kafka"} == {k: v for k, v in cluster.items() if k != "kafka"}
    ours = yaml.safe_load((ROOT / "hub.yaml").read_text())

    def shape(config: dict[str, Any]) -> dict[str, Any]:  # without the demo's endpoints
        config = copy.deepcopy(config)
        for connector in config["connectors"]:
            for key in ("url", "folder", "host"):
                connector.pop(key, None)
        for subscription in config["subscriptions"]:
            subscription.get("delivery", {}).pop("url", None)
        return config
    assert shape(compose) == shape(ours)


def test_connectors_read_the_demo_database_tables_the_simulators_define():
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    from hub.demo.simulators.outbox import outbox_metadata
    from hub.demo.simulators.smas_schema import smas_metadata

    def statements(text: str) -> set[str]:
        return {" ".join(s.split()) for s in re.sub(r"--[^\n]*|\\connect \w+", "", text).split(";") if s.strip()}
    folder = ROOT / "deploy" / "compose" / "demo-db"
    for sql, metadata in (("01-smas.sql", smas_metadata()), ("02-exam-reg.sql", outbox_metadata())):
        made = {str(CreateTable(t).compile(dialect=postgresql.dialect())) for t in metadata.sorted_tables}
        made |= {str(CreateIndex(i).compile(dialect=postgresql.dialect())) for t in metadata.sorted_tables
                 for i in t.indexes}
        assert statements((folder / sql).read_text()) - {"CREATE DATABASE exam_reg"} == statements(";".join(made))
    databases = {RAW["services"]["demo-db"]["environment"]["POSTGRES_DB"]} | set(
        re.findall(r"CREATE DATABASE (\w+)", (folder / "02-exam-reg.sql").read_text()))
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "hub.yaml").read_text())
    for connector in (c for c in config["connectors"] if c["kind"] in ("sql", "outbox")):
        url = urlparse(connector["url"].replace("${EDUHUB_DEMO_DB_PASSWORD}", "x"))
        assert (url.hostname, url.port, url.username) == (
            "demo-db", 5432, RAW["services"]["demo-db"]["environment"]["POSTGRES_USER"])
        assert url.path.strip("/") in databases, connector["name"]


def test_secrets_are_required_never_written():
    for name, svc in RAW["services"].items():
        for key, value in svc.get("environment", {}).items():
            if not SECRET_NAME.search(key):
                continue
            wanted = "EDUHUB_PSEUDONYM_KEY" if key == "EDUHUB_PSEUDONYM_KEY" else r"\w+"
            required = rf"\$\{{{wanted}:\?[^}}$]+\}}"
            assert re.fullmatch(required, value) or re.fullmatch(rf"\$\{{{GATE}:\+{required}\}}", value), \
                f"{name}.{key}: {value!r} must be ${{VAR:?...}} (or gated on {GATE} for cluster-only ones)"
    one_host = services("one-host")
    assert one_host["worker-1"]["environment"]["EDUHUB_KAFKA_PASSWORD"] == ""  # not needed, not asked for
    for missing in [*SECRETS, *CLUSTER_PASSWORDS]:  # cluster mode: compose stops on every missing one
        with pytest.raises(KeyError, match=missing):
            resolve(RAW, {k: v for k, v in MODES["cluster"].items() if k != missing})
    assert not re.search(r"(?i)password\s*=\s*\S", (ROOT / "deploy" / "compose" / "cluster.env").read_text())


def test_our_images_commands_are_eduhub_commands():
    from hub.ops.cli import app
    cli = typer.main.get_command(app)
    for name, svc in RAW["services"].items():
        if "build" not in svc:
            continue
        commands = [svc["command"]]
        if svc["healthcheck"]["test"][1] == "eduhub":
            commands.append(svc["healthcheck"]["test"][2:])
        for args in commands:
            command, rest = cli, list(args)
            while rest and hasattr(command, "commands") and rest[0] in command.commands:
                command = command.commands[rest.pop(0)]
            assert not hasattr(command, "commands"), f"{name}: `eduhub {' '.join(args)}` is no command"
            command.make_context(command.name, rest)  # its arguments and options parse


def test_ports_are_on_loopback_and_match_hub_yaml():
    config = load_config(ROOT / "deploy" / "compose" / "hub.yaml", environ={})
    published = {name: [p.split(":") for p in svc.get("ports", [])] for name, svc in RAW["services"].items()}
    assert all(p[0] == "127.0.0.1" for ports in published.values() for p in ports)
    http_port = next(c["port"] for c in config.connectors if c["kind"] == "http")
    assert {p[2] for p in published["connect"]} == {str(config.connect.port), str(http_port)}
    for worker in ("worker-1", "worker-2"):
        assert [p[2] for p in published[worker]] == [str(config.worker.web_port)]
    assert published["worker-1"][0][1] == str(config.worker.web_port)
    assert ["127.0.0.1", str(config.local.kafka_port), "9092"] in published["kafka"]
    assert published["registry"][0][1] == str(config.local.registry_port)


def test_workers_reach_kafka_and_the_registry_on_their_listeners():
    one_host = services("one-host")
    host, port = one_host["worker-1"]["environment"]["EDUHUB_KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert f"//{host}:{port}" in one_host["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    url = urlparse(one_host["worker-1"]["environment"]["EDUHUB_REGISTRY_URL"])
    assert (url.hostname, str(url.port), url.path) == (
        "registry", one_host["registry"]["environment"]["QUARKUS_HTTP_PORT"], "/apis/ccompat/v7")
    assert one_host["registry"]["environment"]["APICURIO_DATASOURCE_URL"].startswith("jdbc:postgresql://registry-db:")


def test_the_connect_api_answers_the_workers_with_the_same_token():
    one_host = services("one-host")
    connect = one_host["connect"]["environment"]
    for worker in ("worker-1", "worker-2"):
        env = one_host[worker]["environment"]
        assert env["EDUHUB_CONNECT_TOKEN"] == connect["EDUHUB_CONNECT_TOKEN"]
        assert urlparse(env["EDUHUB_CONNECT_URL"]).hostname in connect["EDUHUB_CONNECT_ALLOWED_HOSTS"].split(",")
    assert one_host["worker-1"]["environment"]["EDUHUB_WORKER_INSTANCE_ID"] != \
        one_host["worker-2"]["environment"]["EDUHUB_WORKER_INSTANCE_ID"]
    assert urlparse(connect[healthcheck.URL_ENV]).port == load_config(ROOT / "hub.yaml", environ={}).connect.port


# ---- Prometheus and Alertmanager ---------------------------------------------------------------------

def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def test_alertmanager_config_passes_amtool_and_routes_each_severity():
    amtool = need("amtool")
    config = str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml")
    check = subprocess.run([amtool, "check-config", config], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    for severity in ("page", "ticket"):
        route = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}", f"severity={severity}"],
                               capture_output=True, text=True, timeout=60)
        assert route.stdout.split() == [severity], route.stdout + route.stderr


@pytest.mark.parametrize("mode", MODES)
def test_prometheus_scrapes_running_services_and_alerts_to_alertmanager(mode):
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    up, hub = running(mode), load_config(ROOT / "hub.yaml", environ={})
    ports = {"eduhub-worker": hub.worker.web_port, "eduhub-connect": hub.connect.port}
    scraped = set()
    for job in config["scrape_configs"]:
        for target in (t for static in job["static_configs"] for t in static["targets"]):
            host, port = target.rsplit(":", 1)
            assert host in up and int(port) == ports[job["job_name"]], f"{mode}: {target}"
            scraped.add(host)
    assert scraped == {"worker-1", "worker-2", "connect"}
    [alertmanager] = [t for a in config["alerting"]["alertmanagers"] for s in a["static_configs"] for t in s["targets"]]
    assert alertmanager.split(":")[0] in up and alertmanager.endswith(":9093")
    assert "alertmanager" in up["prometheus"]["depends_on"]


# ---- the cluster's brokers -------------------------------------------------------------------------------

SCRIPT = ROOT / "deploy" / "compose" / "kafka-cluster.sh"


def broker_properties() -> dict[str, str]:
    text = SCRIPT.read_text()
    block = text[text.index('"$PRIVATE/server.properties" <<EOF') :].split("\n", 1)[1].split("\nEOF\n")[0]
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line and not line.startswith("#"))


def test_cluster_brokers_replicate_three_ways_over_scram_and_tls():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    props = broker_properties()
    assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "${MECHANISM}"
    assert 'MECHANISM=SCRAM-SHA-512' in SCRIPT.read_text()
    assert props["allow.everyone.if.no.acl.found"] == "false" and "User:admin" in props["super.users"]
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    nodes = [services("cluster")[f"kafka-{n}"]["environment"] for n in (1, 2, 3)]
    assert [n["KAFKA_NODE_ID"] for n in nodes] == ["1", "2", "3"]
    voters = nodes[0]["KAFKA_QUORUM_VOTERS"].split(",")
    assert voters == [f"{n['KAFKA_NODE_ID']}@{n['KAFKA_ADVERTISED_HOST']}:9093" for n in nodes]
    assert len({n["KAFKA_CLUSTER_ID"] for n in nodes}) == 1 and nodes[0]["KAFKA_CLUSTER_ID"]


def test_cluster_brokers_create_every_user_of_the_acl_plan(tmp_path):
    from hub.ops.cli.local import _users
    env, config_path = hub_environment("cluster", "acl-apply", tmp_path)
    users = {u.name: u.env for u in _users(load_config(config_path, environ=env)) if u.name != "admin"}
    node = services("cluster")["kafka-1"]["environment"]
    assert dict(entry.split("=") for entry in node["KAFKA_SCRAM_USERS"].split()) == users
    assert all(node[variable] for variable in users.values())


def test_cluster_script_formats_with_every_user_and_starts_the_broker(tmp_path):
    home = tmp_path / "kafka"
    (home / "bin").mkdir(parents=True)
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):  # stand-ins that print how they were called
        (home / "bin" / tool).write_text(f'#!/bin/bash\necho {tool} "$@"\n')
        (home / "bin" / tool).chmod(0o755)
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "broker-keystore.pem"):
        (tmp_path / "certs" / name).write_text("PEM")
    env = {**services("cluster")["kafka-2"]["environment"], "PATH": os.environ["PATH"], "KAFKA_HOME": str(home),
           "KAFKA_CERTS_DIR": str(tmp_path / "certs"), "KAFKA_DATA_DIR": str(tmp_path / "data"),
           "KAFKA_PRIVATE_DIR": str(tmp_path / "private"), "KAFKA_USER": os.environ.get("USER") or "root"}
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    formatted, started = run.stdout.splitlines()
    for user in ["admin", *(entry.split("=")[0] for entry in env["KAFKA_SCRAM_USERS"].split())]:
        assert f"SCRAM-SHA-512=[name={user},password=" in formatted
    assert started == f"kafka-server-start.sh {tmp_path / 'private' / 'server.properties'}"
    assert "advertised.listeners=SASL_SSL://kafka-2:9092" in (tmp_path / "private" / "server.properties").read_text()
    assert (tmp_path / "private" / "server.properties").stat().st_mode & 0o077 == 0  # holds the admin password
    del env["EDUHUB_KAFKA_PASSWORD_SUB_ANALYTICS"]
    refused = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "EDUHUB_KAFKA_PASSWORD_SUB_ANALYTICS" in refused.stderr

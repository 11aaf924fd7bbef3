"""docker-compose.yml cannot run here (no container engine): parse it and cross-check it instead."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

import yaml

from hub.core.config import ENV_OVERRIDES, load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_property(path: str, name: str) -> str:
    return ET.parse(ROOT / path).getroot().find(f"m:properties/m:{name}", POM_NS).text


def test_the_three_services_are_there():
    assert {"kafka", "registry", "worker"} <= set(SERVICES)


def test_images_run_the_versions_the_local_stack_runs():
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{pom_property('deploy/kafka/pom.xml', 'kafka.version')}"
    assert SERVICES["registry"]["image"] == (
        f"apicurio/apicurio-registry:{pom_property('deploy/registry/pom.xml', 'apicurio.version')}")


def test_worker_environment_uses_only_variables_the_hub_reads_and_they_validate():
    env = SERVICES["worker"]["environment"]
    hub_yaml = load_config(ROOT / "hub.yaml", environ={})
    secrets = {hub_yaml.routing.key_env, hub_yaml.connect.token_env} | {
        s["delivery"]["secret_env"] for s in hub_yaml.subscriptions if s.get("delivery", {}).get("kind") == "http"}
    assert set(env) <= set(ENV_OVERRIDES) | {"EDUHUB_CONFIG"} | secrets
    for name in secrets:  # every secret the worker needs is required, never given a default
        assert env[name].startswith("${" + name + ":?")
    config = load_config(ROOT / "hub.yaml", environ={k: v for k, v in env.items() if k in ENV_OVERRIDES})
    assert config.kafka.bootstrap_servers == env["EDUHUB_KAFKA_BOOTSTRAP_SERVERS"]
    assert config.worker.web_host == "0.0.0.0"


def test_worker_reaches_kafka_on_an_advertised_listener():
    host, port = SERVICES["worker"]["environment"]["EDUHUB_KAFKA_BOOTSTRAP_SERVERS"].split(":")
    advertised = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{host}:{port}" in advertised
    assert SERVICES["registry"]["environment"]["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"] == f"{host}:{port}"


def test_worker_reaches_the_registry_ccompat_api():
    url = urlparse(SERVICES["worker"]["environment"]["EDUHUB_REGISTRY_URL"])
    assert url.hostname == "registry"
    assert str(url.port) == SERVICES["registry"]["environment"]["QUARKUS_HTTP_PORT"]
    assert url.path == "/apis/ccompat/v7"


def test_start_order_waits_for_health():
    depends = SERVICES["worker"]["depends_on"]
    assert depends["kafka"]["condition"] == depends["registry"]["condition"] == "service_healthy"
    assert "healthcheck" in SERVICES["kafka"] and "healthcheck" in SERVICES["registry"]


def test_published_ports_match_the_local_defaults_and_stay_on_loopback():
    config = load_config(ROOT / "hub.yaml", environ={})
    published = {name: svc.get("ports", []) for name, svc in SERVICES.items()}
    assert f"127.0.0.1:{config.local.kafka_port}:9092" in published["kafka"]
    assert any(p.startswith(f"127.0.0.1:{config.local.registry_port}:") for p in published["registry"])
    assert f"127.0.0.1:{config.worker.web_port}:{config.worker.web_port}" in published["worker"]


def test_dockerfile_ships_what_the_worker_reads():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in ("hub", "connectors", "schemas"):
        assert re.search(rf"^COPY {folder} ", dockerfile, re.M), folder
    assert "EDUHUB_SCHEMA_DIR=/app/schemas" in dockerfile  # the installed package has no schemas/
    assert SERVICES["worker"]["build"] == "."


def test_the_connect_api_answers_the_worker_with_the_same_token():
    worker, connect = SERVICES["worker"]["environment"], SERVICES["connect"]["environment"]
    assert worker["EDUHUB_CONNECT_TOKEN"] == connect["EDUHUB_CONNECT_TOKEN"]
    assert worker["EDUHUB_CONNECT_TOKEN"].startswith("${EDUHUB_CONNECT_TOKEN:?")  # required, never a default
    assert urlparse(worker["EDUHUB_CONNECT_URL"]).hostname in connect["EDUHUB_CONNECT_ALLOWED_HOSTS"].split(",")

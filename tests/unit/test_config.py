"""hub.yaml validation: every bad key named with its fix; env overrides; secrets kept secret."""

from __future__ import annotations

import pytest
import yaml

from hub.core.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "hub.yaml"
    path.write_text(text)
    return path


def test_the_repository_hub_yaml_is_valid():
    config = load_config("hub.yaml", environ={})
    assert config.source_ids == ["smas", "admission-portal", "exam-reg", "school-sheets"]
    assert config.kafka.ingest_partitions == 12 and len(config.connectors) == 9


def test_unknown_and_invalid_keys_are_named_with_the_fix(tmp_path):
    path = write(tmp_path, "kafka:\n  bootstrap_server: x\nworker:\n  web_port: 99999\nsources:\n  - id: BAD\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    text = str(error.value)
    assert "kafka.bootstrap_server: unknown key" in text
    assert "worker.web_port" in text and "port of /metrics" in text
    assert "sources.0.id" in text and "^[a-z0-9][a-z0-9-]{1,39}$" in text


def test_bad_bootstrap_and_registry_url(tmp_path):
    path = write(tmp_path, "kafka:\n  bootstrap_servers: localhost\nregistry:\n  url: ftp://x\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert "kafka.bootstrap_servers" in str(error.value) and "registry.url" in str(error.value)


def test_duplicate_sources_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="declared twice"):
        load_config(write(tmp_path, "sources:\n  - id: a1\n  - id: a1\n"), environ={})


def test_environment_overrides_and_secret_is_not_printed(tmp_path):
    config = load_config(write(tmp_path, "sources: []\n"), environ={
        "EDUHUB_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "EDUHUB_REGISTRY_URL": "https://registry.example:8081/",
        "EDUHUB_REGISTRY_PASSWORD": "s3cret",
    })
    assert config.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert config.registry.url == "https://registry.example:8081"
    assert config.registry.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.model_dump())


def test_a_bad_env_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(None, environ={"EDUHUB_WEB_PORT": "http"})
    assert "EDUHUB_WEB_PORT" in str(error.value) and "worker.web_port" in str(error.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "kafka: [\n"), environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n"), environ={})


@pytest.mark.parametrize("section, key, variable", [("kafka", "password", "EDUHUB_KAFKA_PASSWORD"),
                                                    ("kafka", "ssl_key_password", "EDUHUB_KAFKA_SSL_KEY_PASSWORD"),
                                                    ("registry", "password", "EDUHUB_REGISTRY_PASSWORD")])
def test_a_secret_written_in_the_file_is_refused_naming_its_variable(tmp_path, section, key, variable):
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({section: {key: "written-in-the-file"}}))
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert f"{section}.{key}" in str(refused.value) and variable in str(refused.value)
    assert "written-in-the-file" not in str(refused.value)

"""deploy/k8s: the generated files are fresh, every manifest is valid, and the manifests agree with hub.yaml and the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

import hub
from connectors.rest import PROBES
from connectors.runtime import connector_class
from hub.core.config import ENV_OVERRIDES, load_config
from hub.ops import deploy_k8s
from hub.ops.acl import plan
from hub.ops.cli import app
from hub.ops.topology import topic_plan
from hub.runtime.worker import APP_ID

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
HUB_YAML = K8S / "hub.yaml"
GENERATED = K8S / "base" / "generated"
KUBERNETES_VERSION = "1.30.0"  # the oldest version deploy/k8s/README.md supports
BUILTIN = {("v1", "Namespace"), ("v1", "Service"), ("v1", "ConfigMap"), ("v1", "PersistentVolumeClaim"),
           ("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy")}
CRD_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "kafka_v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "kafkanodepool_v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic_v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): "kafkauser_v1beta2.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication_v1alpha1.json",
}
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
# check-jsonschema from the venv running the tests (the test extra installs it).
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_documents(docs: list[dict]) -> None:
    """Validate manifests: built-in kinds against Kubernetes' schemas (strict: no unknown field), Strimzi
    and KEDA kinds with the check-jsonschema CLI against the vendored CRD schemas (one run per schema);
    any other kind is an error."""
    by_schema: dict[str, list[dict]] = {}
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            by_schema.setdefault(CRD_SCHEMAS[key], []).append(doc)
        elif key in BUILTIN:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        else:
            raise AssertionError(f"{key}: a kind with no schema to check it against (add it to BUILTIN or CRD_SCHEMAS)")
    for schema, group in by_schema.items():
        with tempfile.TemporaryDirectory() as folder:
            files = []
            for index, doc in enumerate(group):
                files.append(Path(folder) / f"{doc['kind']}-{index}-{doc['metadata'].get('name')}.json")
                files[-1].write_text(json.dumps(doc))
            done = subprocess.run([CHECK_JSONSCHEMA, "--schemafile", str(K8S / "schemas" / schema),
                                   "--output-format", "json", *map(str, files)], capture_output=True, text=True)
        if done.returncode != 0:
            report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
            errors = [f"{Path(e['filename']).stem} {e['path']}: {e['message']}" for e in report.get("errors", [])]
            raise AssertionError(f"check-jsonschema {schema}: " + ("; ".join(errors) or done.stdout + done.stderr))


def kustomize_command() -> list[str]:
    """`kustomize build`, or kubectl's built-in kustomize when kubectl is 1.27+ (kustomize v5)."""
    if shutil.which("kustomize"):
        return [shutil.which("kustomize"), "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        probe = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
        if probe.returncode == 0:
            minor = re.sub(r"\D", "", json.loads(probe.stdout)["clientVersion"].get("minor", "0")) or "0"
            if int(minor) >= 27:
                return [kubectl, "kustomize"]
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs kustomize v5 or kubectl 1.27+ to build deploy/k8s (.ci/run installs it)")
    pytest.skip("no kustomize v5 and no kubectl 1.27+ on PATH")


@pytest.fixture(scope="module")
def config():
    return deploy_k8s.load_deployed_config(HUB_YAML.read_text(encoding="utf-8"), str(HUB_YAML))


@pytest.fixture(scope="module", params=["base", "overlays/production"])
def rendered(request) -> list[dict]:
    done = subprocess.run([*kustomize_command(), str(K8S / request.param)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def production() -> list[dict]:
    done = subprocess.run([*kustomize_command(), str(K8S / "overlays" / "production")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict], name: str) -> dict:
    return next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == name)


def container(docs: list[dict], name: str) -> dict:
    return deployment(docs, name)["spec"]["template"]["spec"]["containers"][0]


def selects(match: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


# (a) the generated files


def test_committed_files_are_what_a_fresh_generation_writes():
    assert deploy_k8s.differences(GENERATED, deploy_k8s.generate(HUB_YAML.read_text(encoding="utf-8"))) == []
    result = CliRunner().invoke(app, ["deploy", "k8s", "--hub-yaml", str(HUB_YAML), "--out", str(GENERATED), "--check"])
    assert result.exit_code == 0, result.output


def test_check_fails_on_a_tampered_copy(tmp_path):
    out = tmp_path / "generated"
    shutil.copytree(GENERATED, out)
    topics = out / "topics.yaml"
    topics.write_text(topics.read_text().replace("partitions: 12", "partitions: 11", 1))
    (out / "users.yaml").unlink()
    (out / "extra.yaml").write_text("kind: ConfigMap\n")
    result = CliRunner().invoke(app, ["deploy", "k8s", "--hub-yaml", str(HUB_YAML), "--out", str(out), "--check"])
    assert result.exit_code == 1
    assert "topics.yaml: differs (+1 -1 lines" in result.output
    assert "users.yaml: missing" in result.output
    assert "extra.yaml: not generated" in result.output
    assert CliRunner().invoke(app, ["deploy", "k8s", "--hub-yaml", str(HUB_YAML), "--out", str(out)]).exit_code == 0
    assert deploy_k8s.differences(out, deploy_k8s.generate(HUB_YAML.read_text(encoding="utf-8"))) == [
        f"{out / 'extra.yaml'}: not generated by `eduhub deploy k8s` (remove it)"]


def test_generation_refuses_a_secret_in_the_config_and_a_principal_strimzi_cannot_name():
    text = HUB_YAML.read_text(encoding="utf-8")
    with pytest.raises(deploy_k8s.ConfigError, match="kafka.password: a secret does not belong"):
        deploy_k8s.generate(text.replace("  username: hub ", "  password: hunter2\n  username: hub "))
    with pytest.raises(deploy_k8s.ConfigError, match="DNS-1123"):
        deploy_k8s.generate(text.replace("operators: [User:admin]", "operators: [User:Alice_Admin]"))


def test_topic_resource_names_are_unique_dns_labels_even_when_sanitising_collides():
    names = deploy_k8s.resource_names(["edu.school.term_result", "edu.school.term-result", "hub.audit"])
    assert len(set(names.values())) == 3
    assert names["hub.audit"] == "hub-audit"
    assert all(DNS_LABEL.match(n) for n in names.values())


# (b) every rendered document is valid


def test_every_rendered_document_validates(rendered):
    assert {(d["apiVersion"], d["kind"]) for d in rendered} <= BUILTIN | set(CRD_SCHEMAS)
    check_documents(rendered)


def test_a_document_of_an_unknown_kind_fails():
    with pytest.raises(AssertionError, match="no schema"):
        check_documents([{"apiVersion": "example.com/v1", "kind": "Frobnicator", "metadata": {"name": "x"}}])


# (e) the validators bite


def test_a_misspelt_deployment_field_fails_strict_validation(production):
    doc = json.loads(json.dumps(deployment(production, "eduhub-worker")))
    doc["spec"]["replica"] = doc["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        check_documents([doc])
    doc = json.loads(json.dumps(deployment(production, "eduhub-worker")))
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        check_documents([doc])


def test_a_kafka_topic_with_words_for_partitions_fails(production):
    doc = json.loads(json.dumps(of_kind(production, "KafkaTopic")[0]))
    doc["spec"]["partitions"] = "twelve"
    with pytest.raises(AssertionError, match=r"\$\.spec\.partitions"):
        check_documents([doc])
    doc["spec"]["partitions"], doc["spec"]["replica"] = 12, 3
    with pytest.raises(AssertionError, match="replica"):
        check_documents([doc])


# (c) Strimzi resources are the topic plan and the ACL plan


def test_kafka_topics_are_the_topic_plan(production, config):
    topics = of_kind(production, "KafkaTopic")
    have = {t["spec"]["topicName"]: (t["spec"]["partitions"], {k: v for k, v in t["spec"]["config"].items()
                                                                if k != "min.insync.replicas"}) for t in topics}
    assert have == {s.name: (s.partitions, s.configs) for s in topic_plan(config)}
    kafka = of_kind(production, "Kafka")[0]
    for topic in topics:
        assert topic["spec"]["replicas"] == 3 and topic["spec"]["config"]["min.insync.replicas"] == "2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert DNS_LABEL.match(topic["metadata"]["name"]) and topic["metadata"]["namespace"] == "eduhub"
    assert len({t["metadata"]["name"] for t in topics}) == len(topics)
    assert kafka["metadata"]["namespace"] == "kafka"
    assert kafka["spec"]["entityOperator"]["topicOperator"]["watchedNamespace"] == "eduhub"
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert of_kind(production, "KafkaNodePool")[0]["spec"]["replicas"] == 3


def test_kafka_users_grant_exactly_the_acl_plan(production, config):
    def operation(name: str) -> str:  # Strimzi's IdempotentWrite is Kafka's IDEMPOTENT_WRITE
        return re.sub(r"(?<!^)([A-Z])", r"_\1", name).upper()

    have = set()
    for user in of_kind(production, "KafkaUser"):
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            rtype = re.sub(r"(?<!^)([A-Z])", r"_\1", resource["type"]).upper()
            pattern = {"literal": "LITERAL", "prefix": "PREFIXED"}[resource.get("patternType", "literal")]
            name = resource.get("name", "kafka-cluster")
            have |= {(f"User:{user['metadata']['name']}", rtype, pattern, name, operation(op))
                     for op in acl["operations"]}
    want = {b.key for b in plan(config)}
    assert {"User:admin", "User:hub", "User:conn-smas"} <= {k[0] for k in want}
    assert have == want


# (d) the manifests agree with hub.yaml and the code


def test_the_deployed_hub_yaml_keeps_the_repository_sources_and_subscriptions(config):
    repo = load_config(ROOT / "hub.yaml", environ={})
    assert config.source_ids == repo.source_ids

    def without_url(subscription: dict) -> dict:
        return {**subscription, "delivery": {k: v for k, v in (subscription.get("delivery") or {}).items()
                                             if k != "url"}}
    assert [without_url(s) for s in config.subscriptions] == [without_url(s) for s in repo.subscriptions]
    for raw in config.connectors:  # each validates against its kind's model, as `eduhub connect` does
        connector_class(raw["kind"]).config_model.model_validate(raw)


def secret_envs(config) -> dict[str, set[str]]:
    """The environment variables hub.yaml names for secrets, by the process that reads them."""
    connect = {config.connect.token_env, "EDUHUB_KAFKA_PASSWORD"}
    for raw in config.connectors:
        connect |= {raw[k] for k in ("secret_env", "kafka_password_env") if raw.get(k)}
        connect |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", raw.get("url", "")))
    worker = {config.routing.key_env, config.connect.token_env, "EDUHUB_KAFKA_PASSWORD"}
    worker |= {s["delivery"]["secret_env"] for s in config.subscriptions if s.get("delivery", {}).get("secret_env")}
    return {"eduhub-worker": worker, "eduhub-connect": connect}


def test_env_vars_are_known_and_secrets_come_only_from_secrets(rendered, config):
    needed = secret_envs(config)
    allowed = set(ENV_OVERRIDES) | {"EDUHUB_CONFIG"} | needed["eduhub-worker"] | needed["eduhub-connect"]
    for name in ("eduhub-worker", "eduhub-connect"):
        env = {e["name"]: e for e in container(rendered, name)["env"]}
        assert set(env) <= allowed, f"{name}: {set(env) - allowed} override nothing"
        assert needed[name] <= set(env), f"{name} lacks {needed[name] - set(env)}"
        for var, entry in env.items():
            if SECRET_LOOKING.search(var):
                assert "value" not in entry and set(entry["valueFrom"]) == {"secretKeyRef"}, var
        assert env["EDUHUB_KAFKA_BOOTSTRAP_SERVERS"]["value"] == deploy_k8s.BOOTSTRAP == config.kafka.bootstrap_servers
        # each Kafka password is the Secret Strimzi made for that user
        users = {u["metadata"]["name"] for u in of_kind(rendered, "KafkaUser")}
        assert env["EDUHUB_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": config.kafka.username,
                                                                              "key": "password"}
        assert config.kafka.username in users
    env = {e["name"]: e for e in container(rendered, "eduhub-connect")["env"]}
    for raw in config.connectors:
        if raw.get("kafka_password_env"):
            ref = env[raw["kafka_password_env"]]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": raw["kafka_username"], "key": "password"} and ref["name"] in users


def test_ports_probes_and_mounts_match_hub_yaml_and_the_served_routes(rendered, config):
    worker_routes = set(re.findall(r'@app\.page\("([^"]+)"\)', (ROOT / "hub/runtime/web.py").read_text()))
    intake = {raw["port"] for raw in config.connectors if raw["kind"] == "http"}
    expected = {"eduhub-worker": ({config.worker.web_port}, worker_routes),
                "eduhub-connect": ({config.connect.port} | intake, set(PROBES))}
    raw_kafka = yaml.safe_load(HUB_YAML.read_text(encoding="utf-8"))["kafka"]
    for name, (ports, routes) in expected.items():
        spec = deployment(rendered, name)["spec"]["template"]["spec"]
        c = spec["containers"][0]
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert set(named.values()) == ports
        assert c["livenessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = c[probe]["httpGet"]
            assert get["path"] in routes and named.get(get["port"], get["port"]) == min(ports)
        assert spec["terminationGracePeriodSeconds"] > config.worker.shutdown_timeout_s
        assert spec["securityContext"]["runAsNonRoot"] is True
        hardening = c["securityContext"]
        assert hardening["readOnlyRootFilesystem"] is True and hardening["allowPrivilegeEscalation"] is False
        assert hardening["capabilities"]["drop"] == ["ALL"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in c["env"]}
        config_dir, config_file = env["EDUHUB_CONFIG"].rsplit("/", 1)
        config_map = next(d for d in of_kind(rendered, "ConfigMap") if d["metadata"]["name"] ==
                          mounts[config_dir]["configMap"]["name"])
        assert config_map["data"][config_file] == (GENERATED / "hub.yaml").read_text(encoding="utf-8")
        ca_dir, ca_file = raw_kafka["ssl_cafile"].rsplit("/", 1)
        assert mounts[ca_dir]["secret"]["secretName"] == f"{deploy_k8s.CLUSTER}-cluster-ca-cert"
        assert mounts[ca_dir]["secret"]["items"][0]["path"] == ca_file
        assert "emptyDir" in mounts["/tmp"]
    worker = container(rendered, "eduhub-worker")
    state = {e["name"]: e.get("value") for e in worker["env"]}["EDUHUB_WORKER_STATE_DIR"]
    volumes = {v["name"]: v for v in deployment(rendered, "eduhub-worker")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[next(m["name"] for m in worker["volumeMounts"] if m["mountPath"] == state)]["emptyDir"]["sizeLimit"]
    for service in of_kind(rendered, "Service"):
        pods = [d for d in of_kind(rendered, "Deployment")
                if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert len(pods) == 1
        named = {p["name"]: p["containerPort"] for p in pods[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert all(named[p["targetPort"]] == p["port"] for p in service["spec"]["ports"])


def test_every_referenced_secret_is_documented(rendered):
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    names = set()
    for d in of_kind(rendered, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for c in spec["containers"] for e in c["env"]
                  if "secretKeyRef" in e.get("valueFrom", {})}
        names |= {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    for auth in of_kind(rendered, "TriggerAuthentication"):
        names |= {ref["name"] for ref in auth["spec"]["secretTargetRef"]}
    assert {"hub", "eduhub-worker", "eduhub-connect", "eduhub-cluster-ca-cert"} <= names
    assert [n for n in sorted(names) if f"`{n}`" not in readme] == []


def test_images_are_pinned_to_this_version(rendered):
    for d in of_kind(rendered, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            name, _, tag = c["image"].rpartition(":")
            assert name and tag == hub.__version__, f"{c['image']}: pin the image to {hub.__version__}"


def test_keda_scales_the_worker_within_the_ingest_partitions(rendered, config):
    scaled = of_kind(rendered, "ScaledObject")[0]["spec"]
    target = deployment(rendered, scaled["scaleTargetRef"]["name"])
    assert scaled["scaleTargetRef"]["kind"] == "Deployment" and target["metadata"]["name"] == "eduhub-worker"
    ingest = [s.partitions for s in topic_plan(config) if s.name.startswith("ingest.")]
    assert ingest and 1 <= scaled["minReplicaCount"] <= target["spec"]["replicas"]
    assert scaled["maxReplicaCount"] <= min(ingest)
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["metadata"]["consumerGroup"] == f"{APP_ID}-validate"
    assert trigger["metadata"]["bootstrapServers"] == deploy_k8s.BOOTSTRAP
    auth = next(a for a in of_kind(rendered, "TriggerAuthentication")
                if a["metadata"]["name"] == trigger["authenticationRef"]["name"])
    maps = {m["metadata"]["name"]: m["data"] for m in of_kind(rendered, "ConfigMap")}
    params = {r["parameter"]: maps[r["name"]][r["key"]] for r in auth["spec"]["configMapTargetRef"]}
    assert params == {"sasl": "scram_sha512", "tls": "enable", "username": config.kafka.username}
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password", "ca"}


def test_disruption_budgets_and_network_policies_select_real_pods(rendered, config):
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(rendered, "Deployment")]
    for pdb in of_kind(rendered, "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in pods), pdb["metadata"]
    policies = of_kind(rendered, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies)
    for policy in policies:
        assert policy["metadata"]["namespace"] == "eduhub"
        match = policy["spec"]["podSelector"].get("matchLabels", {})
        assert any(selects(match, labels) for labels in pods), policy["metadata"]["name"]
    by_name = {p["metadata"]["name"]: p["spec"] for p in policies}

    def ports(rules: list[dict]) -> set[int]:
        return {p["port"] for rule in rules for p in rule.get("ports", [])}

    registry_port = int(re.match(r"https?://[^/:]+:(\d+)", config.registry.url).group(1))
    intake = {raw["port"] for raw in config.connectors if raw["kind"] == "http"}
    assert ports(by_name["worker"]["egress"]) >= {deploy_k8s.LISTENER_PORT, registry_port, config.connect.port}
    assert ports(by_name["connect"]["egress"]) >= {deploy_k8s.LISTENER_PORT, registry_port, 5432}
    assert ports(by_name["worker"]["ingress"]) == {config.worker.web_port}
    assert ports(by_name["connect"]["ingress"]) == {config.connect.port} | intake


def test_the_cluster_runs_the_kafka_line_the_suite_tests():
    import xml.etree.ElementTree as ET

    tested = ET.parse(ROOT / "deploy" / "kafka" / "pom.xml").getroot().find(
        "m:properties/m:kafka.version", {"m": "http://maven.apache.org/POM/4.0.0"}).text
    kafka = next(d for d in yaml.safe_load_all((GENERATED / "kafka.yaml").read_text()) if d["kind"] == "Kafka")
    assert kafka["spec"]["kafka"]["version"] == deploy_k8s.KAFKA_VERSION
    assert deploy_k8s.KAFKA_VERSION.split(".")[:2] == tested.split(".")[:2]

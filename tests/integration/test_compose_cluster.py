"""The compose `cluster` profile for real: kafka-cluster.sh runs three Kafka nodes; the hub runs on them as User:hub."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from aiokafka.errors import TopicAuthorizationFailedError

from tests.compose_cluster import ADMIN_PASSWORD_ENV, CLUSTER_ENV, ROOT, Cluster
from tests.conftest import PORT_OFFSET, WorkerProcess
from tests.kafka_helpers import wait_until

pytestmark = pytest.mark.integration
HUB_CLUSTER_YAML = ROOT / "deploy" / "compose" / "hub-cluster.yaml"
FIRST_PORT = 29500 + PORT_OFFSET  # kafka-N: client FIRST_PORT + 2(N-1), controller one above
WEB_PORT = FIRST_PORT + 10
CANONICAL = "edu.exam.registration"
SOURCE = "exam-reg"
CLUSTER_USERNAME = CLUSTER_ENV["EDUHUB_COMPOSE_KAFKA_USERNAME"]  # the hub's SASL user in cluster mode


def hub_config(path: Path, certs: Path, state_dir: Path) -> Path:
    """deploy/compose/hub-cluster.yaml as it is, but for the CA's path (the cluster-certs volume is /certs there)."""
    document = yaml.safe_load(HUB_CLUSTER_YAML.read_text())
    assert document["kafka"]["ssl_cafile"] == "/certs/ca.pem"
    document["kafka"]["ssl_cafile"] = str(certs / "ca.pem")
    document["worker"]["state_dir"] = str(state_dir)  # compose: EDUHUB_WORKER_STATE_DIR=/var/lib/eduhub
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
    return path


def hub_env(cluster: Cluster, config: Path, registry_url: str) -> dict[str, str]:
    """What compose gives the hub's services in cluster mode (x-hub-environment, the worker's secrets)."""
    return {"EDUHUB_CONFIG": str(config), "EDUHUB_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap,
            "EDUHUB_KAFKA_USERNAME": CLUSTER_USERNAME, "EDUHUB_KAFKA_PASSWORD": cluster.password_of(CLUSTER_USERNAME),
            "EDUHUB_REGISTRY_URL": registry_url, "EDUHUB_WEB_PORT": str(WEB_PORT),
            "EDUHUB_WORKER_INSTANCE_ID": "cluster-worker-1",
            "EDUHUB_PSEUDONYM_KEY": "pseudonym-key-of-the-compose-cluster-test-0123456789",
            "EDUHUB_SUB_ADMISSION_RESULTS_SECRET": "admission-results-secret-0123456789",
            "EDUHUB_SUB_PARENT_APP_SECRET": "parent-app-secret-0123456789"}


def eduhub(args: list[str], env: dict[str, str], bound_s: float = 180) -> subprocess.CompletedProcess:
    """The real CLI (`python -m hub`, what the `eduhub` entry point runs) as a child process."""
    return subprocess.run([sys.executable, "-m", "hub", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=bound_s, env={**os.environ, **env})


def registrations(env: dict[str, str], path: Path, count: int, seed: int) -> set[str]:
    """`eduhub simulate` envelopes in `path` (all valid: no --bad-ratio); their event ids."""
    made = eduhub(["simulate", "-n", str(count), "--seed", str(seed), "-o", str(path)], env)
    assert made.returncode == 0, made.stderr
    return {json.loads(line)["event_id"] for line in path.read_text().splitlines()}


def ingest(env: dict[str, str], path: Path, count: int) -> None:
    done = eduhub(["ingest", str(path), "--source", SOURCE], env)
    assert done.returncode == 0 and f"published {count} envelopes to ingest.{SOURCE}" in done.stdout, \
        done.stdout + done.stderr


def canonical_ids(env: dict[str, str], want: int) -> set[str]:
    """The event ids of the records on edu.exam.registration, read as User:hub with `eduhub tail` (bounded)."""
    found: set[str] = set()

    def enough() -> bool:
        tail = eduhub(["tail", CANONICAL, "--from-beginning", "--json", "--max", str(want), "--timeout", "15"], env)
        assert tail.returncode == 0, tail.stderr[-3000:]
        found.clear()
        found.update(json.loads(line)["headers"]["eduhub.event_id"] for line in tail.stdout.splitlines() if line)
        return len(found) >= want

    wait_until(enough, bound_s=180, interval_s=2)
    return found


def describe_topic(cluster: Cluster, topic: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient(cluster.admin_config()).list_topics(topic, timeout=15).topics[topic]


def in_sync(cluster: Cluster, topic: str, brokers: set[int]) -> bool:
    """Every partition of `topic` has three replicas, and exactly `brokers` in sync."""
    described = describe_topic(cluster, topic)
    return described.error is None and bool(described.partitions) and all(
        len(p.replicas) == 3 and set(p.isrs) == brokers for p in described.partitions.values())


def broker_setting(cluster: Cluster, broker_id: int, name: str) -> str:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient(cluster.admin_config())
    (future,) = admin.describe_configs([ConfigResource(ResourceType.BROKER, str(broker_id))],
                                       request_timeout=15).values()
    return future.result(timeout=30)[name].value


def first_record_as(cluster: Cluster, user: str, topic: str, bound_s: float = 60) -> bytes:
    """The first record of `topic` read as `user` through the hub's own Kafka client, in a group of the user's
    prefix (sub.<id>.*, which its ACLs allow), or the broker's refusal raised."""
    from pydantic import SecretStr

    from hub.kafka.clients import KafkaClients

    async def go() -> bytes:
        kafka = KafkaClients(cluster.bootstrap, "SASL_SSL", username=user,
                             password=SecretStr(cluster.password_of(user)), ssl_cafile=str(cluster.certs / "ca.pem"))
        consumer = kafka.consumer(topic, group_id=f"sub.{user.removeprefix('sub-')}.cluster-test",
                                  auto_offset_reset="earliest", enable_auto_commit=False)
        await kafka.start(consumer)
        try:
            return (await asyncio.wait_for(consumer.getone(), bound_s)).value
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_three_nodes_of_kafka_cluster_sh_carry_the_hub_over_sasl_ssl_and_survive_one_down(local_stack, tmp_path):
    timings: dict[str, float] = {}
    started = time.monotonic()
    certs = tmp_path / "certs"
    made = eduhub(["deploy", "certs", str(certs), "--host", "kafka-1", "--host", "kafka-2", "--host", "kafka-3"], {})
    assert made.returncode == 0 and (certs / "ca.pem").is_file(), made.stderr
    cluster = Cluster(tmp_path / "cluster", certs, FIRST_PORT, local_stack.cache_dir)
    config = hub_config(tmp_path / "hub-cluster.yaml", certs, tmp_path / "worker-state")
    env = hub_env(cluster, config, local_stack.registry_url)
    worker = None
    try:
        # 1. Three nodes, each the script with compose's environment; all answer admin over SASL_SSL.
        cluster.start()
        timings["cluster up"] = cluster.wait_answering()
        for node in cluster.nodes:
            text = (node.folder / "private" / "server.properties").read_text()
            assert f"advertised.listeners=SASL_SSL://127.0.0.1:{node.client_port}" in text
            assert (node.folder / "data" / "meta.properties").is_file()

        # 2. `eduhub acl apply` as admin: every ACL of the plan once; a second run adds nothing.
        acl_env = {**env, ADMIN_PASSWORD_ENV: cluster.password_of("admin")}
        first = eduhub(["acl", "apply"], acl_env)
        assert first.returncode == 0, first.stdout + first.stderr
        added = re.search(r"added (\d+) of (\d+) ACLs \(SASL_SSL listener (\S+) as User:admin\)", first.stdout)
        assert added and added[1] == added[2] and int(added[1]) > 0 and added[3] == cluster.bootstrap, first.stdout
        again = eduhub(["acl", "apply"], acl_env)
        assert again.returncode == 0 and f"all {added[2]} ACLs were already there" in again.stdout, again.stdout
        assert cluster.password_of("admin") not in first.stdout + first.stderr + again.stdout + again.stderr

        # 3. The worker, as User:hub, creates its topics three-way replicated; the brokers want two in sync.
        t0 = time.monotonic()
        worker = WorkerProcess(config, tmp_path / "worker.log", env=env)
        worker.start(ready_timeout=300)
        timings["worker ready"] = time.monotonic() - t0
        from confluent_kafka.admin import AdminClient

        assert sorted(AdminClient(cluster.admin_config()).list_topics(timeout=15).brokers) == [1, 2, 3]
        assert wait_until(lambda: in_sync(cluster, CANONICAL, {1, 2, 3}), bound_s=120), \
            describe_topic(cluster, CANONICAL)
        assert len(describe_topic(cluster, CANONICAL).partitions) == 12  # hub-cluster.yaml's canonical_partitions
        assert [broker_setting(cluster, n, "min.insync.replicas") for n in (1, 2, 3)] == ["2", "2", "2"]

        # 4. Envelopes in as User:hub, validated and out on the canonical topic (ACLs enforced, no super user).
        t0 = time.monotonic()
        first_ids = registrations(env, tmp_path / "first.jsonl", 20, seed=101)
        ingest(env, tmp_path / "first.jsonl", 20)
        assert canonical_ids(env, 20) == first_ids, worker.log_path.read_text()[-3000:]
        timings["20 through"] = time.monotonic() - t0

        # 5. kafka-3 crashes: two replicas stay in sync (= min.insync.replicas), so writes still succeed.
        cluster.kill(cluster.nodes[2])
        t0 = time.monotonic()
        # The controller fences it and shrinks every ISR to the two left: the writes below need both of them.
        for topic in (f"ingest.{SOURCE}", CANONICAL):
            assert wait_until(lambda t=topic: in_sync(cluster, t, {1, 2}), bound_s=120), describe_topic(cluster, topic)
        second_ids = registrations(env, tmp_path / "second.jsonl", 10, seed=202)
        assert not second_ids & first_ids
        ingest(env, tmp_path / "second.jsonl", 10)
        assert canonical_ids(env, 30) == first_ids | second_ids, worker.log_path.read_text()[-3000:]
        timings["10 through, one node down"] = time.monotonic() - t0

        # ... and least privilege holds: sub-analytics reads its own topic, never the canonical one.
        assert first_record_as(cluster, "sub-analytics", "sub.analytics.exam.registration")
        with pytest.raises(TopicAuthorizationFailedError):
            first_record_as(cluster, "sub-analytics", CANONICAL)
    finally:
        t0 = time.monotonic()
        if worker is not None and worker.process is not None:
            worker.stop()  # by its pid (SIGTERM, then SIGKILL after 60 s)
        cluster.stop()
        timings["stop"] = time.monotonic() - t0
        timings["total"] = time.monotonic() - started
        print("compose cluster timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()), file=sys.stderr)

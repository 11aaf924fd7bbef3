"""The topic plan (hub/ops/topology.py) against hub.yaml variations; the real broker check is in
tests/integration/test_deploy_image.py."""

from __future__ import annotations

from pathlib import Path

import yaml

from hub.core.config import load_config
from hub.ops.topology import topic_plan

ROOT = Path(__file__).resolve().parents[2]


def plan_of(tmp_path, **changes):
    raw = yaml.safe_load((ROOT / "hub.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    config = load_config(path, environ={})
    return config, {s.name: s for s in topic_plan(config)}


def test_every_source_entity_and_subscription_has_its_topics(tmp_path):
    config, plan = plan_of(tmp_path)
    for source in config.source_ids:
        assert plan[f"ingest.{source}"].partitions == config.kafka.ingest_partitions
        assert plan[f"hub.dlq.{source}"].configs == {"retention.ms": str(30 * 86_400_000)}
    assert plan["edu.exam.registration"].partitions == config.kafka.canonical_partitions
    assert plan["sub.parent-app.school.score"].configs == {}
    assert "sub.parent-app.exam.registration" not in plan  # parent-app is granted scores and term results only
    assert plan["hub.audit"].configs == {"retention.ms": "-1"}
    assert plan["hub.connect.offsets"].configs == {"cleanup.policy": "compact"}
    assert plan["hub.connect.offsets"].created_by == "connect"
    assert plan["hub.dlq.replays"].partitions == 1


def test_only_http_subscribers_get_a_dead_letter_topic(tmp_path):
    config, plan = plan_of(tmp_path)
    http = {s["id"] for s in config.subscriptions if s.get("delivery", {}).get("kind") == "http"}
    assert http and {n.removeprefix("hub.dlq.sub.") for n in plan if n.startswith("hub.dlq.sub.")} == http


def test_the_plan_follows_partitions_retention_and_the_dedup_switch(tmp_path):
    _, plan = plan_of(tmp_path, kafka__ingest_partitions=24, kafka__canonical_partitions=6,
                      kafka__dlq_retention_days=7, worker__dedup_window_s=0)
    assert plan["ingest.smas"].partitions == 24 and plan["hub.dlq.smas"].partitions == 24
    assert plan["edu.school.score"].partitions == 6 and plan["hub.audit"].partitions == 6
    assert plan["hub.dlq.route"].configs == {"retention.ms": str(7 * 86_400_000)}
    assert not any(name.endswith("-dedup-changelog") for name in plan)
    _, with_dedup = plan_of(tmp_path, worker__dedup_window_s=86_400)
    assert with_dedup["eduhub-validate-dedup-changelog"].configs == {
        "cleanup.policy": "delete", "retention.ms": str(2 * 86_400_000)}


def test_without_subscriptions_or_connectors_their_topics_go(tmp_path):
    _, plan = plan_of(tmp_path, subscriptions=[], connectors=[])
    assert not any(n.startswith("sub.") or n.startswith("hub.dlq.sub.") for n in plan)
    assert "hub.audit" not in plan and "hub.connect.offsets" not in plan
    assert "ingest.smas" in plan  # the worker still reads every source

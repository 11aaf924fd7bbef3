"""Metric definitions: every Prometheus metric the hub exports, named `eduhub_*`, labels shared; and
the helpers that fill the shared ones (the error label of a recovered failure, consumer lag)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from hub.core import __version__

if TYPE_CHECKING:
    from aiokafka import TopicPartition

# `*_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()


class HubMetrics:
    """The hub's metrics on one registry (a fresh registry per worker keeps tests independent)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "eduhub_events_ingested", "Events read from ingest topics.", ["source", "entity"], registry=r
        )
        self.valid = Counter(
            "eduhub_events_valid", "Events that passed validation and were written to a canonical topic.",
            ["source", "entity"], registry=r,
        )
        self.invalid = Counter(
            "eduhub_events_invalid", "Events that failed validation, by the first rule they broke.",
            ["source", "entity", "rule"], registry=r,
        )
        self.deduplicated = Counter(
            "eduhub_events_deduplicated", "Valid events dropped because their event_id was accepted within the "
            "dedup window.", ["source", "entity"], registry=r,
        )
        self.routed = Counter(
            "eduhub_events_routed", "Records written to a subscriber's topic (its feed, or the queue of its HTTP delivery).", ["subscriber", "entity"],
            registry=r,
        )
        self.delivered = Counter(
            "eduhub_events_delivered", "Records a subscriber received: written to its Kafka topic, or accepted "
            "(2xx) by its HTTP endpoint.", ["subscriber", "entity"], registry=r,
        )
        self.delivery_failures = Counter(
            "eduhub_delivery_failures", "Failed HTTP delivery attempts (each is retried or dead-lettered).",
            ["subscriber", "entity"], registry=r,
        )
        self.delivery_dead_letters = Counter(
            "eduhub_delivery_dead_letters", "Records an HTTP subscriber refused max_attempts times, sent to its DLQ.",
            ["subscriber", "entity"], registry=r,
        )
        self.circuit_open = Gauge(
            "eduhub_delivery_circuit_open", "1 while an HTTP subscriber's circuit breaker is open.", ["subscriber"],
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "eduhub_end_to_end_latency_seconds", "From an event's occurred_at to its delivery to a subscriber.",
            ["subscriber"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=r,
        )
        self.dlq_writes = Counter(
            "eduhub_dlq_writes", "Records written to a dead-letter topic.", ["source", "stage"], registry=r
        )
        self.batch_seconds = Histogram(
            "eduhub_stage_batch_seconds", "Time to process and commit one batch, per stage.", ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.stage_errors = Counter(
            "eduhub_stage_errors", "Failures a stage recovered from by retrying with backoff: aborted batches "
            "(by Kafka error class), failed state restores (error=restore), an unreachable registry "
            "(error=registry). One that keeps recurring needs an operator.", ["stage", "error"], registry=r,
        )
        self.stage_last_turn = Gauge(
            "eduhub_stage_last_turn_timestamp_seconds", "Unix time a stage's loop last turned; a stalled stage "
            "stops updating it (and /healthz fails).", ["stage"], registry=r,
        )
        self.registry_errors = Counter(
            "eduhub_registry_errors", "Failed schema registry requests.", ["operation"], registry=r
        )
        self.consumer_lag = Gauge(
            "eduhub_consumer_lag_records", "Records of a partition not yet processed by a consumer group "
            "(last stable offset minus the next offset to process).", ["group", "topic", "partition"], registry=r,
        )
        self.assigned_partitions = Gauge(
            "eduhub_assigned_partitions", "Partitions currently assigned to this worker, per stage.", ["stage"],
            registry=r,
        )
        self.connector_up = Gauge(
            "eduhub_connector_up", "1 while a connector runs, 0 when paused, stopped or failing.",
            ["connector", "source"], registry=r,
        )
        self.connector_published = Counter(
            "eduhub_connector_records_published", "Envelopes a connector published to its ingest topic.",
            ["connector", "source"], registry=r,
        )
        self.connector_errors = Counter(
            "eduhub_connector_errors", "Failed connector polls or publishes (each retried with backoff).",
            ["connector", "source"], registry=r,
        )
        self.connector_last_success = Gauge(
            "eduhub_connector_last_success_timestamp_seconds", "Unix time of a connector's last published batch.",
            ["connector", "source"], registry=r,
        )
        self.registry_errors.labels("register")  # at 0 from the start: "no errors" is data, not a gap
        self.build = Info("eduhub_build", "Version of the running hub.", registry=r)
        self.build.info({"version": __version__})


def error_label(exc: BaseException) -> str:
    """The `error` label of eduhub_stage_errors_total for an exception a stage recovered from: the
    exception class's `metrics_label` when it has one (RegistryError: "registry"), else its name.
    (core imports nothing of the hub's, so the label is the exception's to say.)"""
    return getattr(type(exc), "metrics_label", type(exc).__name__)


def export_lag(metrics: HubMetrics, consumer: Any, group_id: str, next_offsets: dict[TopicPartition, int]) -> None:
    """Lag of every assigned partition whose end the consumer (an AIOKafkaConsumer) has seen in a fetch."""
    for tp in consumer.assignment():
        end = consumer.last_stable_offset(tp)
        if end is None:
            end = consumer.highwater(tp)
        position = next_offsets.get(tp)
        if end is None or position is None:
            continue
        metrics.consumer_lag.labels(group_id, tp.topic, str(tp.partition)).set(max(0, end - position))

"""Prometheus metrics shared by every service (each service adds its own domain metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_PUBLISHED = Counter(
    "hazard_outbox_published_total", "Outbox rows published to the broker (then retained).", ["service"]
)
OUTBOX_PRUNED = Counter(
    "hazard_outbox_pruned_total", "Published outbox rows deleted after the retention period.", ["service"]
)
OUTBOX_REPLAYED = Counter(
    "hazard_outbox_replayed_total", "Retained outbox rows published again by a replay.", ["service"]
)
OUTBOX_ERRORS = Counter(
    "hazard_outbox_relay_errors_total", "Relay attempts that failed (broker or database away).", ["service"]
)
OUTBOX_PENDING = Gauge("hazard_outbox_pending", "Outbox rows waiting to be published.", ["service"])
CALENDAR_COVERAGE_DAYS = Gauge(
    "hazard_calendar_coverage_days",
    "Days from today (included) through the last day whose public holidays and make-up days are known.",
    ["service"],
)

EVENTS_CONSUMED = Counter(
    "hazard_events_consumed_total",
    "Lifecycle events taken from the topic, by outcome (applied, duplicate, ignored, dead_lettered).",
    ["service", "outcome"],
)
DEAD_LETTERED = Counter(
    "hazard_dead_lettered_total", "Messages sent to the dead-letter topic, by reason.", ["service", "reason"]
)
CONSUMER_LAG = Gauge(
    "hazard_consumer_lag_messages",
    "Messages behind the partition's high-water mark, as of the last batch.",
    ["service", "topic", "partition"],
)
CONSUMER_BLOCKED = Gauge(
    "hazard_consumer_blocked",
    "1 while the environment (database or broker) keeps the consumer from progressing, by kind of fault.",
    ["service", "reason"],
)
CONSUMER_ENVIRONMENT_ERRORS = Counter(
    "hazard_consumer_environment_errors_total",
    "Batches held back by a fault of the environment (never dead-lettered), by kind of fault.",
    ["service", "reason"],
)
CONSUMER_RETRIES = Counter(
    "hazard_consumer_retries_total", "Batches retried after a failure, by kind.", ["service", "kind"]
)
BATCH_SECONDS = Histogram(
    "hazard_consumer_batch_seconds",
    "Time to apply one batch of events, commit included.",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "hazard_consumer_batch_size",
    "Events per consumed batch.",
    ["service"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)

# The outbox relays and the consumers' dead letters send on the broker's producer directly
# (shared.kafka.BrokerSender), not through FastStream's publish, so FastStream's
# faststream_published_messages_* see none of it: these count what they send.
PUBLISHED_MESSAGES = Counter(
    "hazard_published_messages_total",
    "Messages sent to the broker by the relays and dead-letter paths, by topic and result (ok, error).",
    ["service", "topic", "result"],
)
PUBLISH_BATCH_SECONDS = Histogram(
    "hazard_publish_batch_duration_seconds",
    "Time to send one batch and have the broker confirm every message of it.",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

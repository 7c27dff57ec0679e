#!/bin/sh
# Create the hazard-dispatch topics with their partition counts and retention (idempotent).
# Runs in the apache/kafka image (compose service `init-topics`, Kubernetes Job `hazard-init`).
# Partition counts come from shared/topics.py (tests/unit/deploy checks that they agree).
#
#   KAFKA_BOOTSTRAP      host:port of any broker                 (default kafka:9092)
#   REPLICATION_FACTOR   copies of each partition: 3 in production, 1 for the single-node compose
#   MIN_INSYNC_REPLICAS  copies that must have a write before it is acknowledged (acks=all):
#                        2 in production (one broker may be down), 1 for the single-node compose
#
# Retention: the lifecycle topic is kept forever (retention.ms=-1) because reporting is rebuilt
# from it (python -m services.reporting.rebuild) and new consumers start from the beginning.
# The dead-letter topic keeps 30 days (2592000000 ms): long enough to notice, inspect and replay.
set -eu

KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"
BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
RF="${REPLICATION_FACTOR:-3}"
MIN_ISR="${MIN_INSYNC_REPLICAS:-2}"

create_topic() {
    # create_topic NAME PARTITIONS RETENTION_MS
    "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$1" --partitions "$2" --replication-factor "$RF" \
        --config "retention.ms=$3" \
        --config "min.insync.replicas=$MIN_ISR" \
        --config cleanup.policy=delete
    echo "topic $1: $2 partitions, replication $RF, min.insync.replicas $MIN_ISR, retention.ms $3"
}

create_topic hazard.lifecycle 6 -1
create_topic hazard.lifecycle.dlt 1 2592000000

"$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --describe --topic hazard.lifecycle

"""Against Apache Kafka the producers are idempotent with acks=all, and never create topics."""

from __future__ import annotations

from typing import Any

from aiokafka.conn import collect_hosts
from prometheus_client import CollectorRegistry

from shared.kafka import create_broker
from shared.settings import KafkaSettings


def _connection(settings: KafkaSettings) -> dict[str, Any]:
    broker = create_broker(settings, service="deploy-check", registry=CollectorRegistry())
    # The keyword arguments FastStream hands to aiokafka's producer, consumer and admin client.
    return dict(broker._connection_kwargs)


def test_defaults_are_idempotent_with_acks_all_and_no_topic_auto_creation() -> None:
    settings = KafkaSettings(bootstrap_servers="kafka-0:9092,kafka-1:9092,kafka-2:9092")
    assert settings.idempotent_producer is True
    assert settings.acks == "all"
    connection = _connection(settings)
    assert connection["enable_idempotence"] is True
    assert connection["acks"] == "all"
    # aiokafka splits commas only in a string: each broker must reach it as its own entry.
    hosts = collect_hosts(connection["bootstrap_servers"], randomize=False)
    assert [(host, port) for host, port, _ in hosts] == [
        ("kafka-0", 9092),
        ("kafka-1", 9092),
        ("kafka-2", 9092),
    ]
    broker = create_broker(settings, service="deploy-check", registry=CollectorRegistry())
    assert broker.config.broker_config.allow_auto_create_topics is False


def test_the_local_broker_switch_turns_idempotence_off_only_when_asked() -> None:
    connection = _connection(KafkaSettings(bootstrap_servers="127.0.0.1:59092", idempotent_producer=False))
    assert connection["enable_idempotence"] is False
    assert connection["acks"] == "all"

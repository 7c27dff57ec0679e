"""Real PostgreSQL and a Kafka-protocol broker as local processes, for the local stack and the tests."""

from shared.devstack.broker import BrokerError, LocalKafka
from shared.devstack.ports import free_port, port_is_free
from shared.devstack.postgres import LocalPostgres, PostgresError

__all__ = ["BrokerError", "LocalKafka", "LocalPostgres", "PostgresError", "free_port", "port_is_free"]

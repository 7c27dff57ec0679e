"""The services' partitioner puts every key where aiokafka's (and the Java client's) would."""

from __future__ import annotations

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from shared.kafka import create_broker
from shared.partition import kafka_partitioner, murmur2
from shared.settings import KafkaSettings


def test_murmur2_equals_aiokafka_for_every_length_and_byte() -> None:
    rng = random.Random(20)
    for length in range(0, 130):
        for _ in range(40):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data), (length, data.hex())
    for data in (b"\xff" * 37, b"\x80" * 5, b"\x00" * 3):  # high bits: Java's signed bytes
        assert murmur2(data) == aiokafka_murmur2(data)


def test_murmur2_of_known_keys() -> None:
    # Values of org.apache.kafka.common.utils.UtilsTest#testMurmur2 (as unsigned 32-bit).
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == -1486304829 & 0xFFFFFFFF
    assert murmur2(b"abc") == 479470107


def test_hazard_keys_go_to_aiokafka_s_partition() -> None:
    default = DefaultPartitioner()
    for partitions in (1, 3, 12, 50):
        everything = list(range(partitions))
        for _ in range(300):
            key = str(uuid.uuid4()).encode()
            assert kafka_partitioner(key, everything, everything[:1]) == default(
                key, everything, everything[:1]
            )


def test_unkeyed_message_goes_to_an_available_partition_else_any() -> None:
    assert {kafka_partitioner(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {kafka_partitioner(None, [0, 1], []) for _ in range(200)} == {0, 1}


def test_the_service_broker_uses_it() -> None:
    broker = create_broker(KafkaSettings(bootstrap_servers="localhost:9092"), service="intake")
    # FastStream keeps what it builds the aiokafka producer from here (no public accessor).
    assert broker._connection_kwargs["partitioner"] is kafka_partitioner

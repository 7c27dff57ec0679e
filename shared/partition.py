"""Which partition a keyed message goes to: Kafka's own choice, computed in fewer Python steps.

Every event is keyed by its hazard id, and a hazard's events keep their order only because every
producer (each service's outbox relay, the dead-letter replay, tests) puts the same key on the
same partition: the Java client's ``murmur2(key) & 0x7fffffff % partitions``, which aiokafka's
``DefaultPartitioner`` computes byte by byte in pure Python (about 6 us for a 36-byte hazard id,
1-1.4% of a service's profiled time). :func:`murmur2` is the same function with the key's 4-byte
words read by one ``struct`` call and the masks folded, so its result is bit for bit
aiokafka's (tests compare them on every length); no registry package offers Kafka's variant of
murmur2 in C (``mmh3`` is murmur3).
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


@functools.lru_cache(maxsize=256)
def _words(count: int) -> struct.Struct:
    """The little-endian unsigned 32-bit words of a key of ``count`` whole words."""
    return struct.Struct(f"<{count}I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned 32-bit."""
    m, mask = _M, _MASK  # locals: read in the loop
    length = len(data)
    h = _SEED ^ length
    for k in _words(length >> 2).unpack_from(data):
        k = (k * m) & mask
        h = ((h * m) ^ (((k ^ (k >> 24)) * m) & mask)) & mask
    extra = length & 3
    if extra:
        whole = length & ~3
        if extra == 3:
            h ^= data[whole + 2] << 16
        if extra >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    return h ^ (h >> 15)


def kafka_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's ``DefaultPartitioner``: a keyed message by murmur2, an unkeyed one at random."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]

"""Which partition a lead's events belong to, for an event that came without a Kafka key.

The contract keys every lead event by its ``lead_id`` (events.md), and a message without a
key is valid; but a producer sends a keyless message to any partition, away from the lead's
state. The worker re-publishes it keyed, to the partition a producer's partitioner would
have chosen for that key: librdkafka's default (``consistent_random``: CRC-32 of the key,
as confluent-kafka and kcat use) or Kafka's Java client's (murmur2, as aiokafka and Faust
use), whichever ``STREAMPROC_KEYLESS_PARTITIONER`` names.
"""

from __future__ import annotations

import zlib

from streamproc.config import Partitioner

__all__ = ["key_partition", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (``Utils.murmur2``), as an unsigned 32-bit number."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[length - length % 4 :]
    if tail:
        for i in range(len(tail) - 1, -1, -1):
            h ^= tail[i] << (8 * i)
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def key_partition(key: bytes, partitions: int, partitioner: Partitioner) -> int:
    """The partition ``partitioner`` gives ``key`` among ``partitions``."""
    if partitioner == "murmur2":
        return (murmur2(key) & 0x7FFFFFFF) % partitions
    return zlib.crc32(key) % partitions

"""The partition of a keyless event's lead is the one the producers' partitioner gives its
key: murmur2 as Kafka's Java client and aiokafka compute it, CRC-32 as librdkafka's."""

from __future__ import annotations

import random
import zlib

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streamproc.contract.partitioning import key_partition, murmur2


def test_murmur2_is_kafkas() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(n) for n in range(40)] + [b"L-000123", "lead-é".encode()]
    assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) & 0xFFFFFFFF for k in keys]
    partitions = list(range(12))
    for key in keys:
        expected = DefaultPartitioner()(key, partitions, partitions)
        assert key_partition(key, 12, "murmur2") == expected


def test_crc32_is_librdkafkas_consistent_partitioner() -> None:
    assert key_partition(b"L-000123", 4, "crc32") == zlib.crc32(b"L-000123") % 4

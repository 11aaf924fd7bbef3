"""Keys land where every Kafka client puts them."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from hub.kafka.writer import partition_for


def test_partition_for_agrees_with_aiokafkas_java_compatible_partitioner():
    rng = random.Random(7)
    partitions = list(range(12))
    keys = [rng.randbytes(rng.randrange(1, 60)) for _ in range(3000)]
    keys += [b"202603123456", "031309001234|2025-2026|1|MATH|REGULAR|2".encode(), "Nguyễn".encode()]
    for key in keys:
        assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions)

"""Which device partition of logs.raw a line belongs to: all lines of one router share one.

The key is the device the line is from: the hostname a transport authenticated, the one a
client sent, the one the line's header names, else the address it came from. The partition is
a stable hash of the key (CRC-32, the same in every process and release) modulo the number of
partitions, so every ingest replica sends one router's lines to the same place and the one
pipeline worker owning that partition sees them all, in order.
"""

from __future__ import annotations

from zlib import crc32

from opmas.messages import RawLog
from opmas.parser.header import hostname_of

NO_DEVICE = "-"  # the key of a line that names no device and came from nowhere known


def partition_of(key: str, partitions: int) -> int:
    """The partition of device `key` (case does not matter, as for hostnames)."""
    return crc32(key.lower().encode("utf-8", "surrogatepass")) % partitions


def device_key(item: RawLog) -> str:
    """The device `item` is from, as far as can be told before parsing it."""
    return (
        item.bound_hostname
        or item.hostname
        or hostname_of(item.line)
        or item.source_ip
        or NO_DEVICE
    )


def partition_of_item(item: RawLog, partitions: int) -> int:
    """`partition_of(device_key(item))`; with one partition, 0 without looking."""
    if partitions == 1:
        return 0
    return partition_of(device_key(item), partitions)


def by_partition(items: list[RawLog], partitions: int) -> dict[int, list[RawLog]]:
    """`items` grouped by partition, in input order within each."""
    groups: dict[int, list[RawLog]] = {}
    for item in items:
        groups.setdefault(partition_of_item(item, partitions), []).append(item)
    return groups

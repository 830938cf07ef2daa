"""logs.raw messages cut to fit the bus: one RawBatch per message, halved until it fits
(used by the syslog batcher and by HTTP ingest)."""

from __future__ import annotations

from opmas.ingest.framing import cut_utf8
from opmas.messages import Flag, RawBatch, RawLog, encode

HEADER_SLACK = 4096  # room for headers and subject within the NATS max payload


def encode_batches(
    batch_id: str, items: list[RawLog], max_bytes: int
) -> list[tuple[str, bytes, int]]:
    """(msg id, payload, lines) of `items`: one message, or halves `<id>:<n>` until each
    fits."""
    payload = encode(RawBatch(batch_id, items))
    if len(payload) <= max_bytes:
        return [(batch_id, payload, len(items))]
    if len(items) == 1:
        item = items[0]
        cut = cut_utf8(item.line.encode()[: max_bytes // 8]).decode()
        flags = item.flags if Flag.TRUNCATED in item.flags else [Flag.TRUNCATED, *item.flags]
        smaller = RawLog(item.event_id, item.arrival_ts, cut, item.transport, item.source_ip, flags)
        return [(batch_id, encode(RawBatch(batch_id, [smaller])), 1)]
    half = len(items) // 2
    parts = [items[:half], items[half:]]
    return [
        m
        for i, part in enumerate(parts)
        for m in encode_batches(f"{batch_id}:{i}", part, max_bytes)
    ]

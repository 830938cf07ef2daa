"""Publish an HTTP log batch on logs.raw (split into `<batch>:<n>` messages of at most
`batch_size` lines) and return only once JetStream acknowledged every one; with an
Idempotency-Key a retry republishes the same ids, and a completed one publishes nothing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import structlog

from opmas.bus.connect import Bus
from opmas.bus.partition import by_partition
from opmas.bus.publish import Publisher
from opmas.errors import Backlogged, BusError, Conflict
from opmas.ingest.backlog import Backlog
from opmas.ingest.idempotency import PENDING, IdempotencyStore, Record, record_key, seeded_uuid7
from opmas.ingest.metrics import PUBLISHED, RECEIVED
from opmas.ingest.rawbatches import HEADER_SLACK, encode_batches
from opmas.messages import RawLog, Transport, new_id
from opmas.settings import IngestSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Accepted:
    """The answer to a batch: lines accepted, its batch id, and whether it was a replay."""

    accepted: int
    batch_id: str
    replayed: bool = False


class HttpIngest:
    """Publishes HTTP batches for the API; one per app, the KV bucket opened on first use."""

    def __init__(self, bus: Bus, settings: IngestSettings, *, partitions: int = 1) -> None:
        self._bus = bus
        self._settings = settings
        self._partitions = partitions
        self._store: IdempotencyStore | None = None
        self._max_payload = max(bus.nc.max_payload - HEADER_SLACK, 64 * 1024)
        self.backlog = Backlog(bus, settings)

    @property
    def max_line_bytes(self) -> int:
        return self._max_payload // 7

    async def accept(
        self,
        items: list[RawLog],
        *,
        client: str,
        source_ip: str | None,
        body: bytes,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Publish `items` and wait for every PubAck.

        Raises BusError when the bus failed (the client may retry), Backlogged when the
        pipeline is too far behind (retry later), Conflict when the Idempotency-Key was
        already used with a different body.
        """
        if idempotency_key is None:
            now = time.time()
            for item in items:
                item.event_id, item.arrival_ts, item.source_ip = new_id(), now, source_ip
            batch_id = new_id()
            await self._publish(batch_id, items)
            return Accepted(len(items), batch_id)
        return await self._accept_once(items, client, source_ip, body, idempotency_key)

    async def _accept_once(
        self, items: list[RawLog], client: str, source_ip: str | None, body: bytes, key: str
    ) -> Accepted:
        store = await self._open_store()
        seed = record_key(client, key)
        digest = hashlib.sha256(body).hexdigest()
        record = await store.get(seed)
        if record is None:
            now = time.time()
            fresh = Record(PENDING, seeded_uuid7(now, f"{seed}/batch", 0), now, len(items), digest)
            record = await store.begin(seed, fresh)
        if record.digest != digest:
            raise Conflict("Idempotency-Key was already used for a different batch")
        if record.state != PENDING:
            return Accepted(record.count, record.batch_id, replayed=True)
        for index, item in enumerate(items):
            item.event_id = seeded_uuid7(record.arrival_ts, f"{seed}/event", index)
            item.arrival_ts, item.source_ip = record.arrival_ts, source_ip
        await self._publish(record.batch_id, items)
        try:
            await store.complete(seed, record)
        except BusError as exc:  # the batch is stored; a retry would only republish duplicates
            log.warning(
                "idempotency record not completed", batch_id=record.batch_id, error=str(exc)
            )
        return Accepted(record.count, record.batch_id)

    async def _open_store(self) -> IdempotencyStore:
        if self._store is None:
            self._store = await IdempotencyStore.open(self._bus, self._settings.idempotency_ttl_s)
        return self._store

    async def _publish(self, batch_id: str, items: list[RawLog]) -> None:
        """Publish `items` as batches of `batch_size` per device partition; the message ids
        derive from `batch_id`, so a retry of the same request is de-duplicated."""
        if self.backlog.is_full():
            raise Backlogged(self.backlog.describe())
        size = self._settings.batch_size
        publisher = Publisher(self._bus, max_pending=self._settings.max_inflight_batches)
        subjects = self._bus.subjects
        RECEIVED.labels(Transport.HTTP).inc(len(items))
        groups = by_partition(items, self._partitions)
        messages = nbytes = 0
        try:
            for partition, group in sorted(groups.items()):
                for start in range(0, len(group), size):
                    chunks = -(-len(group) // size)
                    chunk_id = _chunk_id(batch_id, partition, start // size, len(groups), chunks)
                    chunk = group[start : start + size]
                    for msg_id, payload, _ in encode_batches(chunk_id, chunk, self._max_payload):
                        subject = subjects.logs_raw_partition(partition)
                        await publisher.publish(subject, payload, msg_id=msg_id)
                        messages, nbytes = messages + 1, nbytes + len(payload)
        finally:
            await publisher.flush()
        PUBLISHED.inc(len(items))
        self.backlog.published(messages, nbytes)


def _chunk_id(batch_id: str, partition: int, n: int, groups: int, chunks: int) -> str:
    """The id of bus message `n` of a request: the request's own id when it is one message,
    `<id>:<n>` when one partition's lines fill several, `<id>:<partition>:<n>` otherwise."""
    if groups > 1:
        return f"{batch_id}:{partition}:{n}"
    return batch_id if chunks == 1 else f"{batch_id}:{n}"

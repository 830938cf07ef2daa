"""The `store` component: consumes logs.parsed.>, writes `events`, acks after the commit."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Self

import asyncpg
import structlog
from prometheus_client import Counter, Histogram

from opmas.bus.connect import Bus
from opmas.bus.consume import Msg, PullConsumer
from opmas.db.engine import plain_dsn
from opmas.errors import StoreError
from opmas.messages import ParsedEvent, parsed_batch_decoder
from opmas.store.devices import DeviceRegistry
from opmas.store.writer import write_events

log = structlog.get_logger(__name__)

STORED = Counter("opmas_store_events_stored_total", "Events written to `events`.")
DUPLICATES = Counter("opmas_store_duplicates_total", "Redelivered events already stored.")
LATENCY = Histogram(
    "opmas_store_arrival_to_stored_seconds",
    "Time from a line's arrival to its commit in `events`.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
DURABLE = "store"


class EventStore:
    """Write batches of parsed events; one transaction per fetched set of bus messages."""

    name = "store"

    def __init__(
        self, database_url: str, bus: Bus, *, fetch_batch: int = 64, max_discovered: int = 10_000
    ) -> None:
        self._database_url = database_url
        self._pool: asyncpg.Pool | None = None
        self._bus = bus
        self._fetch_batch = fetch_batch
        self._devices = DeviceRegistry(max_discovered=max_discovered)
        self._consumer: PullConsumer | None = None

    async def __aenter__(self) -> Self:
        # asyncpg's own codecs (not the ORM engine's): COPY writes inet and uuid from text
        self._pool = await asyncpg.create_pool(
            plain_dsn(self._database_url),
            min_size=1,
            max_size=2,
            server_settings={"application_name": "opmas-store"},
        )
        self._consumer = PullConsumer(
            self._bus,
            self._bus.subjects.logs_parsed_stream,
            DURABLE,
            batch=self._fetch_batch,
            permanent=(),
        )
        await self._consumer.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.__aexit__(None, None, None)
        if self._pool is not None:
            await self._pool.close()

    async def run(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None  # noqa: S101 - set by __aenter__
        await self._consumer.run(self.handle, stop)

    async def handle(self, msgs: list[Msg]) -> None:
        """Decode and store every event of `msgs` in one transaction (raises to retry)."""
        events: list[ParsedEvent] = []
        for msg in msgs:
            events.extend(parsed_batch_decoder.decode(msg.data).events)
        await self.store(events)

    async def store(self, events: list[ParsedEvent]) -> int:
        """Write `events`; return how many were new. Raises StoreError on database failure."""
        assert self._pool is not None  # noqa: S101 - set by __aenter__
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                new = await write_events(conn, events, self._devices)
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"writing {len(events)} events failed: {exc}") from exc
        now = time.time()
        for event in events:
            LATENCY.observe(max(0.0, now - _epoch(event.arrival_ts_utc)))
        STORED.inc(new)
        DUPLICATES.inc(len(events) - new)
        return new


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()

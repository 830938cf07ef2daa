"""The event store inside a pipeline worker: group commit of every partition's batches.

Each partition's consumer hands its parsed batch to `EventSink.write` and waits. One writer
takes everything waiting at that moment and stores it in one transaction (one COPY, one
commit, one fsync), so sixteen partitions cost one commit, not sixteen. If that transaction
fails, each waiting batch is written alone, so only the batch at fault gets the error; the
others succeed. The error keeps its cause (asyncpg's, or the socket's), by which the consumer
tells an outage (held and retried) from data the database refuses (dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Self

import asyncpg
import structlog

from opmas.bus.failures import TransientError
from opmas.db.engine import plain_dsn
from opmas.errors import StoreError
from opmas.messages import ParsedEvent
from opmas.store.devices import DeviceRegistry
from opmas.store.service import DUPLICATES, LATENCY, STORED
from opmas.store.writer import write_events

log = structlog.get_logger(__name__)

_Waiting = tuple[list[ParsedEvent], Sequence[float], asyncio.Future[int]]  # events, arrivals


class SinkClosed(StoreError, TransientError):
    """The worker is stopping: the batch is given back, to be stored after the restart."""


class EventSink:
    """Writes parsed events to `events` for every partition of one worker; see the module."""

    def __init__(self, database_url: str, *, max_discovered: int = 10_000) -> None:
        self._database_url = database_url
        self._devices = DeviceRegistry(max_discovered=max_discovered)
        self._pool: asyncpg.Pool | None = None
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        # asyncpg's own codecs (not the ORM engine's): COPY writes inet and uuid from text
        self._pool = await asyncpg.create_pool(
            plain_dsn(self._database_url),
            min_size=1,
            max_size=2,
            server_settings={"application_name": "opmas-pipeline"},
        )
        self._writer = asyncio.create_task(self._write_forever(), name="event-sink")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for _, _, future in self._waiting:
            if not future.done():
                future.set_exception(SinkClosed("event store closed"))
        self._waiting.clear()
        if self._pool is not None:
            await self._pool.close()

    async def write(self, events: list[ParsedEvent], arrivals: Sequence[float]) -> int:
        """Store `events` (committed when this returns); how many were new.

        `arrivals` (epoch s) are the lines' arrival times, for the latency metric.
        Raises StoreError when the database refused them or cannot be reached.
        """
        if not events:
            return 0
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((events, arrivals, future))
        self._wake.set()
        return await future

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    await self._write_group(group)
                except Exception as exc:  # a bug must fail these batches, not the writer
                    log.exception("event sink write failed", batches=len(group))
                    for _, _, future in group:
                        _settle(future, exc)

    async def _write_group(self, group: list[_Waiting]) -> None:
        try:
            counts = [await self._store([e for events, _, _ in group for e in events])]
        except StoreError as exc:
            if len(group) == 1:
                _settle(group[0][2], exc)
                return
            for one in group:  # alone, so that only the batch at fault fails
                try:
                    _settle(one[2], await self._store(one[0]))
                except StoreError as error:
                    _settle(one[2], error)
            return
        now = time.time()
        total = sum(len(events) for events, _, _ in group)
        observe = LATENCY.observe
        for events, arrivals, future in group:
            for arrival in arrivals:
                observe(now - arrival if now > arrival else 0.0)
            _settle(future, counts[0] * len(events) // total)

    async def _store(self, events: list[ParsedEvent]) -> int:
        assert self._pool is not None  # noqa: S101 - set by __aenter__
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                new = await write_events(conn, events, self._devices)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"writing {len(events)} events failed: {exc!r}") from exc
        STORED.inc(new)
        DUPLICATES.inc(len(events) - new)
        return new


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():  # its waiter was cancelled
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

"""The `maintenance` component: creates the next partitions ahead and drops expired ones."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Self

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.db.partitions import drop_partitions_older_than, ensure_partitions
from opmas.settings import DatabaseSettings

log = structlog.get_logger(__name__)


class PartitionMaintainer:
    """Every `maintenance_interval_s`: partitions ahead of now, and retention by partition."""

    name = "maintenance"

    def __init__(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        self._engine = engine
        self._settings = settings

    async def __aenter__(self) -> Self:
        await self.maintain(datetime.now(UTC))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def maintain(self, now: datetime) -> tuple[list[str], list[str]]:
        """Create missing partitions, drop expired ones; return (created, dropped) names."""
        async with self._engine.begin() as conn:
            created = await ensure_partitions(
                conn,
                now=now,
                days_ahead=self._settings.partitions_ahead_days,
                months_ahead=self._settings.partitions_ahead_months,
            )
            dropped: list[str] = []
            if self._settings.events_retention_days > 0:
                before = now - timedelta(days=self._settings.events_retention_days)
                dropped = await drop_partitions_older_than(conn, "events", before)
        if created or dropped:
            log.info("partitions maintained", created=created, dropped=dropped)
        return created, dropped

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self._settings.maintenance_interval_s)
            except TimeoutError:
                await self.maintain(datetime.now(UTC))

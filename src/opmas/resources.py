"""The connections a process shares between its components: database engine and bus.

`open_resources` starts embedded servers where no URL is configured, connects, creates the
streams and (for `opmas up`) migrates the schema; leaving it closes everything it opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus, NatsAuth, connect_bus
from opmas.bus.streams import ensure_streams
from opmas.db import migrate
from opmas.db.engine import create_engine
from opmas.embedded import Endpoints, embedded_services
from opmas.settings import Settings


@dataclass(frozen=True)
class Resources:
    """Everything a component may need, opened once per process."""

    settings: Settings
    endpoints: Endpoints
    engine: AsyncEngine
    bus: Bus


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings, *, migrate_schema: bool = False, name: str = "opmas"
) -> AsyncIterator[Resources]:
    """Start or reach PostgreSQL and NATS, then yield the shared connections."""
    async with embedded_services(settings, start=True) as endpoints:
        if migrate_schema:
            await migrate.upgrade(endpoints.database_url)
        engine = create_engine(endpoints.database_url, settings.database)
        try:
            auth = NatsAuth.from_settings(settings)
            async with connect_bus(endpoints.nats_url, settings.bus, name=name, auth=auth) as bus:
                await ensure_streams(bus)
                yield Resources(settings, endpoints, engine, bus)
        finally:
            await engine.dispose()

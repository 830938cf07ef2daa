"""The enrolled devices' hostname -> registered IP, cached for the hot path of ingest and parser.

Trust grading asks one question per line: is this the IP the operator registered for the
device the line names? A query per line is out of the question, so each component keeps this
small directory, reloaded from `devices` every few seconds in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

MAX_DEVICES = 100_000
_QUERY = text(
    "SELECT hostname, host(ip_address) AS ip FROM devices"
    " WHERE enrolment = 'enrolled' AND ip_address IS NOT NULL ORDER BY id LIMIT :limit"
)


class EnrolledDevices:
    """hostname -> registered IP of every enrolled device, refreshed every `refresh_s`.

    `addresses` is one dict updated in place, so a reader may keep a reference to it. A failed
    reload keeps the previous map (logged) and is tried again at the next interval.
    Entering loads it once and starts the reload task; leaving stops the task.
    """

    def __init__(
        self, engine: AsyncEngine, refresh_s: float = 5.0, *, max_devices: int = MAX_DEVICES
    ) -> None:
        self._engine = engine
        self.refresh_s = refresh_s
        self.max_devices = max_devices
        self.addresses: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.refresh()
        self._task = asyncio.create_task(self._reload_forever(), name="enrolled-devices")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> bool:
        """Reload the map from `devices`; False (and the old map kept) when that failed."""
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(_QUERY, {"limit": self.max_devices})).all()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("enrolled devices not reloaded", error=str(exc))
            return False
        fresh = {str(hostname): str(ip) for hostname, ip in rows}
        if fresh != self.addresses:
            self.addresses.clear()
            self.addresses.update(fresh)
        return True

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

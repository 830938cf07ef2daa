"""Devices registered on first sight and their `last_seen_at`, with one statement per batch.

A device is known by its hostname (or, without one, by its source IP). `devices.ip_address` is
unique and required (seed 002), so a line whose source IP already belongs to another device,
or that has no IP at all, is stored without a device rather than guessing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog
from prometheus_client import Counter

log = structlog.get_logger(__name__)

UNREGISTERED = Counter(
    "opmas_store_unregistered_events_total",
    "Events stored without a device (no IP, or the IP belongs to another device).",
)
SEEN_UPDATE_INTERVAL_S = 10.0


@dataclass(frozen=True)
class Sighting:
    hostname: str
    ip: str | None
    seen_at: datetime


class DeviceRegistry:
    """Maps hostnames to device ids; a bounded in-process cache in front of `devices`."""

    def __init__(self, max_cached: int = 100_000) -> None:
        self._ids: dict[str, int | None] = {}
        self._last_update: dict[int, float] = {}
        self._max_cached = max_cached

    async def resolve(
        self, conn: asyncpg.Connection, sightings: dict[str, Sighting]
    ) -> dict[str, int | None]:
        """Device id per hostname; registers the unknown ones and refreshes last_seen_at."""
        unknown = [s for name, s in sightings.items() if name not in self._ids]
        if unknown:
            await self._register(conn, unknown)
        await self._touch(conn, sightings)
        return {name: self._ids.get(name) for name in sightings}

    async def _register(self, conn: asyncpg.Connection, sightings: list[Sighting]) -> None:
        with_ip = [s for s in sightings if s.ip is not None]
        if with_ip:
            await conn.executemany(
                "INSERT INTO devices (hostname, ip_address, last_seen_at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                [(s.hostname, s.ip, s.seen_at) for s in with_ip],
            )
        rows = await conn.fetch(
            "SELECT hostname, id FROM devices WHERE hostname = ANY($1::text[])",
            [s.hostname for s in sightings],
        )
        found = {row["hostname"]: row["id"] for row in rows}
        if len(self._ids) + len(sightings) > self._max_cached:
            self._ids.clear()
        for sighting in sightings:
            self._ids[sighting.hostname] = found.get(sighting.hostname)
            if sighting.hostname not in found:
                log.info("device not registered", hostname=sighting.hostname, ip=sighting.ip)

    async def _touch(self, conn: asyncpg.Connection, sightings: dict[str, Sighting]) -> None:
        now = time.monotonic()
        due: list[tuple[int, datetime]] = []
        for name, sighting in sightings.items():
            device_id = self._ids.get(name)
            if device_id is None:
                continue
            if now - self._last_update.get(device_id, 0.0) >= SEEN_UPDATE_INTERVAL_S:
                due.append((device_id, sighting.seen_at))
                self._last_update[device_id] = now
        if due:
            await conn.execute(
                "UPDATE devices d SET last_seen_at = v.seen FROM"
                " unnest($1::int[], $2::timestamptz[]) AS v(id, seen)"
                " WHERE d.id = v.id AND (d.last_seen_at IS NULL OR d.last_seen_at < v.seen)",
                [d for d, _ in due],
                [s for _, s in due],
            )

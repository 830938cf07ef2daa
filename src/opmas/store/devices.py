"""Devices registered on first sight and their `last_seen_at`, with one statement per batch.

A device is known by its hostname (or, without one, by its source IP). A device first seen in
logs is `discovered`: it records the address it was first and last seen from, and is never
acted on over SSH until an operator enrols it. An `enrolled` device (added or confirmed by the
operator) is only linked to a line that comes from its own address (or whose origin is
verified); a line claiming its hostname from elsewhere is stored without a device and changes
nothing on it. `devices.ip_address` is unique and required (seed 002), so a line whose source
IP already belongs to another device, or that has no IP at all, is stored without a device
rather than guessing. At most `max_discovered` discovered devices are kept: the least recently
seen are deleted when a new one would pass the bound.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog
from prometheus_client import Counter

from opmas import trust

log = structlog.get_logger(__name__)

UNREGISTERED = Counter(
    "opmas_store_unregistered_events_total",
    "Events stored without a device (no IP, or the IP belongs to another device).",
)
IMPERSONATED = Counter(
    "opmas_store_enrolled_hostname_elsewhere_total",
    "Lines naming an enrolled device from another address, not linked to it.",
)
PRUNED = Counter(
    "opmas_store_discovered_devices_pruned_total",
    "Discovered devices deleted because there were more than devices.max_discovered.",
)
SEEN_UPDATE_INTERVAL_S = 10.0
CACHE_TTL_S = 30.0  # an enrolment, merge or removal by the operator is seen this late at most

PRUNE_SQL = """
DELETE FROM devices WHERE id IN (
    SELECT d.id FROM devices d
     WHERE d.enrolment = 'discovered'
       AND NOT EXISTS (SELECT 1 FROM api_tokens t WHERE t.device_id = d.id)
       AND NOT EXISTS (SELECT 1 FROM ssh_keys k WHERE k.device_id = d.id)
     ORDER BY d.last_seen_at ASC NULLS FIRST, d.id
     LIMIT $1)
RETURNING hostname
"""


@dataclass(frozen=True)
class Sighting:
    hostname: str
    ip: str | None
    seen_at: datetime
    trust: str | None = None  # opmas.trust level of the line


@dataclass(frozen=True)
class Known:
    """What the registry caches of a device: enough to decide whether a line may touch it."""

    device_id: int
    enrolled: bool
    address: str

    def accepts(self, sighting: Sighting) -> bool:
        """An enrolled device takes lines from its own address or of verified origin only."""
        if not self.enrolled or sighting.trust == trust.VERIFIED:
            return True
        return _same_ip(sighting.ip, self.address)


def _same_ip(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return ipaddress.ip_address(a.split("/")[0]) == ipaddress.ip_address(b.split("/")[0])
    except ValueError:
        return False


class DeviceRegistry:
    """Maps hostnames to device ids; a bounded in-process cache in front of `devices`."""

    def __init__(self, max_cached: int = 100_000, max_discovered: int = 10_000) -> None:
        self._known: dict[str, tuple[Known | None, float]] = {}  # and when it was read
        self._last_update: dict[int, float] = {}
        self._max_cached = max_cached
        self._max_discovered = max_discovered
        self._warned: dict[str, float] = {}  # hostname: when its impersonation was last logged

    async def resolve(
        self, conn: asyncpg.Connection, sightings: dict[str, Sighting]
    ) -> dict[str, int | None]:
        """Device id per hostname (None: not linked); registers the unknown ones as
        discovered and refreshes last_seen_at and seen_from."""
        now = time.monotonic()
        stale = [
            s
            for name, s in sightings.items()
            if name not in self._known or now - self._known[name][1] > CACHE_TTL_S
        ]
        if stale:
            await self._register(conn, stale, now)
        ids: dict[str, int | None] = {}
        for name, sighting in sightings.items():
            known = self._known.get(name, (None, now))[0]
            if known is None:
                ids[name] = None
            elif known.accepts(sighting):
                ids[name] = known.device_id
            else:
                IMPERSONATED.inc()
                if now - self._warned.get(name, -CACHE_TTL_S) >= CACHE_TTL_S:
                    if len(self._warned) >= self._max_cached:
                        self._warned.clear()
                    self._warned[name] = now
                    log.warning(
                        "enrolled hostname from another address",
                        hostname=name,
                        ip=sighting.ip,
                        enrolled_ip=known.address,
                    )
                ids[name] = None
        await self._touch(conn, sightings, ids)
        return ids

    async def _register(
        self, conn: asyncpg.Connection, sightings: list[Sighting], now: float
    ) -> None:
        with_ip = [s for s in sightings if s.ip is not None]
        if with_ip:
            status = await conn.execute(
                "INSERT INTO devices (hostname, ip_address, last_seen_at, enrolment,"
                " first_seen_from, seen_from)"
                " SELECT h, ip, seen, 'discovered', ip, ip"
                " FROM unnest($1::text[], $2::inet[], $3::timestamptz[]) AS v(h, ip, seen)"
                " ON CONFLICT DO NOTHING",
                [s.hostname for s in with_ip],
                [s.ip for s in with_ip],
                [s.seen_at for s in with_ip],
            )
            if int(status.rsplit(" ", 1)[-1]):
                await self._prune(conn)
        rows = await conn.fetch(
            "SELECT hostname, id, enrolment, host(ip_address) AS address FROM devices"
            " WHERE hostname = ANY($1::text[])",
            [s.hostname for s in sightings],
        )
        found = {
            row["hostname"]: Known(row["id"], row["enrolment"] == "enrolled", row["address"])
            for row in rows
        }
        if len(self._known) + len(sightings) > self._max_cached:
            self._known.clear()
        for sighting in sightings:
            self._known[sighting.hostname] = (found.get(sighting.hostname), now)
            if sighting.hostname not in found:
                log.info("device not registered", hostname=sighting.hostname, ip=sighting.ip)

    async def _prune(self, conn: asyncpg.Connection) -> None:
        """Delete the least recently seen discovered devices beyond `max_discovered`."""
        count = await conn.fetchval("SELECT count(*) FROM devices WHERE enrolment = 'discovered'")
        excess = int(count) - self._max_discovered
        if excess <= 0:
            return
        gone = [row["hostname"] for row in await conn.fetch(PRUNE_SQL, excess)]
        for hostname in gone:
            self._known.pop(hostname, None)
        PRUNED.inc(len(gone))
        log.warning(
            "discovered devices pruned",
            count=len(gone),
            max_discovered=self._max_discovered,
            oldest=gone[:5],
        )

    async def _touch(
        self,
        conn: asyncpg.Connection,
        sightings: dict[str, Sighting],
        ids: dict[str, int | None],
    ) -> None:
        now = time.monotonic()
        due: list[tuple[int, datetime, str | None, bool]] = []
        for name, sighting in sightings.items():
            device_id = ids.get(name)
            if device_id is None:
                continue
            if now - self._last_update.get(device_id, 0.0) >= SEEN_UPDATE_INTERVAL_S:
                verified = sighting.trust == trust.VERIFIED
                due.append((device_id, sighting.seen_at, sighting.ip, verified))
                self._last_update[device_id] = now
        if due:
            # the WHERE re-checks what the cache decided: an operator may have enrolled it since
            await conn.execute(
                "UPDATE devices d SET last_seen_at = v.seen,"
                " seen_from = coalesce(v.ip, d.seen_from) FROM"
                " unnest($1::int[], $2::timestamptz[], $3::inet[], $4::boolean[])"
                " AS v(id, seen, ip, verified)"
                " WHERE d.id = v.id AND (d.last_seen_at IS NULL OR d.last_seen_at < v.seen)"
                " AND (d.enrolment = 'discovered' OR d.ip_address = v.ip OR v.verified)",
                [row[0] for row in due],
                [row[1] for row in due],
                [row[2] for row in due],
                [row[3] for row in due],
            )

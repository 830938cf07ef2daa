"""Devices seen in logs are `discovered`, bounded in number; a line never moves an enrolled one."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.store import devices as registry
from opmas.store.service import EventStore
from tests.integration.store.test_store import event


async def _rows(engine: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql))).all()]


async def test_a_router_seen_first_in_logs_is_discovered_with_the_address_it_came_from(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    async with EventStore(database_url, bus) as store:
        await store.store([event(hostname="router-A", source_ip="192.0.2.50")])
    rows = await _rows(
        engine,
        "SELECT enrolment, host(ip_address), host(first_seen_from), host(seen_from)"
        " FROM devices WHERE hostname = 'router-A'",
    )
    assert rows == [("discovered", "192.0.2.50", "192.0.2.50", "192.0.2.50")]


async def test_a_line_naming_an_enrolled_router_from_another_address_changes_nothing(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO devices (hostname, ip_address, enrolment, last_seen_at)"
                " VALUES ('router-A', '192.168.1.1', 'enrolled', '2026-01-01T00:00:00Z')"
            )
        )
    before = await _rows(engine, "SELECT * FROM devices ORDER BY id")
    spoofed = event("kernel: hostapd[1]: segfault", hostname="router-A", source_ip="203.0.113.66")
    async with EventStore(database_url, bus) as store:
        await store.store([spoofed])
    assert await _rows(engine, "SELECT * FROM devices ORDER BY id") == before
    assert await _rows(engine, "SELECT device_id FROM events") == [(None,)]

    real = event(hostname="router-A", source_ip="192.168.1.1")
    async with EventStore(database_url, bus) as store:
        await store.store([real])
    [(enrolment, ip, seen_from, linked)] = await _rows(
        engine,
        "SELECT d.enrolment, host(d.ip_address), host(d.seen_from), count(e.*)"
        " FROM devices d LEFT JOIN events e ON e.device_id = d.id GROUP BY d.id",
    )
    assert (enrolment, ip, seen_from, linked) == ("enrolled", "192.168.1.1", "192.168.1.1", 1)


async def test_discovered_devices_are_bounded_the_least_recently_seen_pruned(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    before = registry.PRUNED._value.get()
    now = time.time()
    async with EventStore(database_url, bus, max_discovered=5) as store:
        for n in range(8):  # one batch each: r0 is the oldest, r7 the newest
            await store.store(
                [event(hostname=f"r{n}", source_ip=f"198.51.100.{n + 1}", arrival=now + n)]
            )
    names = [r[0] for r in await _rows(engine, "SELECT hostname FROM devices ORDER BY hostname")]
    assert names == ["r3", "r4", "r5", "r6", "r7"]
    assert registry.PRUNED._value.get() - before == 3

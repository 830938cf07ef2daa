"""The event store against real PostgreSQL and NATS: batches in, rows out, idempotent."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.bus.publish import publish
from opmas.messages import ParsedBatch, ParsedEvent, encode, iso_utc, new_id
from opmas.store.service import EventStore


def event(
    message: str = "wlan0: STA aa:bb:cc:dd:ee:ff IEEE 802.11: authenticated",
    *,
    hostname: str | None = "OpenWRT-Router1",
    source_ip: str | None = "192.168.1.1",
    arrival: float | None = None,
) -> ParsedEvent:
    return ParsedEvent(
        event_id=new_id(),
        arrival_ts_utc=iso_utc(arrival or time.time()),
        source_ip=source_ip,
        original_ts="Apr 18 15:02:17",
        hostname=hostname,
        process_name="hostapd",
        pid="1234",
        log_level="INFO",
        facility="daemon",
        event_type="LOG",
        message=message,
        parser_name="hostapd_parser_v1",
        log_source_type="wifi",
        structured_fields={"interface": "wlan0", "event": "sta_authenticated"},
        event_ts="2026-04-18T15:02:17+00:00",
        transport="udp",
    )


async def _count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def test_a_batch_is_stored_once_even_when_redelivered(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    events = [event(f"line {i}") for i in range(300)]
    async with EventStore(database_url, bus) as store:
        assert await store.store(events[:100]) == 100
        assert await store.store(events) == 200  # half of it was already stored
        assert await store.store(events) == 0  # at-least-once: the same batch again
    assert await _count(engine, "SELECT count(*) FROM events") == 300
    assert await _count(engine, "SELECT count(DISTINCT device_id) FROM events") == 1


async def test_devices_are_registered_on_first_sight_and_last_seen_moves(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    first = time.time() - 60
    async with EventStore(database_url, bus) as store:
        await store.store([event(hostname="r1", source_ip="10.0.0.1", arrival=first)])
        await store.store([event(hostname="r2", source_ip="10.0.0.2")])
        # no hostname: registered under its IP; no IP and unknown: stored without a device
        await store.store([event(hostname=None, source_ip="10.0.0.3")])
        await store.store([event(hostname="lonely", source_ip=None)])
    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT hostname, host(ip_address) FROM devices ORDER BY 1"))
        ).all()
        unlinked = await conn.scalar(text("SELECT count(*) FROM events WHERE device_id IS NULL"))
    assert [tuple(r) for r in rows] == [
        ("10.0.0.3", "10.0.0.3"),
        ("r1", "10.0.0.1"),
        ("r2", "10.0.0.2"),
    ]
    assert unlinked == 1


async def test_hostile_values_never_fail_the_batch(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    bad = event("nul\x00inside", hostname="h" * 1000)
    bad.structured_fields = {"raw": "a\x00b"}
    async with EventStore(database_url, bus) as store:
        assert await store.store([bad, event("fine")]) == 2
    async with engine.connect() as conn:
        message = await conn.scalar(text("SELECT message FROM events WHERE message LIKE 'nul%'"))
    assert message == "nul\ufffdinside"


async def test_the_component_consumes_the_stream_and_acks_after_commit(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    batch = ParsedBatch(new_id(), [event(f"e{i}") for i in range(50)])
    await publish(bus, bus.subjects.logs_parsed("wifi"), encode(batch), msg_id=batch.batch_id)
    stop = asyncio.Event()
    async with EventStore(database_url, bus) as store:
        task = asyncio.create_task(store.run(stop))
        for _ in range(100):
            if await _count(engine, "SELECT count(*) FROM events") == 50:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
    info = await bus.js.consumer_info(bus.subjects.logs_parsed_stream.name, "store")
    assert await _count(engine, "SELECT count(*) FROM events") == 50
    assert info.num_ack_pending == 0
    assert info.num_pending == 0

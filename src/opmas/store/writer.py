"""Write parsed events: COPY into a staging table, then one INSERT ... ON CONFLICT DO NOTHING.

COPY cannot skip duplicates, and at-least-once delivery redelivers, so events land in a
temporary table first; the insert from it is idempotent on (event_id, arrival_ts_utc).
"""

from __future__ import annotations

import functools
import ipaddress
from datetime import datetime

import asyncpg
import orjson

from opmas import trust
from opmas.messages import ParsedEvent
from opmas.store.devices import UNREGISTERED, DeviceRegistry, Sighting

COLUMNS = (
    "event_id",
    "arrival_ts_utc",
    "source_ip",
    "original_ts",
    "event_ts",
    "hostname",
    "process_name",
    "pid",
    "log_level",
    "facility",
    "event_type",
    "message",
    "parser_name",
    "log_source_type",
    "structured_fields",
    "device_id",
    "flags",
    "transport",
    "trust",
)
# The fast path COPYs straight into `events`. A redelivered batch that was already
# committed fails there on the primary key; it then goes through a staging table and an
# insert that skips what exists. Keep the column lists in step with COLUMNS.
STAGE_SQL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS events_stage ON COMMIT DELETE ROWS AS "
    "SELECT event_id, arrival_ts_utc, source_ip, original_ts, event_ts, hostname, "
    "process_name, pid, log_level, facility, event_type, message, parser_name, "
    "log_source_type, structured_fields, device_id, flags, transport, trust FROM events WITH "
    "NO DATA "
)
INSERT_SQL = (
    "INSERT INTO events (event_id, arrival_ts_utc, source_ip, original_ts, event_ts, "
    "hostname, process_name, pid, log_level, facility, event_type, message, "
    "parser_name, log_source_type, structured_fields, device_id, flags, transport, trust) "
    "SELECT event_id, arrival_ts_utc, source_ip, original_ts, event_ts, hostname, "
    "process_name, pid, log_level, facility, event_type, message, parser_name, "
    "log_source_type, structured_fields, device_id, flags, transport, trust FROM "
    "events_stage ON CONFLICT DO NOTHING "
)


def _cut(value: str | None, size: int) -> str | None:
    """Fit a header value into its column: a garbage header must not fail the batch."""
    return value[:size] if value is not None and len(value) > size else value


def _when(iso: str | None) -> datetime | None:
    return _instant(iso) if iso else None


@functools.lru_cache(maxsize=4096)
def _instant(iso: str) -> datetime:
    """An ISO 8601 time; cached: the lines of a batch share a few arrival and event times."""
    return datetime.fromisoformat(iso)


@functools.lru_cache(maxsize=4096)
def _packed_ip(address: str | None) -> bytes | str | None:
    """The address as asyncpg's inet codec takes it cheapest: packed bytes (no parsing of the
    text per row). Text it cannot parse is passed on as it is, for PostgreSQL to judge."""
    if address is None:
        return None
    try:
        return ipaddress.ip_address(address).packed
    except ValueError:
        return address


def device_key(event: ParsedEvent) -> str | None:
    """The name a device is registered under: its hostname, else its source IP."""
    return _cut(event.hostname, 255) or event.source_ip


def sightings(events: list[ParsedEvent]) -> dict[str, Sighting]:
    """The latest sighting of each device in a batch."""
    seen: dict[str, Sighting] = {}
    for event in events:
        key = device_key(event)
        if key is None:
            continue
        arrival = _instant(event.arrival_ts_utc)
        current = seen.get(key)
        if current is None or current.seen_at < arrival:
            seen[key] = Sighting(key, event.source_ip, arrival, event.trust)
    return seen


def _no_nul(text: str) -> str:
    """PostgreSQL text and jsonb cannot hold NUL; the parser replaces it, this makes sure."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _fields_json(fields: dict[str, object]) -> str:
    text = orjson.dumps(fields).decode()
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def to_record(event: ParsedEvent, device_id: int | None) -> tuple[object, ...]:
    """The `events` row of a parsed event, in COLUMNS order."""
    return (
        event.event_id,
        _instant(event.arrival_ts_utc),
        _packed_ip(event.source_ip),
        event.original_ts,
        _when(event.event_ts),
        _cut(event.hostname, 255),
        _cut(event.process_name, 255),
        event.pid,
        _cut(event.log_level, 20),
        _cut(event.facility, 20),
        event.event_type,
        _no_nul(event.message),
        _cut(event.parser_name, 100),
        event.log_source_type,
        _fields_json(event.structured_fields),
        device_id,
        event.flags,
        event.transport,
        event.trust and trust.normalise(event.trust),  # None: sent by a parser before trust
    )


async def write_events(
    conn: asyncpg.Connection, events: list[ParsedEvent], devices: DeviceRegistry
) -> int:
    """Store `events` in the caller's transaction; return how many were new."""
    if not events:
        return 0
    ids = await devices.resolve(conn, sightings(events))
    records = []
    for event in events:
        key = device_key(event)
        device_id = ids.get(key) if key is not None else None
        if device_id is None:
            UNREGISTERED.inc()
        records.append(to_record(event, device_id))
    try:
        async with conn.transaction():  # a savepoint: a duplicate undoes only this COPY
            await conn.copy_records_to_table("events", records=records, columns=COLUMNS)
        return len(records)
    except asyncpg.UniqueViolationError:
        pass
    await conn.execute(STAGE_SQL)
    await conn.copy_records_to_table("events_stage", records=records, columns=COLUMNS)
    status = await conn.execute(INSERT_SQL)
    return int(status.rsplit(" ", 1)[-1])

"""Events and findings land in the right partition; partitions are created ahead and dropped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opmas.db.partitions import drop_partitions_older_than, ensure_partitions

pytestmark = pytest.mark.integration

SPRING = datetime(2031, 3, 30, 15, 0, tzinfo=UTC)


async def _insert_event(conn: AsyncConnection, arrival: datetime) -> str:
    """Insert one event; return the partition it landed in."""
    return str(
        (
            await conn.execute(
                text(
                    "INSERT INTO events (event_id, arrival_ts_utc, hostname, message)"
                    " VALUES (:id, :arrival, 'router1', 'hello')"
                    " RETURNING tableoid::regclass::text"
                ),
                {"id": uuid.uuid4(), "arrival": arrival},
            )
        ).scalar_one()
    )


async def _insert_finding(conn: AsyncConnection, created_at: datetime) -> str:
    """Insert one finding with an intended action; return the finding's partition."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO findings (finding_uuid, created_at, finding_type, severity)"
                " VALUES (gen_random_uuid(), :at, 'T', 'info')"
                " RETURNING id, created_at, tableoid::regclass::text AS part"
            ),
            {"at": created_at},
        )
    ).one()
    await conn.execute(
        text(
            "INSERT INTO intended_actions (finding_id, finding_created_at, action_type,"
            " action_config) VALUES (:id, :at, 'ssh', '{}')"
        ),
        {"id": row.id, "at": row.created_at},
    )
    return str(row.part)


async def _partitions(conn: AsyncConnection, parent: str) -> set[str]:
    result = await conn.execute(
        text(
            "SELECT inhrelid::regclass::text FROM pg_inherits"
            " WHERE inhparent = CAST(:p AS regclass)"
        ),
        {"p": parent},
    )
    return set(result.scalars())


async def _count(conn: AsyncConnection, sql: str) -> int:
    return int((await conn.execute(text(sql))).scalar_one())


async def test_events_land_in_their_daily_partition(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        today = await _insert_event(conn, now)
        yesterday = await _insert_event(conn, now - timedelta(days=1))

    assert today == f"events_p{now:%Y%m%d}"
    assert yesterday == f"events_p{now - timedelta(days=1):%Y%m%d}"


async def test_findings_land_in_their_monthly_partition(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        assert await _insert_finding(conn, now) == f"findings_p{now:%Y%m}"


async def test_ensure_partitions_creates_days_and_months_ahead_once(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        created = await ensure_partitions(conn, now=SPRING, days_ahead=3, months_ahead=1)
    async with engine.begin() as conn:
        again = await ensure_partitions(conn, now=SPRING, days_ahead=3, months_ahead=1)
        events = await _partitions(conn, "events")
        findings = await _partitions(conn, "findings")

    days = ["20310329", "20310330", "20310331", "20310401", "20310402"]
    assert created == [f"events_p{day}" for day in days] + ["findings_p203103", "findings_p203104"]
    assert again == []
    assert set(created) <= events | findings
    async with engine.begin() as conn:
        assert await _insert_event(conn, SPRING + timedelta(days=3)) == "events_p20310402"
        assert await _insert_finding(conn, SPRING) == "findings_p203103"


async def test_event_far_in_the_future_lands_in_the_default_partition(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        part = await _insert_event(conn, datetime(2099, 12, 31, 23, 59, tzinfo=UTC))

    assert part == "events_default"


async def test_new_day_partition_takes_over_rows_from_the_default(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await _insert_event(conn, SPRING) == "events_default"

    async with engine.begin() as conn:
        await ensure_partitions(conn, now=SPRING, days_ahead=0, months_ahead=0)
        where = await conn.execute(text("SELECT tableoid::regclass::text FROM events"))

    assert where.scalars().all() == ["events_p20310330"]


async def test_month_with_rows_in_the_default_is_skipped_not_failed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await _insert_finding(conn, SPRING) == "findings_default"

    async with engine.begin() as conn:
        created = await ensure_partitions(conn, now=SPRING, days_ahead=0, months_ahead=1)

    assert "findings_p203103" not in created
    assert "findings_p203104" in created
    async with engine.begin() as conn:
        assert await _count(conn, "SELECT count(*) FROM intended_actions") == 1


async def test_drop_partitions_older_than_drops_only_whole_old_days(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await ensure_partitions(conn, now=SPRING, days_ahead=1, months_ahead=0)
        await _insert_event(conn, SPRING - timedelta(days=1))
        await _insert_event(conn, SPRING)
        await _insert_event(conn, datetime(2030, 1, 1, tzinfo=UTC))

    async with engine.begin() as conn:
        dropped = await drop_partitions_older_than(conn, "events", SPRING)
        remaining = await _partitions(conn, "events")
        events = await _count(conn, "SELECT count(*) FROM events")

    assert "events_p20310329" in dropped
    assert "events_p20310330" not in dropped
    assert {"events_p20310330", "events_p20310331", "events_default"} <= remaining
    assert not set(dropped) & remaining
    assert events == 1


async def test_dropping_a_findings_month_deletes_its_actions_and_frees_uuids(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await ensure_partitions(conn, now=SPRING, days_ahead=0, months_ahead=1)
        await _insert_finding(conn, SPRING)
        await _insert_finding(conn, SPRING + timedelta(days=5))

    async with engine.begin() as conn:
        dropped = await drop_partitions_older_than(
            conn, "findings", datetime(2031, 4, 1, tzinfo=UTC)
        )
        findings = await _count(conn, "SELECT count(*) FROM findings")
        actions = await _count(conn, "SELECT count(*) FROM intended_actions")
        uuids = await _count(conn, "SELECT count(*) FROM finding_ids")

    assert "findings_p203103" in dropped
    assert (findings, actions, uuids) == (1, 1, 1)


async def test_drop_partitions_refuses_a_table_that_is_not_partitioned(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        with pytest.raises(ValueError, match="not partitioned"):
            await drop_partitions_older_than(conn, "devices", SPRING)
        with pytest.raises(ValueError, match="timezone-aware"):
            await ensure_partitions(
                conn, now=SPRING.replace(tzinfo=None), days_ahead=1, months_ahead=1
            )

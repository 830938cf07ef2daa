"""Partition upkeep of `events` (daily) and `findings` (monthly); the caller owns the transaction.

Both run SQL functions the migration installs: one implementation for the migration and upkeep.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

PARTITIONED_TABLES = ("events", "findings")


async def ensure_partitions(
    conn: AsyncConnection, *, now: datetime, days_ahead: int, months_ahead: int
) -> list[str]:
    """Create `events_pYYYYMMDD` for yesterday .. today+days_ahead and `findings_pYYYYMM` for
    this month .. +months_ahead (UTC days and months); return the names it created.

    Rows already in a table's DEFAULT partition move into a new `events` partition; for
    `findings` (referenced by intended_actions) such a partition is skipped and the rows stay.
    """
    _require_aware(now)
    result = await conn.execute(
        text("SELECT opmas_ensure_partitions(:days, :months, :as_of)"),
        {"days": days_ahead, "months": months_ahead, "as_of": now},
    )
    return list(result.scalars())


async def drop_partitions_older_than(
    conn: AsyncConnection, table: str, before: datetime
) -> list[str]:
    """Drop the partitions of `table` that end at or before `before`; return their names.

    Rows of `findings` are deleted first so that their intended actions go with them; rows of
    the DEFAULT partition older than `before` are deleted too.
    """
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"{table!r} is not partitioned; expected one of {PARTITIONED_TABLES}")
    _require_aware(before)
    result = await conn.execute(
        text("SELECT opmas_drop_partitions(:table, :before)"),
        {"table": table, "before": before},
    )
    return list(result.scalars())


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None:
        raise ValueError("a timezone-aware datetime is required")

"""The migration goes up and down cleanly and matches the ORM models."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.db import migrate
from opmas.db.engine import create_engine
from opmas.errors import StoreError
from opmas.models import Base

pytestmark = pytest.mark.integration

OPMAS_OBJECTS = """
SELECT 'table ' || relname FROM pg_class
 WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'S')
   AND relname <> 'alembic_version'
UNION ALL
SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
"""


async def _objects(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(text(OPMAS_OBJECTS))).scalars())
    finally:
        await engine.dispose()


async def test_round_trip_empty_head_base_head(empty_database_url: str) -> None:
    url = empty_database_url
    assert await migrate.current_revision(url) is None

    await migrate.upgrade(url)
    assert await migrate.current_revision(url) == migrate.head_revision()
    at_head = await _objects(url)
    assert {"table events", "table findings", "function opmas_ensure_partitions"} <= at_head

    await migrate.downgrade(url, "base")
    assert await migrate.current_revision(url) is None
    assert await _objects(url) == set()

    await migrate.upgrade(url)
    assert await _objects(url) == at_head


async def test_migrate_to_goes_down_and_up(empty_database_url: str) -> None:
    url = empty_database_url
    await migrate.migrate_to(url, "head")
    assert await migrate.current_revision(url) == migrate.head_revision()

    await migrate.migrate_to(url, "base")
    assert await migrate.current_revision(url) is None

    await migrate.migrate_to(url, migrate.head_revision())
    await migrate.migrate_to(url, migrate.head_revision())
    assert await migrate.current_revision(url) == migrate.head_revision()


async def test_migrate_to_an_unknown_revision_is_refused(empty_database_url: str) -> None:
    with pytest.raises(StoreError, match="unknown revision"):
        await migrate.migrate_to(empty_database_url, "not-a-revision")


def _is_schema_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Skip the partitions (created at run time), their foreign keys and Alembic's table."""
    if type_ == "table" and name is not None:
        return name != "alembic_version" and not _is_partition(name)
    if type_ == "foreign_key_constraint" and reflected:
        return not _is_partition(obj.referred_table.name)
    return True


def _is_partition(table: str) -> bool:
    return table.startswith(("events_", "findings_"))


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"include_object": _is_schema_object, "compare_type": True}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_models_match_the_migrated_schema(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)

    assert diff == []

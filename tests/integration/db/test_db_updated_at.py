"""`updated_at` follows every UPDATE, through the ORM and through plain SQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.models import Agent, Device

pytestmark = pytest.mark.integration


async def test_updated_at_moves_on_orm_update_and_is_read_back(session: AsyncSession) -> None:
    device = Device(hostname="router1", ip_address="192.0.2.1")
    session.add(device)
    await session.commit()
    created, first = device.created_at, device.updated_at

    device.status = "maintenance"
    await session.commit()

    assert device.updated_at > first
    assert device.created_at == created


async def test_updated_at_moves_within_the_inserting_transaction(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO agents (name, type) VALUES ('wifi', 'WIFI')"))
        await conn.execute(text("UPDATE agents SET status = 'ACTIVE'"))
        row = (await conn.execute(text("SELECT created_at, updated_at FROM agents"))).one()

    assert row.updated_at > row.created_at


async def test_updated_at_moves_on_partitioned_findings(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO findings (finding_uuid, finding_type, severity)"
                " VALUES (gen_random_uuid(), 'T', 'info')"
            )
        )
    async with engine.begin() as conn:
        before = (await conn.execute(text("SELECT updated_at FROM findings"))).scalar_one()
        await conn.execute(text("UPDATE findings SET status = 'acknowledged'"))
        after = (await conn.execute(text("SELECT updated_at FROM findings"))).scalar_one()

    assert after > before


async def test_agent_defaults_to_inactive_without_heartbeat(session: AsyncSession) -> None:
    agent = Agent(name="wan", type="WAN")
    session.add(agent)
    await session.commit()

    assert (agent.status, agent.last_heartbeat, agent.is_active) == ("INACTIVE", None, True)


async def test_every_table_with_updated_at_has_the_trigger(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        tables = set(
            (
                await conn.execute(
                    text(
                        "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                        " WHERE a.attname = 'updated_at' AND c.relkind IN ('r', 'p')"
                        " AND NOT c.relispartition AND c.relnamespace = 'public'::regnamespace"
                    )
                )
            ).scalars()
        )
        triggered = set(
            (
                await conn.execute(
                    text(
                        "SELECT tgrelid::regclass::text FROM pg_trigger"
                        " WHERE tgfoid = 'opmas_set_updated_at'::regproc AND tgparentid = 0"
                    )
                )
            ).scalars()
        )

    assert len(tables) == 19  # 0005 added action_allowlist
    assert triggered == tables

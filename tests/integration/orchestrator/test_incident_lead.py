"""Novelty findings in incidents, and replayed findings, against real PostgreSQL and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.messages import Finding as FindingMessage
from opmas.messages import iso_utc
from opmas.models import Device, Incident, IntendedAction
from opmas.orchestrator.service import Orchestrator
from opmas.settings import Settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def novelty(at: datetime = NOW) -> FindingMessage:
    return FindingMessage(
        finding_id=str(uuid.uuid4()),
        agent_name="HealthAgent",
        finding_ts_utc=iso_utc(at.timestamp()),
        device_hostname="r1",
        device_ip="192.0.2.1",
        severity="info",
        finding_type="NeverSeenLogTemplate",
        rule_name="new-log-template",
        description="dnsmasq-dhcp on r1 logged 1 kind(s) of message never seen on this fleet",
        details={"key": "r1|dnsmasq-dhcp", "novelty": "template", "templates": ["x <*>"]},
        evidence_event_ids=[str(uuid.uuid4())],
        domain="health",
    )


def crash(at: datetime, **details: Any) -> FindingMessage:
    return FindingMessage(
        finding_id=str(uuid.uuid4()),
        agent_name="WiFiAgent",
        finding_ts_utc=iso_utc(at.timestamp()),
        device_hostname="r1",
        device_ip="192.0.2.1",
        severity="error",
        finding_type="HostapdCrash",
        rule_name="wifi-hostapd-crash",
        description="hostapd crashed or was killed on r1 (process_segfault)",
        details={"hostname": "r1", "event": "process_segfault", **details},
        evidence_event_ids=[str(uuid.uuid4())],
        domain="wifi",
    )


@pytest.fixture
async def orchestrator(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> AsyncIterator[Orchestrator]:
    async with engine.begin() as conn:
        await conn.execute(insert(Device).values(hostname="r1", ip_address="192.0.2.1"))
    async with Orchestrator(engine, bus, settings) as orch:
        yield orch


async def _incidents(engine: AsyncEngine) -> list[Incident]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(Incident))).all())


async def test_a_novelty_finding_never_names_an_incident_nor_raises_it(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    await orchestrator.process(novelty())
    [alone] = await _incidents(engine)
    assert (alone.severity, alone.title) == (
        "info",
        "Novelty only on r1: dnsmasq-dhcp on r1 logged 1 kind(s) of message never seen on "
        "this fleet",
    )
    await orchestrator.process(crash(NOW + timedelta(minutes=5)))
    await orchestrator.process(novelty(NOW + timedelta(minutes=6)))
    [incident] = await _incidents(engine)
    assert incident.id == alone.id
    assert incident.finding_count == 3
    assert incident.severity == "error"
    assert incident.title == "hostapd crashed or was killed on r1 (process_segfault)"
    assert incident.details["finding_types"] == {"NeverSeenLogTemplate": 2, "HostapdCrash": 1}


async def test_a_replayed_finding_is_stored_but_starts_no_playbook(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    assert await orchestrator.process(crash(NOW, replay=True)) == []
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(IntendedAction))).all() == []
    [incident] = await _incidents(engine)
    assert incident.finding_count == 1
    assert await orchestrator.process(crash(NOW + timedelta(minutes=1))) != []  # a live one

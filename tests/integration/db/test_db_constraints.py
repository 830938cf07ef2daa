"""CHECK and UNIQUE constraints refuse bad rows; finding_uuid is unique across partitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.models import Agent, AgentRule, Base, Device, Finding, FindingId, Incident

pytestmark = pytest.mark.integration


def _finding(**overrides: object) -> Finding:
    values: dict[str, object] = {
        "finding_uuid": uuid.uuid4(),
        "finding_type": "HighAuthFailureRate",
        "severity": "warning",
    }
    values.update(overrides)
    return Finding(**values)


async def _refused(session: AsyncSession, *rows: Base, constraint: str) -> None:
    session.add_all(rows)
    with pytest.raises(IntegrityError, match=constraint):
        await session.flush()
    await session.rollback()


async def test_severity_high_is_refused(session: AsyncSession) -> None:
    await _refused(session, _finding(severity="high"), constraint="ck_findings_severity")


async def test_incident_severity_high_is_refused(session: AsyncSession) -> None:
    incident = Incident(title="t", incident_type="wifi", severity="high")
    await _refused(session, incident, constraint="ck_incidents_severity")


async def test_unknown_finding_status_is_refused(session: AsyncSession) -> None:
    await _refused(session, _finding(status="closed"), constraint="ck_findings_status")


async def test_unknown_agent_type_and_status_are_refused(session: AsyncSession) -> None:
    await _refused(session, Agent(name="a", type="DNS"), constraint="ck_agents_type")
    await _refused(
        session, Agent(name="a", type="WIFI", status="SLEEPING"), constraint="ck_agents_status"
    )


async def test_duplicate_device_hostname_is_refused(session: AsyncSession) -> None:
    session.add(Device(hostname="router1", ip_address="192.0.2.1"))
    await session.commit()

    duplicate = Device(hostname="router1", ip_address="192.0.2.2")
    await _refused(session, duplicate, constraint="uq_devices_hostname")


async def test_duplicate_device_ip_is_refused(session: AsyncSession) -> None:
    session.add(Device(hostname="router1", ip_address="192.0.2.1"))
    await session.commit()

    duplicate = Device(hostname="router2", ip_address="192.0.2.1")
    await _refused(session, duplicate, constraint="uq_devices_ip_address")


async def test_device_ip_reads_back_as_a_string(session: AsyncSession) -> None:
    session.add(Device(hostname="router1", ip_address="2001:db8::1"))
    await session.commit()

    assert await session.scalar(select(Device.ip_address)) == "2001:db8::1"


async def test_rule_name_is_unique_within_one_agent_only(session: AsyncSession) -> None:
    wifi = Agent(name="wifi", type="WIFI")
    wan = Agent(name="wan", type="WAN")
    session.add_all([wifi, wan])
    await session.flush()
    session.add_all(
        [
            AgentRule(agent_id=wifi.id, name="auth-failures", rule_type="THRESHOLD", conditions=[]),
            AgentRule(agent_id=wan.id, name="auth-failures", rule_type="THRESHOLD", conditions=[]),
        ]
    )
    await session.commit()

    again = AgentRule(agent_id=wifi.id, name="auth-failures", rule_type="PATTERN", conditions=[])
    await _refused(session, again, constraint="uq_agent_rules_agent_id_name")


async def test_unknown_rule_type_is_refused(session: AsyncSession) -> None:
    agent = Agent(name="wifi", type="WIFI")
    session.add(agent)
    await session.flush()

    rule = AgentRule(agent_id=agent.id, name="r", rule_type="FUZZY", conditions=[])
    await _refused(session, rule, constraint="ck_agent_rules_rule_type")


async def test_finding_uuid_seen_in_another_month_is_refused(session: AsyncSession) -> None:
    finding_uuid = uuid.uuid4()
    session.add(_finding(finding_uuid=finding_uuid, created_at=datetime(2026, 1, 5, tzinfo=UTC)))
    await session.commit()

    again = _finding(finding_uuid=finding_uuid, created_at=datetime(2026, 3, 5, tzinfo=UTC))
    await _refused(session, again, constraint="uq_findings_finding_uuid")


async def test_redelivered_finding_with_its_own_time_is_an_upsert(engine: AsyncEngine) -> None:
    upsert = text(
        "INSERT INTO findings (finding_uuid, created_at, finding_type, severity)"
        " VALUES (:uuid, :at, 'HighAuthFailureRate', 'warning')"
        " ON CONFLICT (finding_uuid, created_at) DO UPDATE SET count = findings.count + 1"
    )
    params = {"uuid": uuid.uuid4(), "at": datetime(2026, 11, 21, 12, tzinfo=UTC)}
    for _ in range(3):
        async with engine.begin() as conn:
            await conn.execute(upsert, params)

    async with engine.connect() as conn:
        counts = (await conn.execute(text("SELECT count FROM findings"))).scalars().all()
    assert counts == [3]


async def test_deleting_a_finding_frees_its_uuid(session: AsyncSession) -> None:
    finding = _finding()
    session.add(finding)
    await session.commit()
    assert await session.get(FindingId, finding.finding_uuid) is not None

    await session.delete(finding)
    await session.commit()

    assert await session.get(FindingId, finding.finding_uuid) is None

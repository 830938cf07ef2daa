"""Deleting a parent row deletes or detaches its children as the schema says."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import FromClause, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.models import (
    Agent,
    AgentRule,
    Base,
    Device,
    Finding,
    Incident,
    IncidentComment,
    IntendedAction,
    NotificationChannel,
    NotificationRule,
    Playbook,
    PlaybookStep,
    SshKey,
    notification_rule_channels,
)

pytestmark = pytest.mark.integration


async def _count(session: AsyncSession, table: type[Base] | FromClause) -> int:
    return await session.scalar(select(func.count()).select_from(table)) or 0


def _finding(**values: object) -> Finding:
    return Finding(finding_uuid=uuid.uuid4(), finding_type="T", severity="error", **values)


async def test_deleting_an_agent_deletes_its_rules(session: AsyncSession) -> None:
    agent = Agent(name="wifi", type="WIFI")
    session.add(agent)
    await session.flush()
    session.add_all(
        AgentRule(agent_id=agent.id, name=f"r{i}", rule_type="PATTERN", conditions=[])
        for i in range(2)
    )
    await session.commit()

    await session.delete(agent)
    await session.commit()

    assert await _count(session, AgentRule) == 0


async def test_deleting_a_rule_keeps_its_findings(session: AsyncSession) -> None:
    agent = Agent(name="wifi", type="WIFI")
    session.add(agent)
    await session.flush()
    rule = AgentRule(agent_id=agent.id, name="r", rule_type="PATTERN", conditions=[])
    session.add(rule)
    await session.flush()
    finding = _finding(agent_id=agent.id, rule_id=rule.id, rule_name="r")
    session.add(finding)
    await session.commit()

    await session.delete(agent)
    await session.commit()
    await session.refresh(finding)

    assert (finding.agent_id, finding.rule_id, finding.rule_name) == (None, None, "r")


async def test_deleting_a_playbook_deletes_its_steps(session: AsyncSession) -> None:
    playbook = Playbook(name="reboot", trigger_type="finding")
    session.add(playbook)
    await session.flush()
    session.add_all(
        PlaybookStep(playbook_id=playbook.id, step_number=n, action_type="ssh", action_config={})
        for n in (1, 2)
    )
    await session.commit()

    await session.delete(playbook)
    await session.commit()

    assert await _count(session, PlaybookStep) == 0


async def test_deleting_a_device_deletes_its_keys_and_detaches_its_findings(
    session: AsyncSession,
) -> None:
    device = Device(hostname="router1", ip_address="192.0.2.1")
    session.add(device)
    await session.flush()
    key = SshKey(device_id=device.id, key_type="ed25519", encrypted_key="x", key_fingerprint="f")
    finding = _finding(device_id=device.id, device_hostname="router1")
    session.add_all([key, finding])
    await session.commit()

    await session.delete(device)
    await session.commit()
    await session.refresh(finding)

    assert await _count(session, SshKey) == 0
    assert finding.device_id is None
    assert finding.device_hostname == "router1"


async def test_deleting_a_finding_deletes_its_intended_actions(session: AsyncSession) -> None:
    finding = _finding()
    session.add(finding)
    await session.flush()
    action = IntendedAction(
        finding_id=finding.id,
        finding_created_at=finding.created_at,
        action_type="ssh",
        action_config={"command": "wifi reload"},
    )
    session.add(action)
    await session.commit()

    await session.delete(finding)
    await session.commit()

    assert await _count(session, IntendedAction) == 0


async def test_deleting_a_playbook_keeps_its_intended_actions(session: AsyncSession) -> None:
    playbook = Playbook(name="reboot", trigger_type="finding")
    session.add(playbook)
    await session.flush()
    session.add(IntendedAction(playbook_id=playbook.id, action_type="ssh", action_config={}))
    await session.commit()

    await session.delete(playbook)
    await session.commit()

    assert await session.scalar(select(IntendedAction.playbook_id)) is None


async def test_deleting_an_incident_deletes_comments_and_detaches_findings(
    session: AsyncSession,
) -> None:
    incident = Incident(title="Wi-Fi down", incident_type="wifi", severity="critical")
    session.add(incident)
    await session.flush()
    finding = _finding(incident_id=incident.id)
    session.add_all([finding, IncidentComment(incident_id=incident.id, author="ann", body="on it")])
    await session.commit()

    await session.delete(incident)
    await session.commit()
    await session.refresh(finding)

    assert await _count(session, IncidentComment) == 0
    assert finding.incident_id is None


async def test_deleting_a_channel_unlinks_it_from_rules(session: AsyncSession) -> None:
    channel = NotificationChannel(name="ops", channel_type="slack")
    rule = NotificationRule(name="critical", min_severity="error", channels=[channel])
    session.add(rule)
    await session.commit()
    assert await _count(session, notification_rule_channels) == 1

    await session.delete(channel)
    await session.commit()

    assert await _count(session, notification_rule_channels) == 0
    assert await _count(session, NotificationRule) == 1

"""Findings written to `findings` (idempotent on their id; a growing burst updates its row) and
attached to the incident of their correlation group.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.messages import Finding as FindingMessage
from opmas.models import Agent, AgentRule, Device, Finding, Incident
from opmas.orchestrator.correlate import (
    Group,
    classify,
    max_severity,
    merge_details,
    title_of,
)
from opmas.settings import OrchestratorSettings

OPEN_STATUSES = ("new", "acknowledged")


@dataclass(frozen=True)
class StoredFinding:
    """A finding's row after the write; `inserted` False for an update or a redelivery."""

    id: int
    created_at: datetime
    inserted: bool
    incident_id: int | None
    device_id: int | None
    device_config: dict[str, Any] | None


@dataclass(frozen=True)
class Attached:
    """The incident a finding joined; `new_type` set when the incident became a new type."""

    incident_id: int
    incident_type: str
    details: dict[str, Any]
    new_type: str | None


def event_time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


async def upsert_finding(
    session: AsyncSession, message: FindingMessage, memo: dict[object, Any] | None = None
) -> StoredFinding:
    """Insert the finding, or update its row when this version's count is not smaller.
    `memo` keeps device, agent and rule lookups for one transaction."""
    memo = {} if memo is None else memo
    created_at = event_time(message.finding_ts_utc)
    finding_uuid = uuid.UUID(message.finding_id)
    row = await session.scalar(
        select(Finding)
        .where(Finding.finding_uuid == finding_uuid, Finding.created_at == created_at)
        .with_for_update()
    )
    device_key = ("device", message.device_hostname, message.device_ip)
    if device_key not in memo:
        memo[device_key] = await _device(session, message)
    device: Device | None = memo[device_key]
    device_id = device.id if device is not None else None
    device_config = device.config if device is not None else None
    last_seen = event_time(message.last_seen_utc) if message.last_seen_utc else created_at
    if row is not None:
        if message.count >= row.count:
            row.count = message.count
            row.description = message.description
            row.details = message.details
            row.severity = max_severity(row.severity, message.severity)
            row.evidence_event_ids = [uuid.UUID(e) for e in message.evidence_event_ids]
            row.last_seen_at = last_seen
            await session.flush()
        return StoredFinding(row.id, created_at, False, row.incident_id, device_id, device_config)
    rule_key = ("rule", message.agent_name, message.rule_name)
    if rule_key not in memo:
        memo[rule_key] = await _agent_and_rule(session, message.agent_name, message.rule_name)
    agent_id, rule_id = memo[rule_key]
    row = Finding(
        created_at=created_at,
        finding_uuid=finding_uuid,
        domain=message.domain,
        agent_id=agent_id,
        agent_name=message.agent_name,
        rule_id=rule_id,
        rule_name=message.rule_name,
        device_id=device_id,
        device_hostname=message.device_hostname,
        device_ip=message.device_ip,
        finding_type=message.finding_type,
        severity=message.severity,
        description=message.description,
        details=message.details,
        evidence_event_ids=[uuid.UUID(e) for e in message.evidence_event_ids],
        finding_ts=created_at,
        count=message.count,
        last_seen_at=last_seen,
    )
    session.add(row)
    await session.flush()
    return StoredFinding(row.id, created_at, True, None, device_id, device_config)


async def _device(session: AsyncSession, message: FindingMessage) -> Device | None:
    """The router the finding is about: by hostname; by IP only when it names no hostname
    (several routers may log through one address, and acting on the wrong one is worse
    than not acting)."""
    if message.device_hostname:
        where = Device.hostname == message.device_hostname
    elif message.device_ip:
        where = Device.ip_address == message.device_ip
    else:
        return None
    found: Device | None = await session.scalar(select(Device).where(where))
    return found


async def _agent_and_rule(
    session: AsyncSession, agent_name: str, rule_name: str
) -> tuple[int | None, int | None]:
    agent_id = await session.scalar(select(Agent.id).where(Agent.name == agent_name))
    if agent_id is None:
        return None, None
    rule_id = await session.scalar(
        select(AgentRule.id).where(AgentRule.agent_id == agent_id, AgentRule.name == rule_name)
    )
    return agent_id, rule_id


async def attach(
    session: AsyncSession,
    stored: StoredFinding,
    message: FindingMessage,
    group: Group,
    settings: OrchestratorSettings,
) -> Attached:
    """Put the finding into its group's open incident, or open one; flush only.

    An advisory lock on the group key serialises orchestrator replicas, so two findings of one
    attacker arriving at once still open a single incident.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": group.key}
    )
    seen_at = event_time(message.last_seen_utc or message.finding_ts_utc)
    opened_at = event_time(message.finding_ts_utc)
    incident = await session.scalar(
        select(Incident)
        .where(
            Incident.correlation_key == group.key,
            Incident.status.in_(OPEN_STATUSES),
            Incident.last_seen_at >= opened_at - timedelta(seconds=group.window_s),
        )
        .order_by(Incident.last_seen_at.desc())
        .limit(1)
        .with_for_update()
    )
    old_type = incident.incident_type if incident is not None else None
    details = merge_details(incident.details if incident else {}, message, group)
    kind = classify(details, settings.uplink_min_wifi_findings)
    if incident is None:
        incident = Incident(
            correlation_key=group.key,
            device_id=stored.device_id,
            first_seen_at=opened_at,
            severity=message.severity,
            status="new",
            title="",
            incident_type=kind,
        )
        session.add(incident)
    incident.details = details
    incident.incident_type = kind
    incident.finding_count = (incident.finding_count or 0) + 1
    incident.last_seen_at = max(seen_at, incident.last_seen_at or seen_at)
    severity = max_severity(incident.severity, message.severity)
    incident.severity = max_severity(severity, "error") if kind == "fleet_attack" else severity
    incident.title = title_of(kind, details, incident.title or message.description)
    incident.description = incident.description or message.description
    await session.flush()
    await session.execute(
        update(Finding)
        .where(Finding.id == stored.id, Finding.created_at == stored.created_at)
        .values(incident_id=incident.id)
    )
    return Attached(incident.id, kind, details, kind if kind != old_type else None)


async def touch_incident(session: AsyncSession, incident_id: int, message: FindingMessage) -> None:
    """A known finding grew: its incident was seen again."""
    seen_at = event_time(message.last_seen_utc or message.finding_ts_utc)
    await session.execute(
        update(Incident)
        .where(Incident.id == incident_id, Incident.last_seen_at < seen_at)
        .values(last_seen_at=seen_at)
    )

"""Findings written to `findings` (idempotent on their id; a growing burst updates its row) and
attached to the incident of their correlation group: a whole fetched batch at a time, with a
handful of statements per batch rather than per finding.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.messages import Finding as FindingMessage
from opmas.models import Agent, AgentRule, Device, Finding, Incident
from opmas.orchestrator.correlate import (
    Group,
    classify,
    lent_severity,
    max_severity,
    merge_details,
    takes_lead,
    title_of,
)
from opmas.settings import OrchestratorSettings

OPEN_STATUSES = ("new", "acknowledged")
# Core tables: executemany UPDATEs with their own WHERE (an ORM bulk UPDATE goes by primary key)
FINDINGS = cast(Table, Finding.__table__)
INCIDENTS = cast(Table, Incident.__table__)


@dataclass(frozen=True)
class StoredFinding:
    """A finding's row after the write; `inserted` False for an update or a redelivery."""

    message: FindingMessage  # the version written: the largest count of the batch
    id: int
    created_at: datetime
    inserted: bool
    incident_id: int | None
    device_id: int | None
    device_config: dict[str, Any] | None
    device_enrolment: str | None = None  # enrolled, discovered; None without a device


@dataclass(frozen=True)
class Attached:
    """The incident a finding joined; `new_type` set when the incident became a new type."""

    incident_id: int
    incident_type: str
    details: dict[str, Any]
    new_type: str | None


def event_time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def latest_versions(messages: Sequence[FindingMessage]) -> list[FindingMessage]:
    """One version per finding id (the largest count), in order of first appearance."""
    latest: dict[str, FindingMessage] = {}
    for message in messages:
        known = latest.get(message.finding_id)
        if known is None or message.count >= known.count:
            latest[message.finding_id] = message
    return list(latest.values())


async def upsert_findings(
    session: AsyncSession, messages: Sequence[FindingMessage]
) -> list[StoredFinding]:
    """Insert new findings, update known ones whose count did not shrink; one entry per id."""
    versions = latest_versions(messages)
    keys = [(uuid.UUID(m.finding_id), event_time(m.finding_ts_utc)) for m in versions]
    existing = {
        (row.finding_uuid, row.created_at): row
        for row in await session.scalars(
            select(Finding)
            .where(tuple_(Finding.finding_uuid, Finding.created_at).in_(keys))
            .with_for_update()
        )
    }
    devices = await _devices(session, versions)
    ids = await _agent_and_rule_ids(session, versions)
    new_rows: list[dict[str, Any]] = []
    for message, key in zip(versions, keys, strict=True):
        if key in existing:
            _update(existing[key], message)
        else:
            device = _device_of(devices, message)
            agent_id, rule_id = ids.get((message.agent_name, message.rule_name), (None, None))
            new_rows.append(_new_row(message, key, device, agent_id, rule_id))
    inserted: dict[tuple[uuid.UUID, datetime], int] = {}
    if new_rows:
        returned = await session.execute(
            insert(Finding)
            .values(new_rows)
            .returning(Finding.id, Finding.finding_uuid, Finding.created_at)
        )
        inserted = {(fuuid, created): fid for fid, fuuid, created in returned}
    await session.flush()
    stored: list[StoredFinding] = []
    for message, key in zip(versions, keys, strict=True):
        device = _device_of(devices, message)
        device_id = device.id if device else None
        config = device.config if device else None
        enrolment = device.enrolment if device else None
        row = existing.get(key)
        if row is not None:
            stored.append(
                StoredFinding(
                    message, row.id, key[1], False, row.incident_id, device_id, config, enrolment
                )
            )
        else:
            stored.append(
                StoredFinding(
                    message, inserted[key], key[1], True, None, device_id, config, enrolment
                )
            )
    return stored


def _update(row: Finding, message: FindingMessage) -> None:
    if message.count < row.count:
        return  # an older version arriving late
    row.count = message.count
    row.description = message.description
    row.details = message.details
    row.severity = max_severity(row.severity, message.severity)
    row.evidence_event_ids = [uuid.UUID(e) for e in message.evidence_event_ids]
    row.last_seen_at = event_time(message.last_seen_utc or message.finding_ts_utc)


def _new_row(
    message: FindingMessage,
    key: tuple[uuid.UUID, datetime],
    device: Device | None,
    agent_id: int | None,
    rule_id: int | None,
) -> dict[str, Any]:
    finding_uuid, created_at = key
    return {
        "created_at": created_at,
        "finding_uuid": finding_uuid,
        "domain": message.domain,
        "agent_id": agent_id,
        "agent_name": message.agent_name,
        "rule_id": rule_id,
        "rule_name": message.rule_name,
        "device_id": device.id if device else None,
        "device_hostname": message.device_hostname,
        "device_ip": message.device_ip,
        "finding_type": message.finding_type,
        "severity": message.severity,
        "description": message.description,
        "details": message.details,
        "evidence_event_ids": [uuid.UUID(e) for e in message.evidence_event_ids],
        "finding_ts": created_at,
        "count": message.count,
        "last_seen_at": event_time(message.last_seen_utc or message.finding_ts_utc),
    }


async def _devices(
    session: AsyncSession, messages: Sequence[FindingMessage]
) -> dict[tuple[str, str], Device]:
    """The routers the findings are about, by ("host", name) and ("ip", address)."""
    names = {m.device_hostname for m in messages if m.device_hostname}
    addresses = {m.device_ip for m in messages if not m.device_hostname and m.device_ip}
    found: dict[tuple[str, str], Device] = {}
    if names:
        for device in await session.scalars(select(Device).where(Device.hostname.in_(names))):
            found["host", device.hostname] = device
    if addresses:
        query = select(Device).where(Device.ip_address.in_(addresses))
        for device in await session.scalars(query):
            found["ip", str(device.ip_address)] = device
    return found


def _device_of(devices: dict[tuple[str, str], Device], message: FindingMessage) -> Device | None:
    """The router by hostname; by IP only when the finding names no hostname (several
    routers may log through one address, and acting on the wrong one is worse than not)."""
    if message.device_hostname:
        return devices.get(("host", message.device_hostname))
    return devices.get(("ip", message.device_ip or ""))


async def _agent_and_rule_ids(
    session: AsyncSession, messages: Sequence[FindingMessage]
) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    agents = {m.agent_name for m in messages}
    query = (
        select(Agent.name, Agent.id, AgentRule.name, AgentRule.id)
        .outerjoin(AgentRule, AgentRule.agent_id == Agent.id)
        .where(Agent.name.in_(agents))
    )
    ids: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    agent_ids: dict[str, int] = {}
    for agent_name, agent_id, rule_name, rule_id in await session.execute(query):
        agent_ids[agent_name] = agent_id
        if rule_name is not None:
            ids[agent_name, rule_name] = (agent_id, rule_id)
    for m in messages:
        ids.setdefault((m.agent_name, m.rule_name), (agent_ids.get(m.agent_name), None))
    return ids


async def attach_all(
    session: AsyncSession,
    items: Sequence[tuple[StoredFinding, Group]],
    settings: OrchestratorSettings,
) -> list[Attached]:
    """Put each new finding into its group's open incident, or open one; flush only.

    Advisory locks on the group keys (taken in key order) serialise orchestrator replicas, so
    two findings of one attacker handled at once still open a single incident.
    """
    if not items:
        return []
    keys = sorted({group.key for _, group in items})
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))"
            " FROM (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k) AS ordered"
        ),
        {"keys": keys},
    )
    current: dict[str, Incident] = {}
    query = (
        select(Incident)
        .where(Incident.correlation_key.in_(keys), Incident.status.in_(OPEN_STATUSES))
        .order_by(Incident.correlation_key, Incident.last_seen_at.desc())
        .with_for_update()
    )
    for incident in await session.scalars(query):
        current.setdefault(incident.correlation_key, incident)
    joined = [_join(session, current, stored, group, settings) for stored, group in items]
    await session.flush()  # new incidents get their ids
    await session.execute(
        update(FINDINGS)
        .where(FINDINGS.c.id == bindparam("fid"), FINDINGS.c.created_at == bindparam("fat"))
        .values(incident_id=bindparam("iid")),
        [
            {"fid": stored.id, "fat": stored.created_at, "iid": incident.id}
            for (stored, _), (incident, _, _, _) in zip(items, joined, strict=True)
        ],
    )
    return [
        Attached(incident.id, kind, details, new_type)
        for incident, kind, details, new_type in joined
    ]


def _join(
    session: AsyncSession,
    current: dict[str, Incident],
    stored: StoredFinding,
    group: Group,
    settings: OrchestratorSettings,
) -> tuple[Incident, str, dict[str, Any], str | None]:
    """Add one finding to its group's current incident (a new one if none is open within
    the window); returns the incident, its type, details and its new type if it changed."""
    message = stored.message
    opened_at = event_time(message.finding_ts_utc)
    seen_at = event_time(message.last_seen_utc or message.finding_ts_utc)
    incident = current.get(group.key)
    if incident is None or incident.last_seen_at < opened_at - timedelta(seconds=group.window_s):
        incident = Incident(
            correlation_key=group.key,
            device_id=stored.device_id,
            first_seen_at=opened_at,
            last_seen_at=seen_at,
            severity=lent_severity(message),
            status="new",
            title="",
            incident_type="",
            details={},
            finding_count=0,
        )
        session.add(incident)
        current[group.key] = incident
    old_type = incident.incident_type or None
    leads = takes_lead(incident.details, incident.severity, message)
    details = merge_details(incident.details, message, group)
    kind = classify(details, settings.uplink_min_wifi_findings)
    incident.details = details
    incident.incident_type = kind
    incident.finding_count += 1
    incident.last_seen_at = max(seen_at, incident.last_seen_at)
    severity = max_severity(incident.severity, lent_severity(message))
    incident.severity = max_severity(severity, "error") if kind == "fleet_attack" else severity
    lead = message.description if leads else incident.description or message.description
    incident.title = title_of(kind, details, lead)
    incident.description = lead
    return incident, kind, details, kind if kind != old_type else None


async def touch_incidents(session: AsyncSession, stored: Sequence[StoredFinding]) -> None:
    """Known findings grew: their incidents were seen again."""
    params = [
        {
            "iid": s.incident_id,
            "seen": event_time(s.message.last_seen_utc or s.message.finding_ts_utc),
        }
        for s in stored
        if s.incident_id is not None
    ]
    if params:
        await session.execute(
            update(INCIDENTS)
            .where(INCIDENTS.c.id == bindparam("iid"), INCIDENTS.c.last_seen_at < bindparam("seen"))
            .values(last_seen_at=bindparam("seen")),
            params,
        )
    await _add_routers(session, stored)


async def _add_routers(session: AsyncSession, stored: Sequence[StoredFinding]) -> None:
    """A fleet-wide finding that grew may name more routers: its incident names them too."""
    grown: dict[int, list[object]] = {}
    for each in stored:
        routers = each.message.details.get("devices")
        if each.incident_id is None or each.message.device_hostname:
            continue
        if isinstance(routers, list):  # a fleet-wide finding's routers
            grown[each.incident_id] = routers
    if not grown:
        return
    query = select(Incident).where(Incident.id.in_(grown)).with_for_update()
    for incident in await session.scalars(query):
        known = incident.details.get("devices", [])
        devices = sorted({*known, *(str(d) for d in grown[incident.id])})
        if devices != known:
            incident.details = {**incident.details, "devices": devices}
            lead = incident.description or ""
            incident.title = title_of(incident.incident_type, incident.details, lead)

"""ORM classes round-trip their PostgreSQL types: uuid arrays, inet, jsonb, text arrays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.models import Event, Finding, NotificationRule

pytestmark = pytest.mark.integration


async def test_event_round_trips_with_defaults(session: AsyncSession) -> None:
    event_id = uuid.uuid4()
    session.add(
        Event(
            event_id=event_id,
            source_ip="192.168.1.1",
            hostname="OpenWRT-Router1",
            process_name="hostapd",
            message="wlan0: STA aa:bb:cc:dd:ee:ff IEEE 802.11: authenticated",
            parser_name="hostapd_parser_v1",
            log_source_type="wifi",
            structured_fields={"interface": "wlan0", "event": "auth_success"},
            flags=["truncated"],
        )
    )
    await session.commit()
    session.expunge_all()

    event = await session.scalar(select(Event).where(Event.event_id == event_id))

    assert event is not None
    assert event.source_ip == "192.168.1.1"
    assert event.structured_fields["event"] == "auth_success"
    assert event.flags == ["truncated"]
    assert event.event_type == "LOG"
    assert event.arrival_ts_utc.tzinfo is not None


async def test_finding_round_trips_its_evidence(session: AsyncSession) -> None:
    evidence = [uuid.uuid4(), uuid.uuid4()]
    finding = Finding(
        finding_uuid=uuid.uuid4(),
        agent_name="WiFiAgent",
        finding_ts=datetime(2026, 11, 21, 22, 5, tzinfo=UTC),
        device_hostname="OpenWRT-Router1",
        device_ip="192.168.1.1",
        severity="warning",
        finding_type="HighAuthFailureRate",
        rule_name="wifi-auth-failure-rate",
        details={"failure_count": 25},
        evidence_event_ids=evidence,
        domain="wifi",
    )
    session.add(finding)
    await session.commit()

    assert (finding.status, finding.count) == ("new", 1)
    session.expunge_all()
    loaded = await session.scalar(select(Finding).where(Finding.id == finding.id))
    assert loaded is not None
    assert loaded.evidence_event_ids == evidence
    assert loaded.device_ip == "192.168.1.1"


async def test_notification_rule_needs_min_severity_at_most_max(session: AsyncSession) -> None:
    session.add(NotificationRule(name="ok", min_severity="error", max_severity="critical"))
    await session.commit()

    session.add(NotificationRule(name="bad", min_severity="critical", max_severity="info"))
    with pytest.raises(IntegrityError, match="ck_notification_rules_severity_range"):
        await session.commit()

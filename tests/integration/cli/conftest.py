"""Rows for the operator commands to work on, written with SQLAlchemy in a loop of their own
(the CLI under test runs `asyncio.run` itself, so these tests are synchronous)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.connect import connect_bus
from opmas.bus.streams import delete_streams, ensure_streams
from opmas.db.engine import create_engine, session_factory
from opmas.models import (
    Device,
    Finding,
    Incident,
    IntendedAction,
    Playbook,
    PlaybookStep,
)
from opmas.settings import BusSettings

T = TypeVar("T")


def run_db(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` in one committed session on the test's database."""

    async def _run() -> T:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(_run())


@dataclass(frozen=True)
class Seeded:
    """Ids of the rows `seeded` wrote."""

    device_id: int
    incident_id: int
    brute_force: int  # critical, new, in the incident
    brute_force_uuid: str
    old_wifi: int  # info, resolved, two days old
    pending_action: int
    playbook: str


def _findings(device: Device, incident: Incident, now: datetime) -> tuple[Finding, Finding]:
    brute = Finding(
        created_at=now,
        finding_uuid=uuid.uuid4(),
        domain="security",
        agent_name="SecurityAgent",
        rule_name="ssh-brute-force-fast",
        device_id=device.id,
        device_hostname="gw",
        device_ip="192.0.2.1",
        finding_type="SshBruteForce",
        severity="critical",
        description="12 failures from 203.0.113.7",
        details={"ip": "203.0.113.7", "count": 12},
        evidence_event_ids=[uuid.uuid4()],
        incident_id=incident.id,
    )
    wifi = Finding(
        created_at=now - timedelta(days=2),
        finding_uuid=uuid.uuid4(),
        domain="wifi",
        agent_name="WifiAgent",
        rule_name="auth-storm",
        device_hostname="ap1",
        device_ip="192.0.2.9",
        finding_type="HighAuthFailureRate",
        severity="info",
        status="resolved",
    )
    return brute, wifi


async def _playbook_and_action(
    session: AsyncSession, finding: Finding, now: datetime
) -> tuple[Playbook, IntendedAction]:
    playbook = Playbook(name="block-ssh", trigger_type="SshBruteForce", execution_mode="manual")
    session.add(playbook)
    await session.flush()
    session.add(
        PlaybookStep(
            playbook_id=playbook.id,
            step_number=1,
            action_type="ssh_command",
            action_config={"template": "nft_block_ip", "args": {"ip": "{ip}"}},
        )
    )
    action = IntendedAction(
        finding_id=finding.id,
        finding_created_at=finding.created_at,
        playbook_id=playbook.id,
        device_id=finding.device_id,
        incident_id=finding.incident_id,
        action_type="ssh_command",
        action_config={"template": "nft_block_ip", "args": {"ip": "203.0.113.7"}},
        description="Block 203.0.113.7 on gw",
        history=[{"state": "pending", "at": now.isoformat(), "by": "orchestrator"}],
    )
    session.add(action)
    await session.flush()
    return playbook, action


async def _seed(session: AsyncSession) -> Seeded:
    now = datetime.now(UTC)
    device = Device(hostname="gw", ip_address="192.0.2.1")
    incident = Incident(
        title="SSH attack on gw", incident_type="SshBruteForce", severity="critical"
    )
    session.add_all([device, incident])
    await session.flush()
    incident.device_id = device.id
    brute, wifi = _findings(device, incident, now)
    session.add_all([brute, wifi])
    await session.flush()
    playbook, action = await _playbook_and_action(session, brute, now)
    return Seeded(
        device_id=device.id,
        incident_id=incident.id,
        brute_force=brute.id,
        brute_force_uuid=str(brute.finding_uuid),
        old_wifi=wifi.id,
        pending_action=action.id,
        playbook=playbook.name,
    )


@pytest.fixture
def seeded(cli_database: str) -> Seeded:
    """A device, an incident with a critical finding and a pending action, an old resolved
    Wi-Fi finding and a playbook, in the database the CLI points at."""
    return run_db(cli_database, _seed)


@pytest.fixture
def cli_bus(
    cli_database: str, nats_url: str, bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BusSettings]:
    """The CLI pointed at this test's bus namespace, with its streams created."""
    monkeypatch.setenv("OPMAS_NATS_URL", nats_url)
    monkeypatch.setenv("OPMAS_BUS__NAMESPACE", bus_settings.namespace)

    async def _streams(create: bool) -> None:
        async with connect_bus(nats_url, bus_settings) as bus:
            await (ensure_streams(bus) if create else delete_streams(bus))

    asyncio.run(_streams(True))
    yield bus_settings
    asyncio.run(_streams(False))

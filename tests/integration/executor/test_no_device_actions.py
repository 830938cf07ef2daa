"""A brute force logged under a hostname OPMAS has no device row for: its SSH block is created
`rejected` by `enrolment`, saying why, and the executor never picks it up; the same finding
from an enrolled router gives a pending block on that router."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.executor.service import Executor
from opmas.messages import Finding as FindingMessage
from opmas.messages import iso_utc
from opmas.models import Device, IntendedAction
from opmas.orchestrator.service import Orchestrator
from opmas.settings import Settings
from tests.peers.dropbear import Dropbear

pytestmark = pytest.mark.integration


def brute_force(hostname: str) -> FindingMessage:
    return FindingMessage(
        finding_id=str(uuid.uuid4()),
        agent_name="SecurityAgent",
        finding_ts_utc=iso_utc(datetime.now(UTC).timestamp()),
        device_hostname=hostname,
        device_ip="192.0.2.99",
        severity="error",
        finding_type="SshBruteForce",
        rule_name="ssh-brute-force-fast",
        description="SSH brute force from 203.0.113.7 (5 failed logins in 60 s)",
        details={"hostname": hostname, "ip": "203.0.113.7", "count": 5, "window_s": 60},
        evidence_event_ids=[str(uuid.uuid4())],
        domain="security",
        count=5,
    )


@pytest.fixture
async def orchestrator(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> AsyncIterator[Orchestrator]:
    async with Orchestrator(engine, bus, settings) as orch:
        yield orch


async def _ssh_actions(engine: AsyncEngine) -> list[IntendedAction]:
    async with AsyncSession(engine) as session:
        query = select(IntendedAction).where(IntendedAction.action_type == "ssh_command")
        return list((await session.scalars(query.order_by(IntendedAction.id))).all())


async def test_a_block_for_a_hostname_without_a_device_is_created_rejected_saying_why(
    orchestrator: Orchestrator, engine: AsyncEngine, bus: Bus, exec_settings: Settings
) -> None:
    await orchestrator.process(brute_force("gw-nobody-enrolled"))

    [action] = await _ssh_actions(engine)
    assert action.device_id is None
    assert (action.status, action.decided_by) == ("rejected", "enrolment")
    assert action.expires_at is None
    last = action.history[-1]
    assert (last["state"], last["by"]) == ("rejected", "enrolment")
    assert last["note"].startswith("no enrolled device for hostname gw-nobody-enrolled")
    async with Executor(engine, bus, exec_settings) as executor:
        assert await executor.dispatch() == []


async def test_the_same_finding_from_an_enrolled_router_proposes_a_pending_block_on_it(
    orchestrator: Orchestrator, engine: AsyncEngine, device: Device, router: Dropbear
) -> None:
    await orchestrator.process(brute_force(device.hostname))

    [action] = await _ssh_actions(engine)
    assert (action.status, action.device_id) == ("pending", device.id)

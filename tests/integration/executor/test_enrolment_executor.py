"""Only an enrolled router gets SSH actions: a discovered one is refused before any connection,
and its host key is never pinned; verified evidence runs the hostapd reload on dropbear."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.subjects import ActionState
from opmas.executor.service import Executor
from opmas.models import Device, IntendedAction
from opmas.orchestrator.service import Orchestrator
from opmas.settings import Settings
from tests.integration.executor.conftest import add_action, reload
from tests.integration.orchestrator.test_action_policy import crash
from tests.peers.dropbear import Dropbear

pytestmark = pytest.mark.integration

WIFI_RELOAD = {"template": "wifi_reload", "args": {}}


async def test_a_discovered_router_is_refused_at_once_and_never_contacted(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    await session.execute(
        update(Device).where(Device.id == device.id).values(enrolment="discovered")
    )
    await session.commit()
    action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device, retry_count=3)

    assert await executor.execute(action.id) is ActionState.FAILED

    assert router.calls() == []
    row = await reload(session, action)
    assert row.attempts == 0
    assert "is discovered, not enrolled" in row.history[-1]["note"]
    await session.refresh(device)
    assert device.ssh_host_key is None


async def test_the_first_connection_pins_the_host_key_of_an_enrolled_router(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)
    assert await executor.execute(action.id) is ActionState.SUCCEEDED
    await session.refresh(device)
    assert device.ssh_host_key == router.host_public_key


async def test_verified_evidence_of_a_hostapd_crash_reloads_wifi_on_the_router(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
    executor: Executor,
) -> None:
    async with Orchestrator(engine, bus, exec_settings) as orchestrator:
        [unverified] = await orchestrator.process(crash("r1", trust="address"))
        [verified] = await orchestrator.process(crash("r1", trust="verified"))
    held = await session.get(IntendedAction, unverified)
    assert held is not None
    assert held.status == "pending"  # waits for approval
    assert await executor.execute(unverified) is None  # not approved: never claimed

    assert await executor.execute(verified) is ActionState.SUCCEEDED
    assert router.calls() == [["wifi", "reload"]]

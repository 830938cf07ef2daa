"""The executor checks protected targets again before it runs an action: a row forged as
approved still never reaches the router (dropbear records no call)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.subjects import ActionState
from opmas.executor.service import Executor
from opmas.models import Device
from opmas.settings import Settings
from tests.integration.executor.conftest import add_action, reload
from tests.peers.dropbear import Dropbear

pytestmark = pytest.mark.integration


def block(ip: str) -> dict[str, object]:
    return {"template": "nft_block_ip", "args": {"ip": ip, "timeout": "10m"}}


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        ("127.0.0.1", "loopback address"),
        ("10.0.0.1", "private address"),
        ("::ffff:169.254.0.1", "link-local address"),
        ("fe80::1%x;flush", "an IPv6 scope id is never a target"),
    ],
)
async def test_a_forged_approved_block_of_a_protected_target_never_runs(
    session: AsyncSession,
    device: Device,
    router: Dropbear,
    executor: Executor,
    ip: str,
    why: str,
) -> None:
    action = await add_action(session, "ssh_command", block(ip), device=device, retry_count=3)

    assert await executor.execute(action.id) is ActionState.FAILED

    assert router.calls() == []
    row = await reload(session, action)
    assert row.attempts == 0
    assert row.result is not None
    assert row.result["error"].startswith("target ")
    assert why in row.result["error"]
    assert why in row.history[-1]["note"]


async def test_the_enrolled_devices_and_management_networks_of_now_are_checked(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
) -> None:
    session.add(Device(hostname="peer", ip_address="203.0.113.40", enrolment="enrolled"))
    await session.commit()
    actions = exec_settings.actions.model_copy(update={"protected_networks": ["198.51.100.0/28"]})
    settings = exec_settings.model_copy(update={"actions": actions})
    enrolled = await add_action(session, "ssh_command", block("203.0.113.40"), device=device)
    managed = await add_action(session, "ssh_command", block("198.51.100.5"), device=device)

    async with Executor(engine, bus, settings) as executor:
        assert await executor.execute(enrolled.id) is ActionState.FAILED
        assert await executor.execute(managed.id) is ActionState.FAILED

    assert router.calls() == []
    enrolled_row, managed_row = await reload(session, enrolled), await reload(session, managed)
    assert enrolled_row.result is not None
    assert "address of enrolled device peer" in enrolled_row.result["error"]
    assert managed_row.result is not None
    assert "protected network 198.51.100.0/28" in managed_row.result["error"]

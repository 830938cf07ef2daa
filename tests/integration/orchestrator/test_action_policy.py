"""Action policy against real PostgreSQL and NATS: evidence trust, enrolment, rate limit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.models import Device, IntendedAction
from opmas.orchestrator import policy
from opmas.orchestrator.service import Orchestrator
from opmas.settings import OrchestratorSettings, Settings
from tests.integration.orchestrator.test_orchestrator import finding

pytestmark = pytest.mark.integration


def crash(hostname: str = "r1", trust: str | None = None) -> Any:
    details: dict[str, Any] = {"hostname": hostname, "event": "process_segfault"}
    if trust is not None:
        details["trust"] = trust
    return finding(
        finding_id=str(uuid.uuid4()),
        agent_name="WiFiAgent",
        domain="wifi",
        finding_type="HostapdCrash",
        rule_name="wifi-hostapd-crash",
        description="hostapd crashed",
        device_hostname=hostname,
        details=details,
    )


async def _start(
    engine: AsyncEngine, bus: Bus, settings: Settings, **orch: Any
) -> AsyncIterator[Orchestrator]:
    async with engine.begin() as conn:
        await conn.execute(
            insert(Device).values(hostname="r1", ip_address="192.0.2.1", enrolment="enrolled")
        )
        await conn.execute(insert(Device).values(hostname="stranger", ip_address="192.0.2.99"))
    tuned = settings.model_copy(
        update={"orchestrator": settings.orchestrator.model_copy(update=orch)}
    )
    async with Orchestrator(engine, bus, tuned) as orchestrator:
        yield orchestrator


@pytest.fixture
async def orchestrator(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> AsyncIterator[Orchestrator]:
    async for running in _start(engine, bus, settings):
        yield running


async def _actions(engine: AsyncEngine) -> list[IntendedAction]:
    async with AsyncSession(engine) as session:
        query = select(IntendedAction).order_by(IntendedAction.id)
        return list((await session.scalars(query)).all())


@pytest.mark.parametrize("trust", [None, "untrusted", "address"])
async def test_an_auto_playbook_on_evidence_below_verified_waits_for_approval(
    orchestrator: Orchestrator, engine: AsyncEngine, trust: str | None
) -> None:
    await orchestrator.process(crash(trust=trust))
    [action] = await _actions(engine)
    assert (action.status, action.execution_mode) == ("pending", "auto")
    assert action.evidence_trust == (trust or "untrusted")
    assert action.decided_by is None
    assert action.expires_at is not None
    [held] = [h for h in action.history if h["by"] == "trust"]
    assert "auto needs verified" in held["note"]


async def test_verified_evidence_runs_the_hostapd_reload_on_its_own(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    await orchestrator.process(crash(trust="verified"))
    [action] = await _actions(engine)
    assert (action.status, action.decided_by) == ("approved", "playbook")
    assert action.evidence_trust == "verified"


async def test_an_ssh_step_on_a_discovered_router_is_created_rejected(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    await orchestrator.process(crash("stranger", trust="verified"))
    [action] = await _actions(engine)
    assert (action.status, action.decided_by) == ("rejected", "enrolment")
    assert "not enrolled" in action.history[-1]["note"]


async def test_untrusted_steps_are_not_proposed_when_the_operator_says_so(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> None:
    async for orchestrator in _start(engine, bus, settings, propose_untrusted=False):
        await orchestrator.process(crash(trust="untrusted"), crash(trust="verified"))
    [action] = await _actions(engine)
    assert action.evidence_trust == "verified"


async def test_actions_beyond_the_hourly_limit_of_a_router_are_held_pending(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> None:
    before = policy.RATE_LIMITED._value.get()
    async for orchestrator in _start(engine, bus, settings, max_actions_per_device_hour=3):
        await orchestrator.process(*(crash(trust="verified") for _ in range(2)))
        await orchestrator.process(*(crash(trust="verified") for _ in range(3)))
    actions = await _actions(engine)
    assert [a.status for a in actions] == ["approved"] * 3 + ["pending"] * 2
    for held in actions[3:]:
        assert held.decided_by is None
        assert [h["state"] for h in held.history] == ["pending", "pending"]
        assert held.history[-1]["by"] == "rate-limit"
    assert policy.RATE_LIMITED._value.get() - before == 2


def test_the_limit_setting_has_a_default_of_ten() -> None:
    assert OrchestratorSettings().max_actions_per_device_hour == 10

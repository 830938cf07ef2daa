"""The executor as a component: finds approved actions (bus wake-up and poll), claims each
once, publishes every transition, and recovers actions a crashed executor left running."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.subjects import ActionState
from opmas.executor.service import Executor
from opmas.messages import Action
from opmas.models import Device, IntendedAction
from opmas.orchestrator.lifecycle import action_message, publish_action
from opmas.settings import ExecutorSettings, Settings
from tests.integration.executor.conftest import add_action, reload
from tests.peers.dropbear import Dropbear

pytestmark = pytest.mark.integration

WIFI_RELOAD = {"template": "wifi_reload", "args": {}}


async def _status_becomes(session: AsyncSession, action_id: int, status: str) -> None:
    for _ in range(100):
        async with AsyncSession(session.bind) as fresh:
            current = await fresh.scalar(
                select(IntendedAction.status).where(IntendedAction.id == action_id)
            )
        if current == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"action {action_id} is {current}, never {status}")


async def test_every_transition_is_published_on_actions_state(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor, bus: Bus
) -> None:
    received: list[Action] = []

    async def collect(msg: Msg) -> None:
        received.append(msgspec.json.decode(msg.data, type=Action))

    sub = await bus.nc.subscribe(bus.subjects.actions_all, cb=collect)
    action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)

    await executor.execute(action.id)

    for _ in range(50):
        if len(received) >= 2:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    assert [(m.action_id, m.state) for m in received] == [
        (action.id, "running"),
        (action.id, "succeeded"),
    ]
    assert received[1].result is not None
    assert received[1].result["exit_status"] == 0
    assert received[1].device_hostname == "r1"


async def test_an_approved_action_announced_on_the_bus_runs_at_once(
    engine: AsyncEngine,
    bus: Bus,
    settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
) -> None:
    slow_poll = settings.model_copy(update={"executor": ExecutorSettings(poll_s=60)})
    stop = asyncio.Event()
    async with Executor(engine, bus, slow_poll) as executor:
        task = asyncio.create_task(executor.run(stop))
        await asyncio.sleep(0.5)  # past the first poll: only the message can wake it now
        action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)
        await publish_action(bus, await action_message(session, action.id))
        try:
            await _status_becomes(session, action.id, "succeeded")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert router.calls() == [["wifi", "reload"]]


async def test_an_approved_action_without_a_message_is_found_by_the_poll(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
) -> None:
    stop = asyncio.Event()
    async with Executor(engine, bus, exec_settings) as executor:
        task = asyncio.create_task(executor.run(stop))
        await asyncio.sleep(0.3)
        action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)
        try:
            await _status_becomes(session, action.id, "succeeded")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert router.calls() == [["wifi", "reload"]]


async def test_two_executors_never_run_one_action(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
    executor: Executor,
) -> None:
    action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)
    async with Executor(engine, bus, exec_settings) as other:
        states = await asyncio.gather(executor.execute(action.id), other.execute(action.id))

    assert sorted(states, key=str) == sorted([None, ActionState.SUCCEEDED], key=str)
    assert router.calls() == [["wifi", "reload"]]


async def test_a_pending_action_is_not_run(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device, status="pending")

    assert await executor.dispatch() == []
    assert await executor.execute(action.id) is None

    assert router.calls() == []
    assert (await reload(session, action)).status == "pending"


async def test_actions_left_running_too_long_go_back_to_approved_at_start(
    engine: AsyncEngine, bus: Bus, exec_settings: Settings, session: AsyncSession
) -> None:
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    stale = await add_action(
        session, "notify", {}, status="running", started_at=long_ago, timeout_seconds=30
    )
    # 10 minutes is within 60 s x (9 + 1) + 60 s: its executor may still be at it
    busy = await add_action(
        session,
        "notify",
        {},
        status="running",
        started_at=long_ago,
        timeout_seconds=60,
        retry_count=9,
    )

    async with Executor(engine, bus, exec_settings):
        pass

    assert (await reload(session, stale)).status == "approved"
    assert (await reload(session, stale)).history[-1]["state"] == "approved"
    assert (await reload(session, busy)).status == "running"

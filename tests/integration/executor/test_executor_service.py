"""The executor as a component: finds approved actions (bus wake-up and poll), claims each
once, publishes every transition, counts attempts truthfully, and makes `interrupted` the
actions whose executor is silent or past their time, never those of a live replica."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import structlog
from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from structlog.testing import LogCapture

from opmas.bus.connect import Bus
from opmas.bus.subjects import ActionState
from opmas.executor import service
from opmas.executor.service import Executor
from opmas.messages import Action
from opmas.models import Device, IntendedAction
from opmas.orchestrator.lifecycle import action_message, publish_action
from opmas.settings import ExecutorSettings, Settings
from tests.integration.executor.conftest import add_action, reload, running
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


OTHER_NODE = "elsewhere/4242/1/other-boot.1/0123456789ab"  # an executor on another machine


async def test_an_action_of_a_silent_executor_is_interrupted_at_start_and_never_run_again(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
) -> None:
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    action = await add_action(
        session,
        "ssh_command",
        WIFI_RELOAD,
        device=device,
        status="running",
        started_at=long_ago,
        heartbeat_at=long_ago,
        executor_id=OTHER_NODE,
        timeout_seconds=600,  # still within its time: only the silence gives it away
        attempts=1,
    )
    stop = asyncio.Event()
    async with Executor(engine, bus, exec_settings) as executor:
        row = await reload(session, action)
        assert row.status == "interrupted"
        task = asyncio.create_task(executor.run(stop))
        await asyncio.sleep(1.0)  # several polls
        stop.set()
        await asyncio.wait_for(task, 10)

    row = await reload(session, action)
    assert row.status == "interrupted"
    assert row.finished_at is not None
    assert row.executed_at is None  # nobody knows whether it ran
    assert row.attempts == 1
    assert row.result is not None
    assert row.result["reason"] == "silent"
    assert "may or may not have run on the router" in row.result["error"]
    assert "elsewhere:4242" in row.result["error"]
    assert (row.history[-1]["state"], row.history[-1]["by"]) == ("interrupted", "executor")
    assert router.calls() == []


async def test_an_action_past_its_whole_time_is_interrupted_though_its_executor_beats(
    engine: AsyncEngine, bus: Bus, exec_settings: Settings, session: AsyncSession
) -> None:
    now = datetime.now(UTC)
    overdue = await add_action(
        session,
        "notify",
        {},
        status="running",
        started_at=now - timedelta(minutes=5),
        heartbeat_at=now,
        executor_id=OTHER_NODE,
        timeout_seconds=30,
        retry_count=1,
    )
    # 5 minutes is within 60 s x (9 + 1): its executor may still be at it
    busy = await add_action(
        session,
        "notify",
        {},
        status="running",
        started_at=now - timedelta(minutes=5),
        heartbeat_at=now,
        executor_id=OTHER_NODE,
        timeout_seconds=60,
        retry_count=9,
    )

    async with Executor(engine, bus, exec_settings):
        pass

    row = await reload(session, overdue)
    assert row.status == "interrupted"
    assert row.result is not None
    assert row.result["reason"] == "overdue"
    assert "past its 2 attempt(s) of 30 s" in row.result["error"]
    assert (await reload(session, busy)).status == "running"


async def test_a_second_live_executor_never_interrupts_the_first_ones_action(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
) -> None:
    router.hang()
    action = await add_action(
        session, "ssh_command", WIFI_RELOAD, device=device, timeout_seconds=60
    )
    first = Executor(engine, bus, exec_settings, heartbeat_s=0.2)
    second = Executor(engine, bus, exec_settings, heartbeat_s=0.2, stale_s=1.0)
    async with first, running(first):
        await _status_becomes(session, action.id, "running")
        async with second, running(second):
            await asyncio.sleep(3.0)  # three times the silence `second` tolerates
            row = await reload(session, action)
            assert row.status == "running"
            assert row.executor_id == first.instance
        router.unhang()
        await _status_becomes(session, action.id, "succeeded")
    assert router.calls() == [["wifi", "reload"]]
    assert (await reload(session, action)).attempts == 1


async def test_the_attempts_logged_are_the_attempts_on_the_row(
    session: AsyncSession,
    device: Device,
    router: Dropbear,
    executor: Executor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the executor's own logger, capturing: the suite's logging may be configured either way
    logs = LogCapture()
    monkeypatch.setattr(service, "log", structlog.wrap_logger(None, processors=[logs]))
    router.hang()
    hangs = await add_action(
        session, "ssh_command", WIFI_RELOAD, device=device, timeout_seconds=1, retry_count=1
    )
    refused = await add_action(session, "ssh_command", {"template": "nope"}, device=device)
    assert await executor.execute(hangs.id) is ActionState.TIMED_OUT
    assert await executor.execute(refused.id) is ActionState.FAILED

    finished = [e for e in logs.entries if e["event"] == "action finished"]
    logged = {e["action_id"]: e["attempts"] for e in finished}
    assert logged == {hangs.id: 2, refused.id: 0}
    assert (await reload(session, hangs)).attempts == 2
    assert (await reload(session, refused)).attempts == 0
    assert (await reload(session, hangs)).history[-1]["attempt"] == 2


async def test_an_action_in_hand_when_the_executor_is_forced_to_stop_is_interrupted(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
) -> None:
    router.hang()
    action = await add_action(
        session, "ssh_command", WIFI_RELOAD, device=device, timeout_seconds=60
    )
    stop = asyncio.Event()
    async with Executor(engine, bus, exec_settings) as executor:
        task = asyncio.create_task(executor.run(stop))
        await _status_becomes(session, action.id, "running")
        stop.set()  # it waits for the action in hand...
        await asyncio.sleep(0.5)
        assert not task.done()
        task.cancel()  # ...until the grace period ends
        with pytest.raises(asyncio.CancelledError):
            await task

    row = await reload(session, action)
    assert row.status == "interrupted"
    assert row.result is not None
    assert row.result["reason"] == "stopped"
    assert "may or may not have run on the router" in row.result["error"]

"""An executor killed (kill -9) or frozen (SIGSTOP) while dropbear runs its command: the action
ends `interrupted`, is never run again by itself, and runs once more only on an operator's
retry. The executor under test is `opmas run executor`, a process of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.executor.service import Executor
from opmas.models import Device, IntendedAction
from opmas.settings import Settings
from tests.integration.executor.conftest import add_action, opmas, reload, running
from tests.peers.dropbear import Dropbear

pytestmark = pytest.mark.integration

WIFI_RELOAD = {"template": "wifi_reload", "args": {}}
INTERRUPTED_WITHIN_S = 5.0  # after a kill -9, from the new executor's start


@pytest.fixture
def executor_process(
    exec_settings: Settings, database_url: str, nats_url: str, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts `opmas run executor` against the test's database and bus; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    assert exec_settings.secret_key is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPMAS_")}
    env.update(
        OPMAS_DATABASE_URL=database_url,
        OPMAS_NATS_URL=nats_url,
        OPMAS_BUS__NAMESPACE=exec_settings.bus.namespace,
        OPMAS_SECRET_KEY=exec_settings.secret_key.get_secret_value(),
        OPMAS_DATA_DIR=str(tmp_path / "executor-data"),
        OPMAS_EXECUTOR__POLL_S="0.2",
        OPMAS_EXECUTOR__RETRY_BACKOFF_S="0.05",
        OPMAS_LOG_LEVEL="debug",
    )
    opmas_bin = str(Path(sys.executable).parent / "opmas")

    def start() -> subprocess.Popen[bytes]:
        with (tmp_path / f"executor-{len(started)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [opmas_bin, "run", "executor"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait()


async def _until(check: Callable[[], object], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {within_s} s")
        await asyncio.sleep(0.1)


async def _row(engine: AsyncEngine, action_id: int) -> IntendedAction:
    async with AsyncSession(engine) as fresh:
        row = await fresh.get(IntendedAction, action_id)
    assert row is not None
    return row


async def _running_on_the_router(
    engine: AsyncEngine, router: Dropbear, action_id: int, proc: subprocess.Popen[bytes]
) -> IntendedAction:
    """Wait until the executor process runs the action's command on the router."""
    await _until(lambda: router.calls() == [["wifi", "reload"]], 60, "run on the router")
    row = await _row(engine, action_id)
    assert proc.poll() is None
    assert row.status == "running"
    assert row.attempts == 1  # counted before the attempt was made
    assert row.executor_id is not None
    assert row.executor_id.split("/")[1] == str(proc.pid)
    return row


@pytest.mark.usefixtures("cli")
async def test_an_action_whose_executor_was_killed_ends_interrupted_and_runs_again_only_on_retry(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
    executor_process: Callable[[], subprocess.Popen[bytes]],
) -> None:
    router.hang()
    action = await add_action(
        session, "ssh_command", WIFI_RELOAD, device=device, timeout_seconds=60
    )
    proc = executor_process()
    await _running_on_the_router(engine, router, action.id, proc)
    proc.kill()  # kill -9: no chance to record anything
    proc.wait()

    began = time.monotonic()
    async with Executor(engine, bus, exec_settings) as executor:
        row = await _row(engine, action.id)
        assert row.status == "interrupted"
        assert time.monotonic() - began < INTERRUPTED_WITHIN_S
        async with running(executor):
            await asyncio.sleep(1.5)  # polls and heartbeats: nothing runs it again
        assert router.calls() == [["wifi", "reload"]]
        row = await reload(session, action)
        assert row.finished_at is not None
        assert row.attempts == 1
        assert row.result is not None
        assert row.result["reason"] == "gone"
        assert "may or may not have run on the router" in row.result["error"]

        shown = await opmas("actions", "show", str(action.id))
        assert shown.exit_code == 0, shown.output
        assert "may or may not have run on the router" in shown.output
        assert f"opmas actions retry {action.id}" in shown.output
        listed = await opmas("actions", "list", "--status", "interrupted")
        assert "interrupted" in listed.output
        assert "Nothing runs it again by itself" in " ".join(listed.output.split())

        router.unhang()
        async with running(executor):
            retried = await opmas("actions", "retry", str(action.id), "--wait", "--by", "alice")
    assert retried.exit_code == 0, retried.output
    assert f"action {action.id} succeeded" in retried.output
    assert "2 attempt(s)" in retried.output
    assert router.calls() == [["wifi", "reload"], ["wifi", "reload"]]
    row = await reload(session, action)
    assert row.attempts == 2  # one by the killed executor, one on retry
    assert [h["state"] for h in row.history] == [
        "running", "interrupted", "approved", "running", "succeeded"
    ]  # fmt: skip
    assert (row.history[2]["by"], row.history[2]["note"]) == ("alice", "retry")


async def test_a_frozen_executor_loses_its_action_attempts_nothing_more_and_its_outcome_is_noted(
    engine: AsyncEngine,
    bus: Bus,
    exec_settings: Settings,
    session: AsyncSession,
    device: Device,
    router: Dropbear,
    executor_process: Callable[[], subprocess.Popen[bytes]],
) -> None:
    router.hang()
    action = await add_action(
        session, "ssh_command", WIFI_RELOAD, device=device, timeout_seconds=6, retry_count=2
    )
    proc = executor_process()
    await _running_on_the_router(engine, router, action.id, proc)
    attempt_began = time.monotonic()
    os.kill(proc.pid, signal.SIGSTOP)  # alive, but silent
    try:
        other = Executor(engine, bus, exec_settings, heartbeat_s=0.2, stale_s=2.0)
        async with other:
            assert (await _row(engine, action.id)).status == "running"  # its process exists
            async with running(other):
                await _until_interrupted(engine, action.id, within_s=10)
        row = await _row(engine, action.id)
        assert row.result is not None
        assert row.result["reason"] == "silent"
        # past its attempt's timeout: on waking up it finds attempt 1 timed out, and would
        # make attempt 2 if it did not check that the action is still its own
        await asyncio.sleep(max(0.0, attempt_began + 7 - time.monotonic()))
    finally:
        os.kill(proc.pid, signal.SIGCONT)

    deadline = time.monotonic() + 30
    while "came back after it was interrupted" not in (note := await _last_note(engine, action)):
        assert time.monotonic() < deadline, note
        await asyncio.sleep(0.2)
    assert "the run ended timed_out: timed out after 6 s" in note
    row = await _row(engine, action.id)
    assert row.status == "interrupted"
    assert row.attempts == 1
    assert router.calls() == [["wifi", "reload"]]


async def _until_interrupted(engine: AsyncEngine, action_id: int, within_s: float) -> None:
    began = time.monotonic()
    while (await _row(engine, action_id)).status == "running":
        assert time.monotonic() - began < within_s, "never interrupted"
        await asyncio.sleep(0.1)
    assert (await _row(engine, action_id)).status == "interrupted"


async def _last_note(engine: AsyncEngine, action: IntendedAction) -> str:
    history = (await _row(engine, action.id)).history
    return str(history[-1].get("note"))

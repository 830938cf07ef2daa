"""The supervisor: restarts with backoff, shows ERROR meanwhile, drains on stop."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import time
from typing import Self

import pytest

from opmas import runtime
from opmas.errors import BindError, ConfigError
from opmas.runtime import ComponentState, ComponentStatus, Supervisor, run_until_signalled
from opmas.settings import RuntimeSettings
from tests.logrecorder import LogRecorder

FAST = RuntimeSettings(restart_backoff_s=0.01, restart_backoff_max_s=0.05, shutdown_grace_s=1.0)


class Flaky:
    """Crashes on its first `crashes` runs, then runs until stopped."""

    name = "flaky"

    def __init__(self, log: list[str], crashes: int) -> None:
        self.log = log
        self.crashes = crashes

    async def __aenter__(self) -> Self:
        self.log.append("open")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.log.append("close")

    async def run(self, stop: asyncio.Event) -> None:
        if self.log.count("open") <= self.crashes:
            raise RuntimeError("boom")
        await stop.wait()
        self.log.append("drained")


async def test_a_component_that_raises_is_restarted_and_shown_as_error_meanwhile() -> None:
    log: list[str] = []
    seen: list[tuple[str, ComponentStatus]] = []
    supervisor = Supervisor(
        {"flaky": lambda: Flaky(log, crashes=2)},
        FAST,
        on_status=lambda s: seen.append((s.name, s.status)),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    for _ in range(200):
        if supervisor.states["flaky"].status is ComponentStatus.ACTIVE and log.count("open") == 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    statuses = [status for _, status in seen]
    assert statuses.count(ComponentStatus.ERROR) == 2
    assert statuses[-1] is ComponentStatus.STOPPED
    assert supervisor.states["flaky"].restarts == 2
    assert supervisor.states["flaky"].last_error == "RuntimeError: boom"
    assert log == ["open", "close", "open", "close", "open", "drained", "close"]


async def test_backoff_grows_between_restarts() -> None:
    log: list[str] = []
    settings = RuntimeSettings(restart_backoff_s=0.05, restart_backoff_max_s=1.0)
    supervisor = Supervisor({"flaky": lambda: Flaky(log, crashes=3)}, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(supervisor.run(stop))
    while log.count("open") < 4:
        await asyncio.sleep(0.01)
    elapsed = loop.time() - started
    stop.set()
    await task
    assert elapsed >= 0.05 + 0.1 + 0.2  # 3 restarts: 0.05, 0.1, 0.2 seconds apart


class Stubborn:
    """Ignores the stop event; the supervisor must cancel it after the grace period."""

    name = "stubborn"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.log.append("close")

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.log.append("cancelled")
            raise


async def test_a_component_that_does_not_drain_is_cancelled_after_grace_and_closed() -> None:
    log: list[str] = []
    settings = RuntimeSettings(shutdown_grace_s=0.1)
    supervisor = Supervisor({"stubborn": lambda: Stubborn(log)}, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert log == ["cancelled", "close"]


def test_component_state_as_dict_names_the_status() -> None:
    state = ComponentState("api", ComponentStatus.ACTIVE)
    assert state.as_dict()["status"] == "ACTIVE"


async def test_a_stop_that_never_finishes_is_forced_after_force_after_s() -> None:
    """An orphaned child: SIGTERM sets stop, but its servers are gone and it cannot drain."""
    stopped = asyncio.Event()

    async def stuck(stop: asyncio.Event) -> None:
        await stop.wait()
        stopped.set()
        await asyncio.sleep(3600)  # waiting for a server that died with the parent

    async def terminate_soon() -> None:
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = asyncio.create_task(terminate_soon())
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await run_until_signalled(stuck, force_after_s=0.3)
    await killer
    assert stopped.is_set()
    assert 0.3 <= time.monotonic() - started < 5


SWALLOWS_CANCEL = """
import asyncio, os, signal, sys
from opmas import runtime
runtime.HARD_EXIT_AFTER_S = 0.3

async def deaf():
    while True:  # a library call that retries through its cancellation
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue

async def stuck_main(stop):
    await stop.wait()
    await deaf()

async def leaves_a_task(stop):  # main ends; asyncio.run's clean-up then waits for the task
    asyncio.get_running_loop().create_task(deaf())
    await stop.wait()

async def ends_by_itself(stop):  # no signal: main returns, leaving the task behind
    asyncio.get_running_loop().create_task(deaf())

async def main():
    if sys.argv[1] != "ends_by_itself":
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    await runtime.run_until_signalled(globals()[sys.argv[1]], force_after_s=0.3, hard_exit=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("main", ["stuck_main", "leaves_a_task", "ends_by_itself"])
def test_a_process_whose_cancellation_is_swallowed_exits_anyway(main: str) -> None:
    """Orphaned `opmas run pipeline` children outlived their parent by hours, stuck in
    asyncio.run's clean-up: now they cannot."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWS_CANCEL, main], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == runtime.EXIT_FORCED, done.stderr
    assert "exiting without cleanup" in done.stdout + done.stderr
    assert time.monotonic() - started < 20


class Misconfigured:
    """Fails to open on its configuration, as a listener on a port in use does."""

    name = "misconfigured"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> Self:
        self.log.append("open")
        raise BindError("syslog UDP port 5514 on 0.0.0.0 is in use")

    async def __aexit__(self, *exc_info: object) -> None:
        raise AssertionError("never opened")

    async def run(self, stop: asyncio.Event) -> None:
        raise AssertionError("never opened")


async def test_a_configuration_error_is_not_restarted_and_stops_every_component() -> None:
    log: list[str] = []
    seen: list[ComponentState] = []
    supervisor = Supervisor(
        {"flaky": lambda: Flaky(log, crashes=0), "misconfigured": lambda: Misconfigured(log)},
        FAST,
        on_status=lambda s: seen.append(ComponentState(**vars(s))),
    )
    stop = asyncio.Event()
    with pytest.raises(ConfigError, match=r"port 5514 on 0\.0\.0\.0 is in use"):
        await asyncio.wait_for(supervisor.run(stop), 5)
    assert not stop.is_set()  # it stopped on its own, no signal needed
    assert log.count("open") == 2  # each opened once: no restart
    assert log[-2:] == ["drained", "close"]  # the healthy one drained and closed
    state = supervisor.states["misconfigured"]
    assert state.restarts == 0
    errors = [s for s in seen if s.status is ComponentStatus.ERROR]
    assert [(s.name, s.fatal, s.last_error) for s in errors] == [
        ("misconfigured", True, "syslog UDP port 5514 on 0.0.0.0 is in use")
    ]


async def test_a_component_still_starting_when_stopped_is_not_announced() -> None:
    class Slow(Flaky):
        async def __aenter__(self) -> Self:
            await asyncio.sleep(0.2)
            return await super().__aenter__()

    log: list[str] = []
    seen: list[ComponentStatus] = []
    supervisor = Supervisor(
        {"slow": lambda: Slow(log, 0)}, FAST, on_status=lambda s: seen.append(s.status)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert ComponentStatus.ACTIVE not in seen
    assert log == ["open", "close"]


async def test_a_child_takes_a_second_signal_as_the_same_stop() -> None:
    """`systemctl stop` signals every process, then the parent of a child signals it again."""

    async def draining(stop: asyncio.Event) -> None:
        await stop.wait()
        await asyncio.sleep(0.3)  # in-flight work

    async def terminate_twice() -> None:
        for _ in range(2):
            await asyncio.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)

    killer = asyncio.create_task(terminate_twice())
    await run_until_signalled(draining, force_after_s=5, second_signal_forces=False)
    await killer


class NeedsDatabase(Flaky):
    """Fails as a component does while PostgreSQL refuses connections, then runs."""

    async def run(self, stop: asyncio.Event) -> None:
        if self.log.count("open") <= self.crashes:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        await stop.wait()


async def test_a_component_failing_on_a_server_that_is_down_waits_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = LogRecorder()
    monkeypatch.setattr(runtime, "log", recorder)
    log: list[str] = []
    seen: list[ComponentStatus] = []
    supervisor = Supervisor(
        {"executor": lambda: NeedsDatabase(log, crashes=3)},
        FAST,
        on_status=lambda s: seen.append(s.status),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    for _ in range(300):
        if supervisor.states["executor"].status is ComponentStatus.ACTIVE:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # up longer than restart_backoff_max_s: the outage is over
    stop.set()
    await task
    assert seen.count(ComponentStatus.WAITING) == 3
    assert ComponentStatus.ERROR not in seen
    assert supervisor.states["executor"].restarts == 3
    assert supervisor.states["executor"].last_error == (
        "waiting for a server: ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert recorder.events == ["component waiting for a server", "component running again"]

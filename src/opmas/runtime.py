"""Component runtime: signals -> stop event -> bounded drain, and a supervisor that restarts.

A component is an async context manager with a `name` and a `run(stop)` coroutine. Entering it
opens its resources (status STARTING until then, ACTIVE after); `run` returns once `stop` is set
and its in-flight work is done; leaving it closes what entering opened. A component that raises
ConfigError (bad setting, port in use) is not restarted: the whole process stops with it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import structlog
from prometheus_client import Counter, Gauge

from opmas.bus.failures import Failure, classify, describe
from opmas.errors import ConfigError
from opmas.settings import RuntimeSettings

log = structlog.get_logger(__name__)

COMPONENT_STATUS = Gauge(
    "opmas_component_status",
    "1 for the status a component is in, 0 for the others.",
    ["component", "status"],
)
COMPONENT_RESTARTS = Counter(
    "opmas_component_restarts_total", "Restarts of a component after a crash.", ["component"]
)


RECOVERED_AFTER_S = 10.0  # a WAITING component up this long: its outage is over


class ComponentStatus(StrEnum):
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    WAITING = "WAITING"  # it failed because PostgreSQL or NATS is down: restarted when back
    ERROR = "ERROR"
    STOPPED = "STOPPED"


class Component(Protocol):
    """What the supervisor runs. `run` must return soon after `stop` is set."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


ComponentFactory = Callable[[], AbstractAsyncContextManager[Component]]
"""Builds a fresh, unopened component; called again for each restart."""


@dataclass
class ComponentState:
    """What the supervisor knows of one component, as shown by `opmas status`."""

    name: str
    status: ComponentStatus = ComponentStatus.STOPPED
    restarts: int = 0
    last_error: str | None = None
    detail: str | None = None  # what an ACTIVE component offers, e.g. where it listens
    describe: Callable[[], str | None] | None = field(default=None, repr=False)  # detail now
    health: Callable[[], str | None] | None = field(default=None, repr=False)  # why degraded
    child_pid: int | None = None  # a component run in a child process: that process
    fatal: bool = False  # its last error stops the process instead of a restart
    since: float = field(default_factory=time.time)

    def _detail_now(self) -> str | None:
        """The detail as the component describes itself now (partitions taken since...)."""
        if self.status is ComponentStatus.ACTIVE and self.describe is not None:
            try:
                return self.describe()
            except Exception:  # a status report must not fail on one component
                return self.detail
        return self.detail

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": str(self.status),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "detail": self._detail_now(),
            "degraded": self._degraded_now(),
            "child_pid": self.child_pid,
            "since": self.since,
        }

    def _degraded_now(self) -> str | None:
        """Why an ACTIVE component makes no progress now (a server down, a stall), or None."""
        if self.status is not ComponentStatus.ACTIVE or self.health is None:
            return None
        try:
            return self.health()
        except Exception:  # a status report must not fail on one component
            return None


StatusListener = Callable[[ComponentState], None]


class Supervisor:
    """Runs components side by side; restarts a crashed one with exponential backoff.

    A component that raises is shown as ERROR until its restart succeeds. On stop, every
    component gets the stop event and `shutdown_grace_s` to drain; then it is cancelled. A
    ConfigError is fatal: every component is stopped the same way, then `run` raises it.
    """

    def __init__(
        self,
        factories: dict[str, ComponentFactory],
        settings: RuntimeSettings,
        *,
        on_status: StatusListener | None = None,
    ) -> None:
        self._factories = factories
        self._settings = settings
        self._on_status = on_status
        self.states = {name: ComponentState(name) for name in factories}
        self.fatal: ConfigError | None = None
        self._halt = asyncio.Event()  # what the components see: stop, or a fatal error
        self._waiting: set[str] = set()  # components restarted because a server is down
        self._watches: set[asyncio.Task[None]] = set()

    @property
    def halt(self) -> asyncio.Event:
        """Set once the components are to stop (a component still starting may watch it)."""
        return self._halt

    def _set(self, name: str, status: ComponentStatus, error: str | None = None) -> None:
        state = self.states[name]
        state.status, state.since = status, time.time()
        if error is not None:
            state.last_error = error
        for each in ComponentStatus:
            COMPONENT_STATUS.labels(name, str(each)).set(1 if each is status else 0)
        if self._on_status is not None:
            self._on_status(state)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every component until `stop` is set, then drain them within the grace period.

        Raises:
            ConfigError: a component failed on its configuration (the others were drained).
        """
        halt = self._halt
        tasks = [
            asyncio.create_task(self._keep_running(name, halt), name=f"component:{name}")
            for name in self._factories
        ]
        waits = {asyncio.create_task(stop.wait()), asyncio.create_task(halt.wait())}
        await asyncio.wait(waits, return_when="FIRST_COMPLETED")
        for each in waits:
            each.cancel()
        halt.set()
        _, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_s)
        for task in pending:
            log.warning("component did not drain in time, cancelling", task=task.get_name())
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for watch in self._watches:
            watch.cancel()
        for name, state in self.states.items():
            if state.status is not ComponentStatus.STOPPED:
                self._set(name, ComponentStatus.STOPPED)
        if self.fatal is not None:
            raise self.fatal

    async def _keep_running(self, name: str, stop: asyncio.Event) -> None:
        delay = self._settings.restart_backoff_s
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._run_once(name, stop)
            except ConfigError as exc:  # restarting cannot help: stop everything, say why
                log.debug("component failed on its configuration", component=name, exc_info=True)
                self.states[name].fatal = True
                self._set(name, ComponentStatus.ERROR, str(exc))
                self.fatal = self.fatal or exc
                self._halt.set()
                return
            except Exception as exc:  # a component's crash must not take the others down
                self._crashed(name, exc)
                self.states[name].restarts += 1
                COMPONENT_RESTARTS.labels(name).inc()
                if time.monotonic() - started > self._settings.restart_backoff_max_s:
                    delay = self._settings.restart_backoff_s  # it ran well for a while
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, self._settings.restart_backoff_max_s)
            else:
                break
        self._set(name, ComponentStatus.STOPPED)

    def _crashed(self, name: str, exc: Exception) -> None:
        """ERROR with the traceback logged; or, when a server is down (PostgreSQL, NATS: a
        transient failure), WAITING with one log line until the component runs again."""
        error = f"{type(exc).__name__}: {exc}"
        if classify(exc) is not Failure.TRANSIENT:
            log.exception("component crashed", component=name)
            self._set(name, ComponentStatus.ERROR, error)
            return
        if name not in self._waiting:  # one line per outage, not one per restart
            log.warning(
                "component waiting for a server",
                component=name,
                server=describe(exc),
                error=error.splitlines()[0][:300],
            )
        self._waiting.add(name)
        self._set(name, ComponentStatus.WAITING, f"waiting for {describe(exc)}: {error}")

    async def _still_running(self, name: str, since: float) -> None:
        """The outage is over for a WAITING component once it stays up a while."""
        await asyncio.sleep(min(RECOVERED_AFTER_S, self._settings.restart_backoff_max_s))
        state = self.states[name]
        if state.status is ComponentStatus.ACTIVE and state.since == since:
            self._waiting.discard(name)
            log.info("component running again", component=name)

    async def _run_once(self, name: str, stop: asyncio.Event) -> None:
        self._set(name, ComponentStatus.STARTING)
        async with self._factories[name]() as component:
            if stop.is_set():
                return  # stopped while it was starting: leave it unannounced
            describe = getattr(component, "describe", None)
            state = self.states[name]
            state.describe = describe if callable(describe) else None
            state.detail = describe() if callable(describe) else None
            health = getattr(component, "health", None)
            state.health = health if callable(health) else None
            pid = getattr(component, "child_pid", None)
            state.child_pid = pid if isinstance(pid, int) else None
            self._set(name, ComponentStatus.ACTIVE)
            if name in self._waiting:
                watch = asyncio.create_task(self._still_running(name, state.since))
                self._watches.add(watch)
                watch.add_done_callback(self._watches.discard)
            await component.run(stop)
            if not stop.is_set():
                raise RuntimeError("component returned before it was asked to stop")


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


HARD_EXIT_AFTER_S = 5.0
EXIT_FORCED = 70  # EX_SOFTWARE


def _exit_after(seconds: float) -> None:
    """Leave the process without cleaning up in `seconds` unless it has ended by then (a
    daemon thread: it never keeps the process alive, and runs when the event loop is stuck).
    Acked work is done; what was in hand is redelivered."""

    def _hard_exit() -> None:
        log.error("exiting without cleanup: the stop did not end", after_s=seconds)
        os._exit(EXIT_FORCED)

    timer = threading.Timer(seconds, _hard_exit)
    timer.daemon = True
    timer.start()


async def run_until_signalled(
    main: Callable[[asyncio.Event], Awaitable[None]],
    *,
    force_after_s: float | None = None,
    second_signal_forces: bool = True,
    hard_exit: bool = False,
) -> None:
    """Run `main(stop)`; SIGINT or SIGTERM sets `stop`, a second signal cancels `main`, and
    so does `force_after_s` passing after the first (a child whose parent died with the
    servers it used would otherwise wait for them forever). With `hard_exit` (a process's
    entry point), still alive `HARD_EXIT_AFTER_S` after that (a task that swallows its
    cancellation keeps `main`, or the event loop's own clean-up after it, from ending), the
    process exits at once with `EXIT_FORCED`: a thread watches, as the loop may be stuck. A
    child of `opmas up` passes `second_signal_forces=False`: a signal sent to every process
    at once (`systemctl stop`) and its parent's SIGTERM right after are one request to stop,
    not two."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.ensure_future(main(stop))

    def _force(reason: str) -> None:
        if not task.done():
            log.warning("forcing exit", reason=reason)
            task.cancel()
            if hard_exit:
                _exit_after(HARD_EXIT_AFTER_S)

    def _signalled(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            if second_signal_forces:
                _force(f"second {name}")
            return
        log.info("stopping", signal=name)
        stop.set()
        if force_after_s is not None:
            loop.call_later(force_after_s, _force, f"still stopping after {force_after_s:g} s")
            if hard_exit:
                _exit_after(force_after_s + HARD_EXIT_AFTER_S)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _signalled, signum)
    try:
        await task
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if hard_exit:  # `main` ended, signalled or not: the loop's clean-up may still hang
            _exit_after(HARD_EXIT_AFTER_S)

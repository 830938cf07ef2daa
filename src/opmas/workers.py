"""A component run in a child process (`opmas run NAME`), so `opmas up` uses every core.

The child reaches the same PostgreSQL and NATS (their URLs are passed in its environment, so
it starts no server), answers status requests itself, and dies with its parent (parent-death
signal). Here it is a component like any other: ACTIVE once the child says it is ready,
restarted by the supervisor if it exits, stopped with SIGTERM and a grace period. It runs in
a session of its own, so a terminal's Ctrl-C (sent to the foreground process group) reaches
only the parent, which stops it. A child that stops on a configuration error says so with
FATAL_MARK; that error is fatal here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Self

import structlog

from opmas.embedded import death_signal
from opmas.errors import ConfigError, OpmasError

log = structlog.get_logger(__name__)

READY_MARK = "ready    "
FATAL_MARK = "fatal    "  # then the one-line configuration error that stopped the child
CHILD_ENV = "OPMAS_CHILD_OF"


class WorkerExited(OpmasError):
    """The child process of a component ended on its own."""


class WorkerFailed(ConfigError):
    """The child process of a component stopped on a configuration error (not restarted)."""


class WorkerProcess:
    """Runs `opmas run COMPONENT...` as a child; its stdout lines are relayed to ours.

    `name` is the unit's name here (a component, or a group such as `agents`); the child runs
    `components` (default: just `name`) and is ready once every one of them is.
    """

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        *,
        ready_timeout_s: float,
        grace_s: float,
        components: tuple[str, ...] = (),
        abort: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self._components = components or (name,)
        self._waiting = set(self._components)
        self._env = env
        self._ready_timeout_s = ready_timeout_s
        self._grace_s = grace_s
        self._proc: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._fatal: str | None = None
        self._abort = abort  # set: stop waiting for the child to become ready

    def describe(self) -> str | None:
        return f"process {self._proc.pid}" if self._proc else None

    @property
    def child_pid(self) -> int | None:
        """The child's pid: `opmas status` expects an answer from it."""
        return self._proc.pid if self._proc else None

    async def __aenter__(self) -> Self:
        opmas = Path(sys.executable).parent / "opmas"
        self._proc = await asyncio.create_subprocess_exec(
            str(opmas),
            "run",
            *self._components,
            env={**self._env, CHILD_ENV: str(os.getpid())},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=death_signal(signal.SIGTERM),
            # not in the terminal's process group: Ctrl-C reaches the parent only (a SIG_IGN
            # set before exec would not do: uvloop's spawn resets every signal disposition)
            start_new_session=True,
        )
        self._relay = asyncio.create_task(self._relay_output())
        waits = {asyncio.create_task(self._ready.wait())}
        if self._abort is not None:
            waits.add(asyncio.create_task(self._abort.wait()))
        await asyncio.wait(
            {*waits, self._relay}, timeout=self._ready_timeout_s, return_when="FIRST_COMPLETED"
        )
        for each in waits:
            each.cancel()
        if self._abort is not None and self._abort.is_set():
            return self  # the supervisor stops; leaving terminates the child
        if not self._ready.is_set():
            await self._terminate()
            self._raise_fatal()
            raise WorkerExited(f"{self.name} process did not become ready")
        return self

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise WorkerFailed(self._fatal)

    async def _relay_output(self) -> None:
        assert self._proc is not None  # noqa: S101 - set by __aenter__
        assert self._proc.stdout is not None  # noqa: S101 - stdout=PIPE
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(READY_MARK) and line[len(READY_MARK) :].split()[0] in self._waiting:
                self._waiting.discard(line[len(READY_MARK) :].split()[0])
                if not self._waiting:
                    self._ready.set()
                continue  # the supervisor here announces it
            if line.startswith(FATAL_MARK):
                self._fatal = line[len(FATAL_MARK) :]
                continue  # the supervisor here stops and says it
            print(line, flush=True)  # noqa: T201 - relaying the child's terminal output

    async def run(self, stop: asyncio.Event) -> None:
        assert self._proc is not None  # noqa: S101 - set by __aenter__
        stopping = asyncio.create_task(stop.wait())
        exited = asyncio.create_task(self._proc.wait())
        await asyncio.wait({stopping, exited}, return_when="FIRST_COMPLETED")
        stopping.cancel()
        if not stop.is_set():
            if self._relay is not None:  # the child's last words, FATAL_MARK among them
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._relay), 1.0)
            self._raise_fatal()
            raise WorkerExited(f"{self.name} process exited with {self._proc.returncode}")

    async def __aexit__(self, *exc_info: object) -> None:
        await self._terminate()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self._grace_s + 5)
            except TimeoutError:
                log.warning("worker did not stop in time, killing it", component=self.name)
                proc.kill()
                await proc.wait()
        if self._relay is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay

"""Process status over core NATS: each running process answers `opmas.status` requests.

This is how `opmas status` sees components of `opmas up` and of `opmas run NAME` processes on
other machines alike, without knowing where they run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any, Self

import orjson

from opmas.bus.connect import Bus
from opmas.bus.scatter import gather_replies
from opmas.runtime import ComponentState


class StatusResponder:
    """Answers status requests with this process's components while it is open."""

    def __init__(self, bus: Bus, states: Callable[[], Iterable[ComponentState]]) -> None:
        self._bus = bus
        self._states = states
        self._sub: Any = None

    def snapshot(self) -> dict[str, object]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "components": [state.as_dict() for state in self._states()],
        }

    async def __aenter__(self) -> Self:
        async def _answer(msg: Any) -> None:
            if msg.reply:
                await self._bus.nc.publish(msg.reply, orjson.dumps(self.snapshot()))

        self._sub = await self._bus.nc.subscribe(self._bus.subjects.status_request, cb=_answer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def collect_status(bus: Bus, wait_s: float = 0.5) -> list[dict[str, Any]]:
    """Ask every running process for its status; gather the answers for `wait_s`."""
    replies = await gather_replies(bus, bus.subjects.status_request, b"", wait_s=wait_s)
    answers: list[dict[str, Any]] = []
    for reply in replies:  # anything not shaped like a process's answer is left out
        try:
            answer = orjson.loads(reply)
        except orjson.JSONDecodeError:
            continue
        if isinstance(answer, dict) and {"host", "pid", "components"} <= answer.keys():
            answers.append(answer)
    mark_silent_children(answers)
    return sorted(answers, key=lambda a: (str(a["host"]), int(a["pid"])))


def mark_silent_children(answers: list[dict[str, Any]]) -> None:
    """A component run in a child process whose child did not answer (stopped, hung, its
    event loop blocked) is shown NOT_ANSWERING: a silent process cannot say it itself."""
    answered = {(a["host"], a["pid"]) for a in answers}
    for answer in answers:
        for comp in answer["components"]:
            pid = comp.get("child_pid")
            if pid and comp.get("status") == "ACTIVE" and (answer["host"], pid) not in answered:
                comp["status"] = "NOT_ANSWERING"
                comp["degraded"] = (
                    f"process {pid} did not answer the status request: stopped or hung"
                )

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
    answers = [orjson.loads(reply) for reply in replies]
    return sorted(answers, key=lambda a: (a["host"], a["pid"]))

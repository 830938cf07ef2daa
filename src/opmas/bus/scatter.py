"""Scatter-gather on core NATS: one request, the replies of every process that answers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from opmas.bus.connect import Bus


async def gather_replies(
    bus: Bus, subject: str, payload: bytes, *, wait_s: float, expected: int | None = None
) -> list[bytes]:
    """Publish `payload` on `subject` and collect replies for `wait_s` seconds, or until
    `expected` replies came."""
    replies: list[bytes] = []
    enough = asyncio.Event()

    async def _collect(msg: Any) -> None:
        replies.append(msg.data)
        if expected is not None and len(replies) >= expected:
            enough.set()

    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox, cb=_collect)
    try:
        await bus.nc.publish(subject, payload, reply=inbox)
        await bus.nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), wait_s)
    finally:
        await sub.unsubscribe()
    return replies

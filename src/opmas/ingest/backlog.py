"""How far the pipeline is behind ingest: the part of `logs.raw` no consumer has read yet.

`logs.raw` discards its oldest messages when it reaches its size (`bus.logs_raw.max_bytes`),
read or not, so ingest must stop adding to it before the unread part gets there. `Backlog`
measures that part (JetStream's count of messages not yet delivered or not yet acked, for
every consumer that acks, at the stream's mean message size) at most once every
`ingest.backlog_poll_s`, adds what this process published since, and says it is full at
`ingest.max_unread_bytes` or at `ingest.max_unread_share` of the stream's size, whichever is
less; it is open again below three quarters of that.

While it is full, syslog batches are not published (they wait in the spool and in memory, so
TCP connections pause and UDP lines are dropped and counted) and POST /api/v1/logs is
answered 503 with Retry-After: the senders hold the lines, not a stream that would lose them.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import NamedTuple

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import AckPolicy

from opmas.bus.connect import Bus
from opmas.errors import BusError
from opmas.ingest.metrics import BACKLOG_FULL, UNREAD
from opmas.settings import IngestSettings

log = structlog.get_logger(__name__)

REOPEN_SHARE = 0.75  # open again below this share of both bounds


class Unread(NamedTuple):
    """Messages of `logs.raw` not yet read by its consumers, and about how many bytes."""

    messages: int
    bytes: int

    def plus(self, messages: int, nbytes: int) -> Unread:
        return Unread(self.messages + messages, self.bytes + nbytes)


async def measure_unread(bus: Bus) -> Unread:
    """The unread part of `logs.raw`: messages pending or not yet acked, summed over every
    consumer that acks (throw-away readers ack nothing and are left out); with no such
    consumer, every message in the stream. Bytes are estimated at the stream's mean size.

    Raises BusError when NATS does not answer.
    """
    name = bus.subjects.logs_raw_stream.name
    try:
        info = await bus.js.stream_info(name)
        consumers = await bus.js.consumers_info(name)
    except nats.js.errors.NotFoundError:
        return Unread(0, 0)
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusError(f"cannot read the state of {name}: {exc!r}") from exc
    readers = [c for c in consumers if c.config.ack_policy == AckPolicy.EXPLICIT]
    stored = info.state.messages
    if readers:
        unread = sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in readers)
    else:
        unread = stored
    mean = info.state.bytes / stored if stored else 0.0
    return Unread(unread, int(unread * mean))


class Backlog:
    """The bound on the unread part of `logs.raw`, measured lazily; one per process."""

    def __init__(self, bus: Bus, settings: IngestSettings) -> None:
        self._bus = bus
        bounds = [float(settings.max_unread_bytes or math.inf)]
        if bus.settings.logs_raw.max_bytes > 0:
            bounds.append(bus.settings.logs_raw.max_bytes * settings.max_unread_share)
        self.max_bytes = min(bounds)
        self.poll_s = settings.backlog_poll_s
        self._checked = -math.inf
        self._measuring: asyncio.Task[None] | None = None
        self._since = Unread(0, 0)  # published since the measure in progress began
        self.unread = Unread(0, 0)
        self.full = False

    def is_full(self) -> bool:
        """Whether ingest must hold back now. Measured again in the background when the last
        measure is older than `backlog_poll_s` (never waited for: a NATS request may hang
        through an outage); meanwhile the answer counts what was published since."""
        if time.monotonic() - self._checked >= self.poll_s and self._measuring is None:
            self._checked = time.monotonic()
            self._measuring = asyncio.create_task(self._measure(), name="ingest:backlog")
        return self.full

    async def _measure(self) -> None:
        """A failed measure keeps the last answer: the publish that follows fails too, and
        that is handled there. What this process published while the measure was out is
        added to it (the server may have counted some of it already: the bound errs low)."""
        self._since = Unread(0, 0)
        try:
            if self._bus.nc.is_connected:
                measured = await measure_unread(self._bus)
                self.update(measured.plus(*self._since))
        except BusError as exc:
            log.debug("backlog not measured", error=str(exc))
        finally:
            self._checked = time.monotonic()
            self._measuring = None

    def close(self) -> None:
        """Stop a measure in progress (the process is stopping)."""
        if self._measuring is not None:
            self._measuring.cancel()

    def published(self, messages: int, nbytes: int) -> None:
        """Count what this process just published as unread until the next measure."""
        self._since = self._since.plus(messages, nbytes)
        self.update(self.unread.plus(messages, nbytes))

    def update(self, unread: Unread) -> None:
        """Take a new measure; log the change when the bound is crossed either way."""
        self.unread = unread
        UNREAD.set(unread.bytes)
        if not self.full and unread.bytes >= self.max_bytes:
            self.full = True
            BACKLOG_FULL.set(1)
            log.warning(
                "the pipeline is behind: ingest slows the senders",
                unread_messages=unread.messages,
                unread_bytes=unread.bytes,
                max_unread_bytes=_shown(self.max_bytes),
            )
        elif self.full and unread.bytes < self.max_bytes * REOPEN_SHARE:
            self.full = False
            BACKLOG_FULL.set(0)
            log.info("the pipeline caught up: ingest takes lines again", unread_bytes=unread.bytes)

    def describe(self) -> str:
        """Why senders are slowed, for `opmas status`."""
        return f"pipeline {_megabytes(self.unread.bytes)} behind: senders slowed"


def _shown(bound: float) -> int | None:
    return None if math.isinf(bound) else int(bound)


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"

"""The watcher beside each PullConsumer: is NATS connected, and is work pending that nothing
acks? It runs as its own task, so it sees a handler stuck on a hung server."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats.errors
import structlog

from opmas.bus.connect import Bus
from opmas.bus.failures import ConsumerHealth
from opmas.errors import BusError

log = structlog.get_logger(__name__)

MAX_WATCH_INTERVAL_S = 5.0
STOP_WAIT_S = 2.0  # how long stop() waits for the watcher to end


class StallWatch:
    """Reports to `health`: an outage while NATS is disconnected, and a stall while the
    consumer has messages in hand or pending on the server and acked none for `after_s`.

    A blocked event loop or a stopped process cannot report itself: `opmas status` shows it
    as not answering instead.
    """

    def __init__(
        self, bus: Bus, stream: str, durable: str, health: ConsumerHealth, after_s: float
    ) -> None:
        self._bus = bus
        self._stream = stream
        self._durable = durable
        self._health = health
        self._after_s = after_s
        self.in_hand = 0  # fetched by the consumer, not yet through `process`
        self._progress_at = time.monotonic()  # last ack, or last time nothing was pending
        self._bus_down = False
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def progress(self) -> None:
        """A message was acked or dead-lettered."""
        self._progress_at = time.monotonic()

    def fetched(self, n: int) -> None:
        if not self.in_hand:  # work starts now: no stall before after_s from here
            self._progress_at = time.monotonic()
        self.in_hand += n

    def processed(self, n: int) -> None:
        self.in_hand = max(0, self.in_hand - n)

    def start(self) -> None:
        self._progress_at = time.monotonic()
        self._stopped.clear()
        self._task = asyncio.create_task(self._watch(), name=f"stall-watch:{self._durable}")

    async def stop(self) -> None:
        """End the watcher. Not by cancelling alone: a cancellation that reaches it inside a
        NATS request can be swallowed there, and the watcher would then never end."""
        self._stopped.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT_S)
        self._health.progressing(self._durable)
        if self._bus_down:
            self._bus_down = False
            self._health.outage_ended(f"{self._durable}/bus")

    async def _watch(self) -> None:
        interval = min(self._after_s / 4, MAX_WATCH_INTERVAL_S)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), interval)
            if self._stopped.is_set():
                return
            try:
                await self.check()
            except Exception as exc:  # the watcher must outlive whatever it watches
                log.debug("stall check failed", durable=self._durable, error=repr(exc))

    async def check(self) -> None:
        """One look: report or clear an outage of NATS and a stall."""
        connected = self._bus.nc.is_connected
        if connected == self._bus_down:
            self._bus_down = not connected
            if self._bus_down:
                self._health.outage_began(f"{self._durable}/bus", BusError("NATS disconnected"))
            else:
                self._health.outage_ended(f"{self._durable}/bus")
        pending = self.in_hand or await self._server_pending()
        now = time.monotonic()
        if not pending or self._health.in_outage:  # an outage is reported as such
            self._progress_at = now
        if pending and now - self._progress_at >= self._after_s:
            self._health.stalled(self._durable, self._progress_at, pending)
        else:
            self._health.progressing(self._durable)

    async def _server_pending(self) -> int:
        """Messages the server holds for the consumer: not yet delivered, or not yet acked."""
        if self._bus_down:
            return 0
        try:
            info = await self._bus.js.consumer_info(self._stream, self._durable)
        except (TimeoutError, nats.errors.Error):
            return 0
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

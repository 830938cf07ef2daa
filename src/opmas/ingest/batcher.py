"""Collect received lines into RawBatches and publish them on logs.raw (ingest, last step).

Each line goes to the batch of its device partition (`logs.raw.<partition>`, see
`opmas.bus.partition`). A partition's batch is sealed at `batch_size` lines; all the others
`flush_delay` after the first line waiting. So there are at most partitions / flush_delay
messages a second whatever the rate, and under load they grow instead of multiplying:
JetStream with `sync_interval: always` stores about a thousand messages a second here,
whatever their size. Lines
count as queued (in lines and in bytes) until acknowledged; when either is full, TCP pauses
and UDP drops (counted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol

import structlog

from opmas.bus.connect import Bus
from opmas.bus.partition import partition_of_item
from opmas.bus.publish import Publisher
from opmas.errors import BusError
from opmas.ingest.framing import cut_utf8
from opmas.ingest.metrics import PAUSED, PUBLISH_FAILED, PUBLISHED, QUEUED, QUEUED_BYTES
from opmas.messages import Flag, RawBatch, RawLog, encode, new_id
from opmas.settings import IngestSettings

log = structlog.get_logger(__name__)

RETRY_BASE_S = 0.1
RETRY_MAX_S = 5.0
HEADER_SLACK = 4096  # room for headers and subject within the NATS max payload


class Pausable(Protocol):
    """A connection the batcher can stop and restart reading."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def encode_batches(batch_id: str, items: list[RawLog], max_bytes: int) -> list[tuple[str, bytes]]:
    """(msg id, payload) of `items`: one message, or halves `<id>:<n>` until each fits."""
    payload = encode(RawBatch(batch_id, items))
    if len(payload) <= max_bytes:
        return [(batch_id, payload)]
    if len(items) == 1:
        item = items[0]
        cut = cut_utf8(item.line.encode()[: max_bytes // 8]).decode()
        flags = item.flags if Flag.TRUNCATED in item.flags else [Flag.TRUNCATED, *item.flags]
        smaller = RawLog(item.event_id, item.arrival_ts, cut, item.transport, item.source_ip, flags)
        return [(batch_id, encode(RawBatch(batch_id, [smaller])))]
    half = len(items) // 2
    parts = [items[:half], items[half:]]
    return [
        m
        for i, part in enumerate(parts)
        for m in encode_batches(f"{batch_id}:{i}", part, max_bytes)
    ]


class Batcher:
    """Batches lines for logs.raw and publishes them; `run(stop)` returns once all are acked.

    `add` always takes the lines (a TCP receiver cannot give bytes back) and the caller then
    checks `full`; `has_room` is asked before a line is taken that may be dropped (UDP).
    """

    def __init__(self, bus: Bus, settings: IngestSettings, *, partitions: int = 1) -> None:
        self._bus = bus
        self._batch_size = settings.batch_size
        self._flush_delay_s = settings.flush_delay_ms / 1000
        self._max_queued = settings.max_queued_lines
        self._resume_below = settings.max_queued_lines // 2
        self._max_queued_bytes = settings.max_queued_bytes
        self._resume_below_bytes = settings.max_queued_bytes // 2
        self._queued_bytes = 0
        self._max_inflight = settings.max_inflight_batches
        self._max_payload = max(bus.nc.max_payload - HEADER_SLACK, 64 * 1024)
        self._seal_bytes = self._max_payload // 2
        self._partitions = partitions
        self._current: dict[int, list[RawLog]] = {}  # partition -> lines not yet sealed
        self._current_bytes: dict[int, int] = {}
        # id, partition, lines, bytes
        self._sealed: deque[tuple[str, int, list[RawLog], int]] = deque()
        self._queued = 0
        self._paused: set[Pausable] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()

    @property
    def max_line_bytes(self) -> int:
        """Longest line a batch can carry: an encoded line may grow 6x (\\u0000 escapes)."""
        return self._max_payload // 7

    @property
    def queued(self) -> int:
        """Lines received and not yet acknowledged by JetStream."""
        return self._queued

    @property
    def queued_bytes(self) -> int:
        """Bytes of the lines received and not yet acknowledged."""
        return self._queued_bytes

    @property
    def full(self) -> bool:
        return self._queued >= self._max_queued or self._queued_bytes >= self._max_queued_bytes

    @property
    def paused(self) -> int:
        """Connections waiting for room."""
        return len(self._paused)

    def has_room(self) -> bool:
        return self._queued < self._max_queued and self._queued_bytes < self._max_queued_bytes

    def add(self, items: list[RawLog], nbytes: int) -> None:
        """Take `items` (about `nbytes` of text) into the current batch of each one's partition."""
        if not items:
            return
        share = nbytes // len(items)
        for item in items:
            self._take(item, share)
        self._queued_bytes += nbytes - share * len(items)

    def add_one(self, item: RawLog, nbytes: int) -> None:
        """`add([item], nbytes)` without building a list (the UDP path)."""
        self._take(item, nbytes)

    def _take(self, item: RawLog, nbytes: int) -> None:
        partition = partition_of_item(item, self._partitions)
        current = self._current.get(partition)
        if current is None:
            current = self._current[partition] = []
            self._current_bytes[partition] = 0
        current.append(item)
        self._queued += 1
        self._queued_bytes += nbytes
        size = self._current_bytes[partition] = self._current_bytes[partition] + nbytes
        if len(current) >= self._batch_size or size >= self._seal_bytes:
            self._seal_partition(partition)
            self._ready.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_delay_s, self._seal)

    def wait_for_room(self, who: Pausable) -> None:
        """Pause `who` until the queue has drained below half of `max_queued_lines` and of
        `max_queued_bytes`."""
        if who not in self._paused:
            self._paused.add(who)
            who.pause()
            PAUSED.set(len(self._paused))

    def forget(self, who: Pausable) -> None:
        """`who` went away (connection lost)."""
        self._paused.discard(who)
        PAUSED.set(len(self._paused))

    def _seal(self) -> None:
        """Seal every partition's current lines (the flush delay passed, or stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sealed = False
        for partition in list(self._current):
            sealed = self._seal_partition(partition) or sealed
        if sealed:
            self._ready.set()
        QUEUED.set(self._queued)
        QUEUED_BYTES.set(self._queued_bytes)

    def _seal_partition(self, partition: int) -> bool:
        current = self._current.pop(partition, None)
        nbytes = self._current_bytes.pop(partition, 0)
        if not current:
            return False
        size = self._batch_size
        for start in range(0, len(current), size):
            part = current[start : start + size]
            share = nbytes * len(part) // (len(current) - start)  # the bytes spread evenly
            nbytes -= share
            self._sealed.append((new_id(), partition, part, share))
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Publish sealed batches until `stop` is set and every received line is acknowledged.

        A failed round is retried with the same msg ids (JetStream drops the duplicates)
        until it succeeds; if cancelled meanwhile, the lines still queued are logged as lost.
        """
        publisher = Publisher(self._bus, max_pending=self._max_inflight)
        watcher = asyncio.create_task(self._wake_on(stop))
        try:
            while True:
                if not self._sealed:
                    if stop.is_set():
                        if not self._current:
                            return
                        self._seal()
                        continue
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                await self._publish_round(publisher)
        except asyncio.CancelledError:
            if self._queued:
                log.warning("lines abandoned at stop", lines=self._queued)
            raise
        finally:
            watcher.cancel()
            if self._timer is not None:
                self._timer.cancel()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._ready.set()

    async def _publish_round(self, publisher: Publisher) -> None:
        count = min(len(self._sealed), self._max_inflight)
        batches = [self._sealed.popleft() for _ in range(count)]
        subjects = self._bus.subjects
        messages = [
            (subjects.logs_raw_partition(partition), msg_id, payload)
            for bid, partition, items, _ in batches
            for msg_id, payload in encode_batches(bid, items, self._max_payload)
        ]
        attempt = 0
        while True:
            try:
                for subject, msg_id, payload in messages:
                    await publisher.publish(subject, payload, msg_id=msg_id)
                await publisher.flush()
                break
            except BusError as exc:
                with contextlib.suppress(BusError):
                    await publisher.flush()
                PUBLISH_FAILED.inc()
                attempt += 1
                delay = min(RETRY_BASE_S * 2**attempt, RETRY_MAX_S)
                log.warning(
                    "batch publish failed, retrying",
                    batches=len(batches),
                    attempt=attempt,
                    retry_in_s=delay,
                    error=str(exc),
                )
                await asyncio.sleep(delay)
        lines = sum(len(items) for _, _, items, _ in batches)
        self._queued -= lines
        self._queued_bytes -= sum(nbytes for _, _, _, nbytes in batches)
        PUBLISHED.inc(lines)
        QUEUED.set(self._queued)
        QUEUED_BYTES.set(self._queued_bytes)
        if (
            self._paused
            and self._queued <= self._resume_below
            and self._queued_bytes <= self._resume_below_bytes
        ):
            paused, self._paused = self._paused, set()
            PAUSED.set(0)
            for who in paused:
                who.resume()

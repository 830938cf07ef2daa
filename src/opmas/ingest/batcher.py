"""Collect received lines into RawBatches, spool them, publish them on logs.raw (ingest, last
step).

Each line goes to the batch of its device partition (`logs.raw.<partition>`, see
`opmas.bus.partition`). A partition's batch is sealed at `batch_size` lines; all the others
`flush_delay` after the first line waiting. So there are at most partitions / flush_delay
messages a second whatever the rate, and under load they grow instead of multiplying:
JetStream with `sync_interval: always` stores about a thousand messages a second here,
whatever their size.

Sealed batches are written to the spool (`opmas.ingest.spool`) before they are published and
deleted from it once JetStream acknowledged them. While the bus does not store them, they wait
there, not in memory, and are retried with backoff, oldest first; at a stop they stay there
for the next start. Lines in memory (not yet sealed, or kept beside their spool file) are
bounded in lines and in bytes: when either bound is reached, TCP pauses and UDP drops
(counted); when the spool is full too, sealed batches wait in memory. While the pipeline is
too far behind (`opmas.ingest.backlog`), nothing is published: the batches wait in the spool
and in memory, so the same bounds slow the senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from typing import Protocol

import structlog

from opmas.bus.connect import Bus
from opmas.bus.partition import by_partition, partition_of_item
from opmas.bus.publish import Publisher
from opmas.errors import BusError
from opmas.ingest.backlog import Backlog
from opmas.ingest.metrics import (
    PAUSED,
    PUBLISH_FAILED,
    PUBLISHED,
    QUEUED,
    QUEUED_BYTES,
    SPOOL_LOST,
    SPOOLED,
    SPOOLED_BYTES,
)
from opmas.ingest.rawbatches import HEADER_SLACK, encode_batches
from opmas.ingest.spool import Segment, Spool, SpoolRecord, frame
from opmas.messages import RawLog, new_id, raw_batch_decoder
from opmas.settings import IngestSettings

log = structlog.get_logger(__name__)

RETRY_BASE_S = 0.1
RETRY_MAX_S = 5.0

Sealed = tuple[str, int, list[RawLog], int]  # batch id, partition, lines, bytes


class Pausable(Protocol):
    """A connection the batcher can stop and restart reading."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Batcher:
    """Batches lines for logs.raw, spools and publishes them; `run(stop)` returns once every
    received line is acknowledged or in the spool.

    `add` always takes the lines (a TCP receiver cannot give bytes back) and the caller then
    checks `full`; `has_room` is asked before a line is taken that may be dropped (UDP).
    `open()` takes the files a previous run left in the spool: they are published first.
    """

    def __init__(
        self,
        bus: Bus,
        settings: IngestSettings,
        spool: Spool,
        *,
        partitions: int = 1,
        backlog: Backlog | None = None,
    ) -> None:
        self._bus = bus
        self._spool = spool
        self.backlog = backlog or Backlog(bus, settings)
        self._held_back = False  # the last publish was held back: the backlog was full
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
        self._sealed: deque[Sealed] = deque()
        self._backlog: deque[Segment] = deque()  # spooled or held, not yet acked; oldest first
        self._writing: tuple[Segment, bytes] | None = None
        self._spooled_lines = 0
        self._queued = 0
        self._attempt = 0  # failed publishes in a row
        self._retry_at = 0.0
        self._spool_refused = False
        self._paused: set[Pausable] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()  # wakes the publisher: a new segment, a stop
        self._sealed_ready = asyncio.Event()  # wakes the spool writer: a batch was sealed
        self.lost = 0  # lines lost at a stop (spool full) or in a damaged spool file

    def open(self) -> None:
        """Take the spool files a previous run left (published before any new line).

        Raises OSError when the spool directory cannot be created or read.
        """
        for segment in self._spool.open():
            self._backlog.append(segment)
            self._spooled_lines += segment.lines
        if self._backlog:
            log.info("spool replay", files=len(self._backlog), lines=self._spooled_lines)
        self._gauges()

    def close(self) -> None:
        """Release the spool for another process (after `run` returned)."""
        self.backlog.close()
        self._spool.close()

    @property
    def max_line_bytes(self) -> int:
        """Longest line a batch can carry: an encoded line may grow 6x (\\u0000 escapes)."""
        return self._max_payload // 7

    @property
    def queued(self) -> int:
        """Lines in memory: received and neither acknowledged by JetStream nor only spooled."""
        return self._queued

    @property
    def queued_bytes(self) -> int:
        """Bytes of the lines in memory."""
        return self._queued_bytes

    @property
    def spooled(self) -> int:
        """Lines in spool files, not yet acknowledged by JetStream."""
        return self._spooled_lines

    @property
    def bus_failing(self) -> bool:
        """The last publish failed: batches wait in the spool, retried with backoff."""
        return self._attempt > 0

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
            self._sealed_ready.set()
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
            self._sealed_ready.set()
        self._gauges()

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
        """Spool and publish until `stop` is set and every received line is acknowledged, or
        in the spool because the bus fails.

        Sealed batches are written to the spool as they come (one task) and published oldest
        first (another), so a slow bus never keeps them in memory only. A failed publish is
        retried with the same msg ids (JetStream drops the duplicates), with backoff.
        Cancelled meanwhile, what is in memory is written to the spool; what does not fit
        there is logged as lost.
        """
        publisher = Publisher(self._bus, max_pending=self._max_inflight)
        watcher = asyncio.create_task(self._wake_on(stop))
        writer = asyncio.create_task(self._write_loop(stop), name="ingest:spool")
        try:
            await self._publish_loop(stop, publisher, writer)
            await writer
        except asyncio.CancelledError:
            writer.cancel()
            self._keep_at_stop()
            raise
        finally:
            watcher.cancel()
            writer.cancel()
            if self._timer is not None:
                self._timer.cancel()
        self._keep_at_stop()

    async def _write_loop(self, stop: asyncio.Event) -> None:
        """Write sealed batches to the spool as soon as they are sealed; at `stop`, seal and
        write the rest, then return."""
        try:
            while True:
                if stop.is_set() and self._current:
                    self._seal()
                while self._sealed:
                    await self._spool_sealed()
                    self._ready.set()
                if stop.is_set() and not self._current:
                    return
                self._sealed_ready.clear()
                await self._sealed_ready.wait()
        finally:
            self._ready.set()  # the publisher checks whether the writer is done

    async def _publish_loop(
        self, stop: asyncio.Event, publisher: Publisher, writer: asyncio.Task[None]
    ) -> None:
        """Publish the backlog, oldest first, until `stop` and it is empty (or the bus fails:
        then it stays in the spool for the next start)."""
        while True:
            if writer.done() and not stop.is_set():
                await writer  # raises what broke it
                raise RuntimeError("the spool writer stopped")
            now = time.monotonic()
            if self._backlog and now >= self._retry_at:
                if stop.is_set() and (self.bus_failing or self._held_back):
                    return  # it stays in the spool for the next start
                if await self._hold_back(stop):
                    continue
                await self._publish_oldest(publisher)
                continue
            if stop.is_set() and writer.done() and (not self._backlog or self.bus_failing):
                return
            self._ready.clear()
            wait = self._retry_at - now if self._backlog else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait)

    async def _hold_back(self, stop: asyncio.Event) -> bool:
        """True, after a pause, while the unread part of logs.raw is at its bound: the
        backlog waits (TCP pauses once the memory bound is reached, UDP drops)."""
        self._held_back = self.backlog.is_full()
        if self._held_back:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.backlog.poll_s)
        return self._held_back

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._ready.set()
        self._sealed_ready.set()

    def _records(self, batches: list[Sealed]) -> list[SpoolRecord]:
        return [
            SpoolRecord(msg_id, partition, self._partitions, lines, payload)
            for bid, partition, items, _ in batches
            for msg_id, payload, lines in encode_batches(bid, items, self._max_payload)
        ]

    async def _spool_sealed(self) -> None:
        """Move up to `max_inflight_batches` sealed batches into one spool file; if the spool
        is full or cannot be written, they wait in memory in its place."""
        count = min(len(self._sealed), self._max_inflight)
        batches = [self._sealed.popleft() for _ in range(count)]
        records = self._records(batches)
        queued_bytes = sum(nbytes for *_, nbytes in batches)
        data = frame(records)
        if not self._spool.has_room(len(data)):
            self._hold(records, queued_bytes, "spool full: batches wait in memory")
            return
        segment, data = self._spool.reserve(records, data)
        segment.queued_bytes = queued_bytes
        self._writing = (segment, data)  # left set if cancelled: `_keep_at_stop` writes it
        try:
            await asyncio.to_thread(self._spool.write, segment, data)
        except OSError as exc:
            self._writing = None
            self._spool.release(segment)
            self._hold(records, queued_bytes, "spool not writable: batches wait in memory", exc)
            return
        self._writing = None
        if self._spool_refused:
            self._spool_refused = False
            log.info("spool writable again")
        self._add_spooled(segment)

    def _hold(
        self, records: list[SpoolRecord], queued_bytes: int, why: str, exc: OSError | None = None
    ) -> None:
        """Keep `records` in memory only, in the backlog's order (their lines stay queued)."""
        lines = sum(record.lines for record in records)
        self._backlog.append(Segment(None, lines, 0, queued_bytes, records))
        if not self._spool_refused:
            self._spool_refused = True
            log.warning(why, spool_bytes=self._spool.nbytes, error=str(exc) if exc else None)

    def _add_spooled(self, segment: Segment) -> None:
        self._backlog.append(segment)
        self._spooled_lines += segment.lines
        if self.bus_failing:
            self._uncache(segment)
        self._gauges()

    def _uncache(self, segment: Segment) -> None:
        """Free the memory of a spooled segment (read back from disk when published)."""
        if segment.path is not None and segment.records is not None:
            segment.records = None
            self._queued -= segment.lines
            self._queued_bytes -= segment.queued_bytes
            self._maybe_resume()

    async def _publish_oldest(self, publisher: Publisher) -> None:
        """Publish the oldest segment of the backlog; on failure, back off."""
        segment = self._backlog[0]
        records = segment.records
        if records is None:
            records = await asyncio.to_thread(self._spool.read, segment)
            damaged = segment.lines - sum(record.lines for record in records)
            if damaged:
                self._lose(damaged)
        try:
            for subject, msg_id, payload in self._messages(records):
                await publisher.publish(subject, payload, msg_id=msg_id)
            await publisher.flush()
        except BusError as exc:
            with contextlib.suppress(BusError):
                await publisher.flush()
            self._failed(exc)
            return
        self._backlog.popleft()
        if segment.path is not None:
            self._spool.remove(segment)
            self._spooled_lines -= segment.lines
        if segment.records is not None:
            self._queued -= segment.lines
            self._queued_bytes -= segment.queued_bytes
        PUBLISHED.inc(sum(record.lines for record in records))
        self.backlog.published(len(records), sum(len(record.payload) for record in records))
        if self._attempt:
            log.info("bus storing again", failed_attempts=self._attempt, spooled=self.spooled)
            self._attempt, self._retry_at = 0, 0.0
        self._gauges()
        self._maybe_resume()

    def _messages(self, records: list[SpoolRecord]) -> Iterator[tuple[str, str, bytes]]:
        """(subject, msg id, payload) of `records`; a batch cut for another partition count
        (the setting changed since it was spooled) is cut again."""
        subject = self._bus.subjects.logs_raw_partition
        for record in records:
            if record.partitions == self._partitions:
                yield subject(record.partition), record.msg_id, record.payload
                continue
            items = raw_batch_decoder.decode(record.payload).items
            for partition, group in sorted(by_partition(items, self._partitions).items()):
                cut_id = f"{record.msg_id}:p{partition}"
                for msg_id, payload, _ in encode_batches(cut_id, group, self._max_payload):
                    yield subject(partition), msg_id, payload

    def _failed(self, exc: BusError) -> None:
        """The bus did not store a segment: keep the backlog on disk only, retry later."""
        PUBLISH_FAILED.inc()
        self._attempt += 1
        delay = min(RETRY_BASE_S * 2**self._attempt, RETRY_MAX_S)
        self._retry_at = time.monotonic() + delay
        if self._attempt == 1:  # one line per outage, not one per retry
            log.warning(
                "bus not storing: batches wait in the spool",
                error=str(exc),
                spooled=self.spooled,
                queued=self._queued,
            )
        for segment in self._backlog:
            self._uncache(segment)
        self._gauges()

    def _keep_at_stop(self) -> None:
        """Put what is still only in memory into the spool (stopping, or cancelled): the
        lines not yet sealed, the sealed ones, the file being written; count what does not
        fit as lost."""
        if self._writing is not None:  # cancelled while its thread writes: write it here too
            segment, data = self._writing
            self._writing = None
            try:
                self._spool.write(segment, data)
            except OSError as exc:
                self._spool.release(segment)
                self._abandon(segment.lines, str(exc))
            else:
                self._add_spooled(segment)
        self._seal()
        held = [s for s in self._backlog if s.path is None and s.records is not None]
        self._backlog = deque(s for s in self._backlog if s.path is not None)
        records = [r for s in held for r in s.records or ()]
        records += self._records(list(self._sealed))
        self._sealed.clear()
        self._queued = self._queued_bytes = 0
        if records:
            self._spool_at_stop(records)
        if self.spooled:
            log.info("lines kept in the spool for the next start", lines=self.spooled)
        self._gauges()

    def _spool_at_stop(self, records: list[SpoolRecord]) -> None:
        data = frame(records)
        lines = sum(record.lines for record in records)
        if not self._spool.has_room(len(data)):
            self._abandon(lines, "spool full")
            return
        segment, data = self._spool.reserve(records, data)
        try:
            self._spool.write(segment, data)
        except OSError as exc:
            self._spool.release(segment)
            self._abandon(lines, str(exc))
            return
        self._add_spooled(segment)

    def _abandon(self, lines: int, reason: str) -> None:
        log.warning("lines abandoned at stop", lines=lines, reason=reason)
        self._lose(lines)

    def _lose(self, lines: int) -> None:
        self.lost += lines
        SPOOL_LOST.inc(lines)

    def _maybe_resume(self) -> None:
        if (
            self._paused
            and self._queued <= self._resume_below
            and self._queued_bytes <= self._resume_below_bytes
        ):
            paused, self._paused = self._paused, set()
            PAUSED.set(0)
            for who in paused:
                who.resume()

    def _gauges(self) -> None:
        QUEUED.set(self._queued)
        QUEUED_BYTES.set(self._queued_bytes)
        SPOOLED.set(self._spooled_lines)
        SPOOLED_BYTES.set(self._spool.nbytes)

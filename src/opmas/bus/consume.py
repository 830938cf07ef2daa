"""The one pull consumer every component uses: fetch a batch, run the handler, then ack.

What happens after the handler raised depends on `opmas.bus.failures.classify`: a transient
failure (PostgreSQL or NATS down) holds the batch and retries it without limit, keeping its
ack deadline alive; a bad payload is dead-lettered to `dlq.<stream>` at once; any other error
is retried `max_deliver` times, then dead-lettered. A watcher reports a consumer that has
messages pending and acks none for `stall_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge, Histogram

from opmas.bus.connect import Bus
from opmas.bus.dlq import DlqHeader, DlqKind, dlq_headers
from opmas.bus.failures import (
    ConsumerHealth,
    Failure,
    PermanentError,
    TransientError,
    classify,
)
from opmas.bus.history import replay
from opmas.bus.publish import publish
from opmas.bus.stall import StallWatch
from opmas.bus.subjects import StreamSpec
from opmas.errors import BusError, ParseError, StreamMissing

__all__ = [
    "DEFAULT_PERMANENT",
    "DlqHeader",
    "Handler",
    "Msg",
    "PermanentError",
    "ProcessResult",
    "PullConsumer",
    "TransientError",
    "dlq_headers",
    "nak_delay",
    "replay",
]

log = structlog.get_logger(__name__)

MAX_NAK_DELAY_S = 60.0
FOLLOW_UP_S = 0.005  # after the first message of a fetch, how long to wait for the rest
GATHER_S = 0.05  # the same for consumers whose cost is per batch more than per message

RECEIVED = Counter("opmas_consumer_received_total", "Messages fetched.", ["durable"])
ACKED = Counter("opmas_consumer_acked_total", "Messages acked after success.", ["durable"])
NAKED = Counter("opmas_consumer_nak_total", "Messages naked for a retry.", ["durable"])
DEAD_LETTERED = Counter(
    "opmas_consumer_dead_lettered_total", "Messages moved to dlq.<stream>.", ["durable"]
)
PROCESSING = Histogram(
    "opmas_consumer_processing_seconds", "Time to process one fetched batch.", ["durable"]
)
LAG = Gauge("opmas_consumer_lag", "Messages not yet delivered, as of the last fetch.", ["durable"])


DEFAULT_PERMANENT: tuple[type[BaseException], ...] = (
    PermanentError,
    ParseError,
    ValueError,  # includes JSON and msgspec decode errors
    TypeError,
    KeyError,
)
"""Failures that mean the payload is bad (when no outage is found in their causes)."""


class Handler(Protocol):
    """Processes a batch; returns on success (all acked), raises to signal failure.

    It must be idempotent (at-least-once delivery) and must not ack the messages itself.
    After a permanent failure of a batch it is called again with one message at a time;
    after a transient one, again with the same batch.
    """

    async def __call__(self, msgs: list[Msg], /) -> None: ...


@dataclass
class ProcessResult:
    """What `PullConsumer.process` did with a batch."""

    acked: int = 0
    naked: int = 0
    dead_lettered: int = 0
    held: int = 0  # retries of the batch after transient failures


def nak_delay(base_s: float, attempt: int) -> float:
    """Redelivery delay after failed attempt `attempt` (1-based): base * 2**(attempt-1), capped."""
    return float(min(base_s * 2 ** max(attempt - 1, 0), max(MAX_NAK_DELAY_S, base_s)))


class PullConsumer:
    """A durable pull consumer on one stream; acks only after the handler returned.

    On entry it creates or updates the durable (explicit ack, `ack_wait_s`), subscribes and
    starts a stall watcher. The server never drops a message (`max_deliver` -1 there); after
    the handler raised, `process` goes by `opmas.bus.failures.classify`:
    - transient (PostgreSQL or NATS down): the batch is held and retried, `hold_min_s`
      doubling to `hold_max_s`, without limit; `in_progress` keeps the server from
      redelivering it meanwhile; never dead-lettered;
    - permanent (bad payload): dead-lettered at once, a batch first retried one by one;
    - failed (anything else): naked with a growing delay, dead-lettered when it fails on its
      `max_deliver`-th delivery or later. A redelivery alone (the process or NATS restarted)
      never dead-letters: the message is handled again and must fail again.
    A message delivered more than `max_deliver` times is handled alone, and one delivered
    more than `max_unacked_deliveries` times (each ended with no outcome: it takes its process
    down) is dead-lettered unhandled. `health()` says why the consumer is degraded (an outage,
    or a stall: messages pending and none acked for `stall_after_s`); `health` may be shared
    by consumers that report as one. `start_time` replays from that instant: the durable is
    deleted and recreated there.
    """

    def __init__(
        self,
        bus: Bus,
        stream: StreamSpec,
        durable: str,
        *,
        filter_subject: str | None = None,
        filter_subjects: Sequence[str] | None = None,
        batch: int | None = None,
        max_deliver: int | None = None,
        max_unacked_deliveries: int | None = None,
        ack_wait_s: float | None = None,
        nak_delay_s: float | None = None,
        stall_after_s: float | None = None,
        start_time: datetime | None = None,
        permanent: tuple[type[BaseException], ...] = (),
        fetch_timeout_s: float = 1.0,
        gather_s: float = FOLLOW_UP_S,
        health: ConsumerHealth | None = None,
    ) -> None:
        if start_time is not None and start_time.tzinfo is None:
            raise ValueError("start_time must be timezone-aware")
        settings = bus.settings
        self._bus = bus
        self.stream = stream
        self.durable = durable
        if filter_subject is not None and filter_subjects:
            raise ValueError("give filter_subject or filter_subjects, not both")
        subjects = list(filter_subjects or ())
        self._filter_subject = subjects[0] if len(subjects) == 1 else filter_subject
        self._filter_subjects = subjects if len(subjects) > 1 else None
        self._batch = batch or settings.fetch_batch
        self._max_deliver = max_deliver or settings.max_deliver
        self._max_unacked = max(
            max_unacked_deliveries or settings.max_unacked_deliveries, self._max_deliver + 1
        )
        self._ack_wait_s = ack_wait_s or settings.ack_wait_s
        self._nak_delay_s = settings.nak_delay_s if nak_delay_s is None else nak_delay_s
        self._hold_min_s, self._hold_max_s = settings.hold_min_s, settings.hold_max_s
        self._start_time = start_time
        self._permanent = DEFAULT_PERMANENT + permanent
        self._fetch_timeout_s = fetch_timeout_s
        self._gather_s = gather_s  # after a fetch's first message, how long to wait for more
        self._sub: JetStreamContext.PullSubscription | None = None
        self._health = health or ConsumerHealth(durable)
        self._watch = StallWatch(
            bus, stream.name, durable, self._health, stall_after_s or settings.stall_after_s
        )

    def consumer_config(self) -> ConsumerConfig:
        """The consumer configuration this instance creates."""
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait_s,
            max_deliver=-1,  # enforced in process(), see the class docstring
            filter_subject=self._filter_subject,
            filter_subjects=self._filter_subjects,
            deliver_policy=DeliverPolicy.BY_START_TIME if self._start_time else DeliverPolicy.ALL,
            opt_start_time=self._start_time,
        )

    async def __aenter__(self) -> Self:
        js, stream = self._bus.js, self.stream.name
        config = self.consumer_config()
        try:
            if self._start_time is not None:
                await self._delete_consumer()
            else:  # keep where an existing durable starts: the server refuses to change it
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    existing = (await js.consumer_info(stream, self.durable)).config
                    config.deliver_policy = existing.deliver_policy
                    config.opt_start_time = existing.opt_start_time
                    config.opt_start_seq = existing.opt_start_seq
            await js.add_consumer(stream, config)
            self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=stream)
        except nats.js.errors.NotFoundError as exc:
            raise StreamMissing(f"stream {stream} does not exist; run ensure_streams") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusError(f"cannot create consumer {self.durable} on {stream}: {exc!r}") from exc
        self._watch.start()
        log.debug("consumer ready", stream=stream, durable=self.durable, start=self._start_time)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._watch.stop()
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except nats.errors.Error as error:  # connection already closed: nothing to release
            log.debug("consumer unsubscribe failed", durable=self.durable, error=repr(error))

    async def _delete_consumer(self) -> None:
        try:
            await self._bus.js.delete_consumer(self.stream.name, self.durable)
        except nats.js.errors.NotFoundError:
            return
        log.info("consumer reset for replay", stream=self.stream.name, durable=self.durable)

    def health(self) -> str | None:
        """None while healthy; else why this consumer (or its group) is degraded."""
        return self._health.reason()

    async def fetch(self, batch: int | None = None, timeout: float = 1.0) -> list[Msg]:  # noqa: ASYNC109
        """Up to `batch` messages, waiting at most `timeout` s; `[]` when none came.

        The messages are in hand (for stall detection) until passed through `process`.
        Raises BusError when NATS fails (not on a timeout), RuntimeError outside `async with`.
        """
        if self._sub is None:
            raise RuntimeError("PullConsumer.fetch() called outside `async with`")
        # nats-py's fetch(n) waits for n messages until `timeout` once it had to wait for the
        # first: with a trickle of messages every fetch would last `timeout`. So: wait for one,
        # then take what else is there already.
        try:
            msgs: list[Msg] = await self._sub.fetch(1, timeout=timeout)
            more = (batch or self._batch) - 1
            if more > 0:
                with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                    msgs += await self._sub.fetch(more, timeout=self._gather_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.errors.Error as exc:
            raise BusError(f"fetch from {self.stream.name}/{self.durable} failed: {exc!r}") from exc
        if msgs:
            self._watch.fetched(len(msgs))
            RECEIVED.labels(self.durable).inc(len(msgs))
            LAG.labels(self.durable).set(msgs[-1].metadata.num_pending)
        return msgs

    async def next_batch(self, stop: asyncio.Event, timeout: float | None = None) -> list[Msg]:  # noqa: ASYNC109
        """`fetch`, held through a transient failure (NATS down): retried with backoff until
        it works, or `[]` once `stop` is set. Raises BusError for any other failure."""
        delay, failing = self._hold_min_s, False
        try:
            while not stop.is_set():
                try:
                    return await self.fetch(timeout=timeout or self._fetch_timeout_s)
                except BusError as exc:
                    if classify(exc) is not Failure.TRANSIENT:
                        raise
                    if failing:
                        self._health.retried(exc)
                    else:
                        failing = True
                        self._health.outage_began(self.durable, exc)
                    await _sleep_unless(stop, delay)
                    delay = min(delay * 2, self._hold_max_s)
            return []
        finally:
            if failing:
                self._health.outage_ended(self.durable)

    async def process(
        self, msgs: list[Msg], handler: Handler, *, stop: asyncio.Event | None = None
    ) -> ProcessResult:
        """Run `handler` on `msgs`; ack, hold, nak or dead-letter each (class docstring).

        Dead-lettering publishes the message to `dlq.<stream>` (headers: `DlqHeader`), then
        terminates it. Never raises for handler errors. Once `stop` is set, a held batch is
        naked for another consumer to take; CancelledError leaves it unacked (redelivered
        after ack_wait).
        """
        result = ProcessResult()
        start = time.perf_counter()
        try:
            batch: list[Msg] = []
            alone: list[Msg] = []
            for msg in msgs:
                delivered = msg.metadata.num_delivered
                if delivered > self._max_unacked:
                    text = f"delivered {delivered} times without an outcome (process died or hung)"
                    await self._dead_letter(
                        msg, text, "MaxDeliverExceeded", DlqKind.UNACKED, result
                    )
                elif delivered > self._max_deliver:
                    alone.append(msg)  # suspect: its neighbours must not share its fate
                else:
                    batch.append(msg)
            if batch:
                await self._attempt(batch, handler, result, stop)
            for msg in alone:
                await self._attempt([msg], handler, result, stop)
        finally:
            self._watch.processed(len(msgs))
        PROCESSING.labels(self.durable).observe(time.perf_counter() - start)
        return result

    async def _attempt(
        self, msgs: list[Msg], handler: Handler, result: ProcessResult, stop: asyncio.Event | None
    ) -> None:
        """Handle `msgs`, retrying in place while the failure is transient."""
        delay, held = self._hold_min_s, False
        try:
            while True:
                try:
                    await handler(msgs)
                except Exception as exc:  # every handler error is classified, none ends the loop
                    kind = classify(exc, self._permanent)
                    if kind is not Failure.TRANSIENT:
                        await self._failed(msgs, handler, result, stop, exc, kind)
                        return
                    if held:
                        self._health.retried(exc)
                    else:
                        held = True
                        self._health.outage_began(self.durable, exc)
                    result.held += 1
                    if not await self._hold(msgs, delay, stop):
                        for msg in msgs:  # stopping: another consumer may take them now
                            await self._nak(msg, result, delay=0.0)
                        return
                    delay = min(delay * 2, self._hold_max_s)
                else:
                    for msg in msgs:
                        await self._ack(msg, result)
                    return
        finally:
            if held:
                self._health.outage_ended(self.durable)

    async def _failed(
        self,
        msgs: list[Msg],
        handler: Handler,
        result: ProcessResult,
        stop: asyncio.Event | None,
        exc: Exception,
        kind: Failure,
    ) -> None:
        """After a permanent or failed (not transient) error of the handler on `msgs`."""
        if len(msgs) == 1:
            msg = msgs[0]
            if kind is Failure.PERMANENT:
                await self._dead_letter(
                    msg, _error_text(exc), _type(exc), DlqKind.PERMANENT, result
                )
            elif msg.metadata.num_delivered >= self._max_deliver:
                await self._dead_letter(msg, _error_text(exc), _type(exc), DlqKind.FAILED, result)
            else:
                log.warning("message failed, will retry", durable=self.durable, error=repr(exc))
                await self._nak(msg, result)
            return
        if kind is Failure.PERMANENT:
            log.warning("batch failed, retrying one by one", durable=self.durable, error=repr(exc))
            for msg in msgs:
                await self._attempt([msg], handler, result, stop)
            return
        log.warning("batch failed, will retry", durable=self.durable, n=len(msgs), error=repr(exc))
        last = [msg for msg in msgs if msg.metadata.num_delivered >= self._max_deliver]
        for msg in msgs:
            if msg not in last:
                await self._nak(msg, result)
        for msg in last:  # final attempt: alone, so that neighbours are not dead-lettered
            await self._attempt([msg], handler, result, stop)

    async def _hold(self, msgs: list[Msg], seconds: float, stop: asyncio.Event | None) -> bool:
        """Wait `seconds` with `msgs` in hand, telling the server every ack_wait/3 that they
        are still being worked on; False if `stop` was set meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            for msg in msgs:
                with contextlib.suppress(nats.errors.Error):  # NATS down: it redelivers later
                    await msg.in_progress()
            left = deadline - time.monotonic()
            if left <= 0:
                return stop is None or not stop.is_set()
            step = min(left, self._ack_wait_s / 3)
            if stop is None:
                await asyncio.sleep(step)
            elif await _sleep_unless(stop, step):
                return False

    async def _ack(self, msg: Msg, result: ProcessResult) -> None:
        try:
            await msg.ack()
        except nats.errors.Error as exc:  # not acked: the server redelivers after ack_wait
            log.warning("ack failed", durable=self.durable, error=repr(exc))
            return
        self._watch.progress()
        result.acked += 1
        ACKED.labels(self.durable).inc()

    async def _nak(self, msg: Msg, result: ProcessResult, delay: float | None = None) -> None:
        if delay is None:
            delay = nak_delay(self._nak_delay_s, msg.metadata.num_delivered)
        try:
            await msg.nak(delay=delay)
        except nats.errors.Error as exc:  # the server redelivers after ack_wait anyway
            log.warning("nak failed", durable=self.durable, error=repr(exc))
            return
        result.naked += 1
        NAKED.labels(self.durable).inc()

    async def _dead_letter(
        self, msg: Msg, error: str, error_type: str, kind: DlqKind, result: ProcessResult
    ) -> None:
        """Copy `msg` to dlq.<stream>, then term it; if the copy fails, nak it to try again."""
        meta = msg.metadata
        try:
            await publish(
                self._bus,
                self._bus.subjects.dlq(self.stream.name),
                msg.data,
                msg_id=f"dlq:{meta.stream}:{self.durable}:{meta.sequence.stream}",
                headers=dlq_headers(msg, error, error_type, self.durable, kind),
            )
        except BusError as exc:
            log.error("dead letter failed", durable=self.durable, error=repr(exc))
            await self._nak(msg, result)
            return
        try:
            await msg.term()
        except nats.errors.Error as exc:  # redelivered, then deduplicated in the DLQ
            log.warning("term failed", durable=self.durable, error=repr(exc))
        self._watch.progress()
        result.dead_lettered += 1
        DEAD_LETTERED.labels(self.durable).inc()
        log.warning(
            "message dead-lettered",
            durable=self.durable,
            stream=meta.stream,
            seq=meta.sequence.stream,
            deliveries=meta.num_delivered,
            kind=str(kind),
            error=" ".join(error.split())[:1000],
        )

    async def run(self, handler: Handler, stop: asyncio.Event) -> None:
        """Fetch and process until `stop` is set; the batch in hand is finished first.

        Holds through NATS outages; raises BusError when fetching fails otherwise. Handler
        failures never end the loop.
        """
        log.debug("consumer running", stream=self.stream.name, durable=self.durable)
        while not stop.is_set():
            msgs = await self.next_batch(stop)
            if msgs:
                await self.process(msgs, handler, stop=stop)
        log.debug("consumer stopped", stream=self.stream.name, durable=self.durable)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; whether it was."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _type(exc: BaseException) -> str:
    return type(exc).__name__

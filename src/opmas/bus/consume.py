"""The one pull consumer every component uses: fetch a batch, run the handler, then ack.

Failures are retried with a growing delay until `max_deliver`, then dead-lettered to
`dlq.<stream>`; a payload that can never be handled (PermanentError) is dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
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
from opmas.bus.publish import publish
from opmas.bus.subjects import StreamSpec
from opmas.errors import BusError, OpmasError, ParseError, StreamMissing

__all__ = [
    "DEFAULT_PERMANENT",
    "DlqHeader",
    "Handler",
    "Msg",
    "PermanentError",
    "ProcessResult",
    "PullConsumer",
    "TransientError",
    "nak_delay",
    "replay",
]

log = structlog.get_logger(__name__)

MAX_NAK_DELAY_S = 60.0
FOLLOW_UP_S = 0.005  # after the first message of a fetch, how long to wait for the rest
GATHER_S = 0.05  # the same for consumers whose cost is per batch more than per message
MAX_HEADER_CHARS = 1000

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


class TransientError(OpmasError):
    """A failure that may pass (database down, timeout): retried, not dead-lettered at once."""


class PermanentError(OpmasError):
    """A message that can never be handled (bad payload): dead-lettered without a retry."""


DEFAULT_PERMANENT: tuple[type[BaseException], ...] = (
    PermanentError,
    ParseError,
    ValueError,  # includes JSON and msgspec decode errors
    TypeError,
    KeyError,
)
"""Failures that mean the payload is bad; any other exception is retried up to max_deliver."""


class DlqHeader(StrEnum):
    """Headers a dead-lettered message carries, besides its original non-`Nats-` headers."""

    ERROR = "Opmas-Dlq-Error"  # "<ExceptionType>: <text>", one line, at most 1000 chars
    ERROR_TYPE = "Opmas-Dlq-Error-Type"
    SUBJECT = "Opmas-Dlq-Subject"  # subject the message was published on
    STREAM = "Opmas-Dlq-Stream"
    SEQUENCE = "Opmas-Dlq-Sequence"  # stream sequence of the original
    DELIVERIES = "Opmas-Dlq-Deliveries"  # delivery count when it was dead-lettered
    CONSUMER = "Opmas-Dlq-Consumer"  # durable that gave up


class Handler(Protocol):
    """Processes a batch; returns on success (all acked), raises to signal failure.

    It must be idempotent (at-least-once delivery) and must not ack the messages itself.
    After a permanent failure of a batch it is called again with one message at a time.
    """

    async def __call__(self, msgs: list[Msg], /) -> None: ...


@dataclass
class ProcessResult:
    """What `PullConsumer.process` did with a batch."""

    acked: int = 0
    naked: int = 0
    dead_lettered: int = 0


def nak_delay(base_s: float, attempt: int) -> float:
    """Redelivery delay after failed attempt `attempt` (1-based): base * 2**(attempt-1), capped."""
    return float(min(base_s * 2 ** max(attempt - 1, 0), max(MAX_NAK_DELAY_S, base_s)))


def dlq_headers(msg: Msg, error: str, error_type: str, durable: str) -> dict[str, str]:
    """Headers of the dead-letter copy of `msg`: its own (minus `Nats-*`) plus `DlqHeader`s."""
    meta = msg.metadata
    headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
    headers.update(
        {
            DlqHeader.ERROR: _one_line(error),
            DlqHeader.ERROR_TYPE: _one_line(error_type),
            DlqHeader.SUBJECT: msg.subject,
            DlqHeader.STREAM: meta.stream,
            DlqHeader.SEQUENCE: str(meta.sequence.stream),
            DlqHeader.DELIVERIES: str(meta.num_delivered),
            DlqHeader.CONSUMER: durable,
        }
    )
    return headers


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_HEADER_CHARS]


class PullConsumer:
    """A durable pull consumer on one stream; acks only after the handler returned.

    On entry it creates or updates the durable (explicit ack, `ack_wait_s`) and subscribes.
    `max_deliver` (default from settings) is enforced here rather than by the server, so that
    nothing is ever dropped silently: a message that failed `max_deliver` times, or came back
    more often than that without an ack (the process crashed), goes to `dlq.<stream>`.
    `start_time` replays from that instant: the durable is deleted and recreated there.
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
        ack_wait_s: float | None = None,
        nak_delay_s: float | None = None,
        start_time: datetime | None = None,
        permanent: tuple[type[BaseException], ...] = (),
        fetch_timeout_s: float = 1.0,
        gather_s: float = FOLLOW_UP_S,
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
        self._ack_wait_s = ack_wait_s or settings.ack_wait_s
        self._nak_delay_s = settings.nak_delay_s if nak_delay_s is None else nak_delay_s
        self._start_time = start_time
        self._permanent = DEFAULT_PERMANENT + permanent
        self._fetch_timeout_s = fetch_timeout_s
        self._gather_s = gather_s  # after a fetch's first message, how long to wait for more
        self._sub: JetStreamContext.PullSubscription | None = None

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
        log.debug("consumer ready", stream=stream, durable=self.durable, start=self._start_time)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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

    async def fetch(self, batch: int | None = None, timeout: float = 1.0) -> list[Msg]:  # noqa: ASYNC109
        """Up to `batch` messages, waiting at most `timeout` s; `[]` when none came.

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
            RECEIVED.labels(self.durable).inc(len(msgs))
            LAG.labels(self.durable).set(msgs[-1].metadata.num_pending)
        return msgs

    async def process(self, msgs: list[Msg], handler: Handler) -> ProcessResult:
        """Run `handler` on `msgs`; ack, nak (with delay) or dead-letter each message.

        A batch that succeeds is acked. A failure naks the batch with delay
        `nak_delay_s * 2**(attempt-1)` until `max_deliver`; a PermanentError (bad payload)
        retries the messages one by one so that a poison message is dead-lettered alone.
        Dead-lettering publishes the message to `dlq.<stream>` (headers: `DlqHeader`), then
        terminates it. Never raises for handler
        errors; CancelledError leaves the batch unacked (redelivered after ack_wait).
        """
        result = ProcessResult()
        start = time.perf_counter()
        live: list[Msg] = []
        for msg in msgs:
            if msg.metadata.num_delivered > self._max_deliver:
                text = f"delivered {msg.metadata.num_delivered} times without an ack"
                await self._dead_letter(msg, text, "MaxDeliverExceeded", result)
            else:
                live.append(msg)
        if live:
            await self._process_batch(live, handler, result)
        PROCESSING.labels(self.durable).observe(time.perf_counter() - start)
        return result

    async def _process_batch(
        self, msgs: list[Msg], handler: Handler, result: ProcessResult
    ) -> None:
        try:
            await handler(msgs)
        except self._permanent as exc:
            if len(msgs) == 1:
                await self._dead_letter(msgs[0], _error_text(exc), type(exc).__name__, result)
                return
            log.warning("batch failed, retrying one by one", durable=self.durable, error=repr(exc))
            for msg in msgs:
                await self._process_one(msg, handler, result)
        except Exception as exc:  # anything not permanent may pass: retry later
            log.warning(
                "batch failed, will retry", durable=self.durable, n=len(msgs), error=repr(exc)
            )
            last: list[Msg] = []
            for msg in msgs:
                if msg.metadata.num_delivered >= self._max_deliver:
                    last.append(msg)
                else:
                    await self._nak(msg, result)
            for msg in last:  # final attempt: alone, so that neighbours are not dead-lettered
                if len(msgs) == 1:
                    await self._dead_letter(msg, _error_text(exc), type(exc).__name__, result)
                else:
                    await self._process_one(msg, handler, result)
        else:
            for msg in msgs:
                await self._ack(msg, result)

    async def _process_one(self, msg: Msg, handler: Handler, result: ProcessResult) -> None:
        try:
            await handler([msg])
        except self._permanent as exc:
            await self._dead_letter(msg, _error_text(exc), type(exc).__name__, result)
        except Exception as exc:  # anything not permanent may pass: retry later
            if msg.metadata.num_delivered >= self._max_deliver:
                await self._dead_letter(msg, _error_text(exc), type(exc).__name__, result)
            else:
                await self._nak(msg, result)
        else:
            await self._ack(msg, result)

    async def _ack(self, msg: Msg, result: ProcessResult) -> None:
        try:
            await msg.ack()
        except nats.errors.Error as exc:  # not acked: the server redelivers after ack_wait
            log.warning("ack failed", durable=self.durable, error=repr(exc))
            return
        result.acked += 1
        ACKED.labels(self.durable).inc()

    async def _nak(self, msg: Msg, result: ProcessResult) -> None:
        delay = nak_delay(self._nak_delay_s, msg.metadata.num_delivered)
        try:
            await msg.nak(delay=delay)
        except nats.errors.Error as exc:  # the server redelivers after ack_wait anyway
            log.warning("nak failed", durable=self.durable, error=repr(exc))
            return
        result.naked += 1
        NAKED.labels(self.durable).inc()

    async def _dead_letter(
        self, msg: Msg, error: str, error_type: str, result: ProcessResult
    ) -> None:
        """Copy `msg` to dlq.<stream>, then term it; if the copy fails, nak it to try again."""
        meta = msg.metadata
        try:
            await publish(
                self._bus,
                self._bus.subjects.dlq(self.stream.name),
                msg.data,
                msg_id=f"dlq:{meta.stream}:{self.durable}:{meta.sequence.stream}",
                headers=dlq_headers(msg, error, error_type, self.durable),
            )
        except BusError as exc:
            log.error("dead letter failed", durable=self.durable, error=repr(exc))
            await self._nak(msg, result)
            return
        try:
            await msg.term()
        except nats.errors.Error as exc:  # redelivered, then deduplicated in the DLQ
            log.warning("term failed", durable=self.durable, error=repr(exc))
        result.dead_lettered += 1
        DEAD_LETTERED.labels(self.durable).inc()
        log.warning(
            "message dead-lettered",
            durable=self.durable,
            stream=meta.stream,
            seq=meta.sequence.stream,
            deliveries=meta.num_delivered,
            error=_one_line(error),
        )

    async def run(self, handler: Handler, stop: asyncio.Event) -> None:
        """Fetch and process until `stop` is set; the batch in hand is finished first.

        Raises BusError when fetching fails; handler failures never end the loop.
        """
        log.debug("consumer running", stream=self.stream.name, durable=self.durable)
        while not stop.is_set():
            msgs = await self.fetch(timeout=self._fetch_timeout_s)
            if msgs:
                await self.process(msgs, handler)
        log.debug("consumer stopped", stream=self.stream.name, durable=self.durable)


async def replay(
    bus: Bus,
    stream: StreamSpec,
    *,
    filter_subjects: Sequence[str],
    start_time: datetime,
    last_seq: int,
    batch: int = 500,
) -> AsyncIterator[list[Msg]]:
    """Batches of `stream` from `start_time` through stream sequence `last_seq`, read by a
    throw-away consumer that acks nothing: to rebuild in-memory state, not to process.

    Raises BusError when NATS fails.
    """
    js = bus.js
    name = f"replay-{uuid.uuid4().hex[:16]}"
    subjects = list(filter_subjects)
    config = ConsumerConfig(
        name=name,
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=start_time,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
    )
    try:
        await js.add_consumer(stream.name, config)
        sub = await js.pull_subscribe_bind(durable=name, stream=stream.name)
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusError(f"cannot replay {stream.name}: {exc!r}") from exc
    try:
        while True:
            try:
                msgs: list[Msg] = await sub.fetch(batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            except nats.errors.Error as exc:
                raise BusError(f"replay of {stream.name} failed: {exc!r}") from exc
            wanted = [m for m in msgs if m.metadata.sequence.stream <= last_seq]
            if wanted:
                yield wanted
            if len(wanted) < len(msgs) or not msgs or msgs[-1].metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            await sub.unsubscribe()
            await js.delete_consumer(stream.name, name)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

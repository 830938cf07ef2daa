"""Publish to JetStream and wait for the PubAck: one at a time, or pipelined with `Publisher`."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import Header, PubAck
from prometheus_client import Counter

from opmas.bus.connect import Bus
from opmas.errors import BusError, PublishTimeout, StreamMissing

__all__ = ["DEFAULT_MAX_PENDING", "PubAck", "Publisher", "publish"]

log = structlog.get_logger(__name__)

DEFAULT_MAX_PENDING = 1000

PUBLISHED = Counter(
    "opmas_bus_published_total",
    "Messages JetStream acknowledged, by subject root (e.g. logs.parsed).",
    ["subject_root"],
)
PUBLISH_FAILED = Counter(
    "opmas_bus_publish_failed_total",
    "Publishes that got no PubAck or an error, by subject root.",
    ["subject_root"],
)


async def publish(
    bus: Bus,
    subject: str,
    payload: bytes,
    *,
    msg_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> PubAck:
    """Publish one message and return its PubAck once JetStream stored it.

    `msg_id` becomes the `Nats-Msg-Id` header: a repeat within the stream's duplicate window
    is acknowledged (`PubAck.duplicate`) but not stored again. Raises PublishTimeout when no
    PubAck arrives within `publish_timeout_s`, StreamMissing when no stream captures
    `subject`, BusError on any other NATS failure.
    """
    root = bus.subjects.root(subject)
    try:
        ack: PubAck = await bus.js.publish(
            subject,
            payload,
            timeout=bus.settings.publish_timeout_s,
            headers=_headers(msg_id, headers),
        )
    except (TimeoutError, nats.errors.Error) as exc:
        PUBLISH_FAILED.labels(root).inc()
        raise publish_error(subject, exc, bus.settings.publish_timeout_s) from exc
    PUBLISHED.labels(root).inc()
    return ack


class Publisher:
    """Pipelined publisher for the hot path: many publishes in flight, PubAcks in `flush()`.

    Uses nats-py's `JetStreamContext.publish_async`: each `publish()` writes the message and
    returns at once; `flush()` waits for every PubAck and is the moment the caller may treat the
    messages as stored. At most `max_pending` publishes are outstanding: beyond that,
    `publish()` first waits for the earlier ones (their failures still surface in `flush()`).
    """

    def __init__(self, bus: Bus, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._bus = bus
        self._max_pending = max_pending
        self._pending: list[tuple[str, str, asyncio.Future[PubAck]]] = []
        self._acks: list[PubAck] = []
        self._errors: list[BusError] = []

    @property
    def pending(self) -> int:
        """Publishes sent and not yet settled by `flush()`."""
        return len(self._pending)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send one message without waiting for its PubAck; see `publish()` for `msg_id`.

        Raises PublishTimeout or BusError only when the message could not even be sent.
        """
        if len(self._pending) >= self._max_pending:
            await self._settle()
        timeout = self._bus.settings.publish_timeout_s
        try:
            future = await self._bus.js.publish_async(
                subject, payload, wait_stall=timeout, headers=_headers(msg_id, headers)
            )
        except (TimeoutError, nats.errors.Error) as exc:
            PUBLISH_FAILED.labels(self._bus.subjects.root(subject)).inc()
            raise publish_error(subject, exc, timeout) from exc
        self._pending.append((subject, self._bus.subjects.root(subject), future))

    async def flush(self) -> list[PubAck]:
        """Wait for every outstanding PubAck and return them in publish order.

        Raises PublishTimeout when some PubAck did not arrive within `publish_timeout_s`, or
        BusError when JetStream refused a message; the publisher is empty afterwards either way.
        """
        await self._settle()
        acks, errors = self._acks, self._errors
        self._acks, self._errors = [], []
        if errors:
            first = errors[0]
            message = f"{len(errors)} of {len(acks) + len(errors)} publishes failed; first: {first}"
            raise type(first)(message) from first
        return acks

    async def _settle(self) -> None:
        """Wait for the pending futures; record each PubAck or error, in order."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        timeout = self._bus.settings.publish_timeout_s
        await asyncio.wait([future for _, _, future in pending], timeout=timeout)
        for subject, root, future in pending:
            if not future.done():
                future.cancel()  # frees nats-py's slot for it
                error: BusError = PublishTimeout(f"no PubAck for {subject} within {timeout} s")
            elif (exc := future.exception()) is not None:
                error = publish_error(subject, exc, timeout)
            else:
                self._acks.append(future.result())
                PUBLISHED.labels(root).inc()
                continue
            PUBLISH_FAILED.labels(root).inc()
            self._errors.append(error)
            log.warning("publish failed", subject=subject, error=str(error))


def publish_error(subject: str, exc: BaseException, timeout: float) -> BusError:
    """The OPMAS error for a nats-py publish failure."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return StreamMissing(f"no stream captures subject {subject}")
    if isinstance(exc, asyncio.TimeoutError | nats.js.errors.TooManyStalledMsgsError):
        return PublishTimeout(f"no PubAck for {subject} within {timeout} s")
    return BusError(f"publish to {subject} failed: {exc!r}")


def _headers(msg_id: str | None, headers: dict[str, str] | None) -> dict[str, str] | None:
    if msg_id is None:
        return dict(headers) if headers else None
    return {**(headers or {}), Header.MSG_ID.value: msg_id}

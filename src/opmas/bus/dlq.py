"""Dead letters: messages that can never succeed, kept on `dlq.<stream>` (stream DLQ) for the
operator to list, show, replay to where they came from, or drop (`opmas dlq`, the API later).

A consumer dead-letters a copy of the message with `DlqHeader`s saying where it came from and
why; only a bad payload, an error that is no outage repeated `max_deliver` times, or a message
that took its process down `max_unacked_deliveries` times get there (`opmas.bus.failures`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck

from opmas.bus.connect import Bus
from opmas.bus.failures import PermanentError, was_transient
from opmas.bus.history import read_through
from opmas.bus.publish import publish
from opmas.errors import BusError, NotFound

__all__ = [
    "DeadLetter",
    "DlqHeader",
    "DlqKind",
    "dead_letter",
    "dead_letters",
    "dlq_headers",
    "drop",
    "replay",
    "replay_outages",
]

log = structlog.get_logger(__name__)

MAX_HEADER_CHARS = 1000
SCAN_BATCH = 256


class DlqHeader(StrEnum):
    """Headers a dead-lettered message carries, besides its original non-`Nats-` headers."""

    ERROR = "Opmas-Dlq-Error"  # "<ExceptionType>: <text>", one line, at most 1000 chars
    ERROR_TYPE = "Opmas-Dlq-Error-Type"
    KIND = "Opmas-Dlq-Kind"  # DlqKind; absent on letters of versions that held no outage
    SUBJECT = "Opmas-Dlq-Subject"  # subject the message was published on
    STREAM = "Opmas-Dlq-Stream"
    SEQUENCE = "Opmas-Dlq-Sequence"  # stream sequence of the original
    MSG_ID = "Opmas-Dlq-Msg-Id"  # the original's Nats-Msg-Id, if it had one
    DELIVERIES = "Opmas-Dlq-Deliveries"  # delivery count when it was dead-lettered
    CONSUMER = "Opmas-Dlq-Consumer"  # durable that gave up


class DlqKind(StrEnum):
    """Why a message was dead-lettered."""

    PERMANENT = "permanent"  # a bad payload, or data the database refuses
    FAILED = "failed"  # an error that is no outage, `max_deliver` times
    UNACKED = "unacked"  # delivered `max_unacked_deliveries` times with no outcome (crashes)


def dlq_headers(
    msg: Msg, error: str, error_type: str, durable: str, kind: DlqKind = DlqKind.FAILED
) -> dict[str, str]:
    """Headers of the dead-letter copy of `msg`: its own (minus `Nats-*`) plus `DlqHeader`s."""
    meta = msg.metadata
    original = msg.headers or {}
    headers = {k: v for k, v in original.items() if not k.startswith("Nats-")}
    headers.update(
        {
            DlqHeader.ERROR: _one_line(error),
            DlqHeader.ERROR_TYPE: _one_line(error_type),
            DlqHeader.KIND: kind,
            DlqHeader.SUBJECT: msg.subject,
            DlqHeader.STREAM: meta.stream,
            DlqHeader.SEQUENCE: str(meta.sequence.stream),
            DlqHeader.DELIVERIES: str(meta.num_delivered),
            DlqHeader.CONSUMER: durable,
        }
    )
    if "Nats-Msg-Id" in original:
        headers[DlqHeader.MSG_ID] = _one_line(original["Nats-Msg-Id"])
    return headers


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_HEADER_CHARS]


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ stream; `data` is empty when listed without payloads."""

    seq: int  # in the DLQ stream: what `show`, `replay` and `drop` take
    stream: str  # where the original was
    subject: str  # where the original was published, and where a replay goes
    original_seq: int | None
    error: str
    error_type: str
    kind: str | None
    deliveries: int | None
    consumer: str
    time: datetime | None
    size: int
    headers: dict[str, str] = field(repr=False)
    data: bytes = field(default=b"", repr=False)

    @classmethod
    def from_message(
        cls, seq: int, headers: dict[str, str], data: bytes, size: int, when: datetime | None
    ) -> DeadLetter:
        def number(header: DlqHeader) -> int | None:
            value = headers.get(header, "")
            return int(value) if value.isdigit() else None

        return cls(
            seq=seq,
            stream=headers.get(DlqHeader.STREAM, ""),
            subject=headers.get(DlqHeader.SUBJECT, ""),
            original_seq=number(DlqHeader.SEQUENCE),
            error=headers.get(DlqHeader.ERROR, ""),
            error_type=headers.get(DlqHeader.ERROR_TYPE, ""),
            kind=headers.get(DlqHeader.KIND),
            deliveries=number(DlqHeader.DELIVERIES),
            consumer=headers.get(DlqHeader.CONSUMER, ""),
            time=when,
            size=size,
            headers={k: v for k, v in headers.items() if not k.startswith("Nats-")},
            data=data,
        )

    @property
    def outage(self) -> bool:
        """Dead-lettered for an outage by a version that did not hold them: to replay."""
        return self.kind is None and was_transient(self.error_type, self.error)

    def summary(self) -> dict[str, Any]:
        """Plain data for --json and the API (payload excluded)."""
        return {
            "seq": self.seq,
            "stream": self.stream,
            "subject": self.subject,
            "original_seq": self.original_seq,
            "error_type": self.error_type,
            "error": self.error,
            "kind": self.kind,
            "deliveries": self.deliveries,
            "consumer": self.consumer,
            "time": self.time.isoformat() if self.time else None,
            "size": self.size,
        }


def stream_name(bus: Bus, name: str) -> str:
    """The full name of stream `name` (`LOGS_RAW`, or as namespaced); raises NotFound."""
    for spec in bus.subjects.streams():
        if name in (spec.name, spec.name.split("_", 1)[-1] if bus.subjects.namespace else ""):
            return spec.name
    known = ", ".join(spec.name for spec in bus.subjects.streams())
    raise NotFound(f"no stream {name!r}; known: {known}")


async def dead_letters(
    bus: Bus, *, stream: str | None = None, limit: int = 100
) -> list[DeadLetter]:
    """The oldest `limit` dead letters (of `stream`'s messages only, if given), no payloads.

    Raises NotFound for an unknown stream, BusError when NATS fails.
    """
    subject = bus.subjects.dlq(stream_name(bus, stream) if stream else ">")
    found: list[DeadLetter] = []
    async for msg in _scan(bus, subject, headers_only=True):
        headers = dict(msg.headers or {})
        size = int(headers.get("Nats-Msg-Size", "0") or 0)
        when = msg.metadata.timestamp
        found.append(
            DeadLetter.from_message(msg.metadata.sequence.stream, headers, b"", size, when)
        )
        if len(found) >= limit:
            break
    return found


async def dead_letter(bus: Bus, seq: int) -> DeadLetter:
    """Dead letter `seq` with its payload; raises NotFound, or BusError when NATS fails."""
    dlq = bus.subjects.dlq_stream.name
    try:
        raw = await bus.js.get_msg(dlq, seq)
    except nats.js.errors.NotFoundError:
        raise NotFound(f"no dead letter {seq} in {dlq}") from None
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusError(f"cannot read dead letter {seq}: {exc!r}") from exc
    data = raw.data or b""
    return DeadLetter.from_message(seq, dict(raw.headers or {}), data, len(data), raw.time)


async def replay(bus: Bus, seq: int) -> PubAck:
    """Publish dead letter `seq`'s payload again where it came from, then delete it.

    The copy's `Nats-Msg-Id` is `replay:<stream>:<original seq>`, so replaying one message
    twice within the duplicate window stores it once (after it, the consumers' idempotent
    writes do). Raises NotFound (no such letter, or no subject recorded), BusError.
    """
    letter = await dead_letter(bus, seq)
    if not letter.subject:
        raise NotFound(f"dead letter {seq} does not say where it came from ({DlqHeader.SUBJECT})")
    origin = letter.original_seq if letter.original_seq is not None else f"dlq{seq}"
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("Opmas-Dlq-")}
    ack = await publish(
        bus,
        letter.subject,
        letter.data,
        msg_id=f"replay:{letter.stream}:{origin}",
        headers=headers or None,
    )
    await drop(bus, seq, missing_ok=True)
    log.debug("dead letter replayed", seq=seq, subject=letter.subject, stream_seq=ack.seq)
    return ack


async def drop(bus: Bus, seq: int, *, missing_ok: bool = False) -> None:
    """Delete dead letter `seq`; raises NotFound (unless `missing_ok`), BusError."""
    dlq = bus.subjects.dlq_stream.name
    try:
        await bus.js.delete_msg(dlq, seq)
    except nats.js.errors.NotFoundError:
        if not missing_ok:
            raise NotFound(f"no dead letter {seq} in {dlq}") from None
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusError(f"cannot delete dead letter {seq}: {exc!r}") from exc


async def replay_outages(
    bus: Bus, take: Mapping[str, Callable[[DeadLetter], Awaitable[None]]] | None = None
) -> dict[str, int]:
    """Upgrade step: replay every dead letter an older version wrote for an outage (no
    `DlqHeader.KIND`, an error `was_transient`); a count per original stream. `take` maps a
    stream whose consumer is gone to what handles its letters instead (then they are deleted).

    Idempotent: those replayed are deleted, and letters written since carry a kind. Raises
    BusError when NATS fails, or what `take` raises (what was replayed stays replayed).
    """
    take = take or {}
    seqs: list[int] = []
    async for msg in _scan(bus, bus.subjects.dlq(">"), headers_only=True):
        headers = dict(msg.headers or {})
        letter = DeadLetter.from_message(msg.metadata.sequence.stream, headers, b"", 0, None)
        if letter.outage and letter.subject:
            seqs.append(letter.seq)
    counts: dict[str, int] = {}
    for seq in seqs:
        try:
            letter = await dead_letter(bus, seq)
            handler = take.get(letter.stream)
            if handler is None:
                await replay(bus, seq)
            else:
                await handler(letter)
                await drop(bus, seq, missing_ok=True)
        except NotFound:  # another worker replayed it meanwhile
            continue
        except PermanentError as exc:  # it cannot be stored after all: left for the operator
            log.warning("dead letter left in place", seq=seq, error=str(exc))
            continue
        counts[letter.stream] = counts.get(letter.stream, 0) + 1
    if counts:
        log.info("dead letters of past outages replayed", **counts)
    return counts


async def _scan(bus: Bus, subject: str, *, headers_only: bool) -> AsyncIterator[Msg]:
    """Every message of the DLQ stream on `subject`, oldest first, through a throw-away
    consumer that acks nothing (works on servers without direct get)."""
    config = ConsumerConfig(
        name=f"dlq-scan-{uuid.uuid4().hex[:16]}",
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=subject,
        headers_only=headers_only,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    batches = read_through(bus, bus.subjects.dlq_stream.name, config, batch=SCAN_BATCH)
    async with contextlib.aclosing(batches):
        async for msgs in batches:
            for msg in msgs:
                yield msg

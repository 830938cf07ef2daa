"""Reading a stream's history again without acking it: agents rebuild their windows so."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from opmas.bus.connect import Bus
from opmas.bus.subjects import StreamSpec
from opmas.errors import BusError


async def read_through(
    bus: Bus, stream: str, config: ConsumerConfig, *, batch: int
) -> AsyncGenerator[list[Msg], None]:
    """Batches of `stream` read by the throw-away consumer `config` (ack policy NONE) until
    nothing is pending; the consumer is deleted when the reading ends, however it ends.

    Raises BusError when NATS fails.
    """
    js, name = bus.js, config.name
    if name is None:
        raise ValueError("a throw-away consumer needs a name (to delete it)")
    try:
        info = await js.add_consumer(stream, config)
        if not info.num_pending:
            await js.delete_consumer(stream, name)
            return
        sub = await js.pull_subscribe_bind(durable=name, stream=stream)
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusError(f"cannot read {stream}: {exc!r}") from exc
    try:
        while True:
            try:
                msgs: list[Msg] = await sub.fetch(batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                return
            except nats.errors.Error as exc:
                raise BusError(f"reading {stream} failed: {exc!r}") from exc
            if msgs:
                yield msgs
            if not msgs or msgs[-1].metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            await sub.unsubscribe()
            await js.delete_consumer(stream, name)


async def replay(
    bus: Bus,
    stream: StreamSpec,
    *,
    filter_subjects: Sequence[str],
    start_time: datetime,
    last_seq: int,
    batch: int = 16,
) -> AsyncIterator[list[Msg]]:
    """Batches of `stream` from `start_time` through stream sequence `last_seq`, read by a
    throw-away consumer that acks nothing: to rebuild in-memory state, not to process.
    `batch` messages at a time: a logs.raw message may hold 250 KB, and nats-server cuts off
    a client with more than 64 MiB pushed and not read yet.

    Raises BusError when NATS fails.
    """
    subjects = list(filter_subjects)
    config = ConsumerConfig(
        name=f"replay-{uuid.uuid4().hex[:16]}",
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=start_time,
        inactive_threshold=30.0,
        mem_storage=True,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
    )
    batches = read_through(bus, stream.name, config, batch=batch)
    async with contextlib.aclosing(batches):
        async for msgs in batches:
            wanted = [m for m in msgs if m.metadata.sequence.stream <= last_seq]
            if wanted:
                yield wanted
            if len(wanted) < len(msgs):
                return

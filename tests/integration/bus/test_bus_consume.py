"""PullConsumer: ack after success, retries, dead letters, batch fallback, drain, replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from nats.aio.msg import Msg

from opmas.bus.connect import Bus
from opmas.bus.consume import DlqHeader, PullConsumer, TransientError
from opmas.bus.publish import publish

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 3.0) -> None:
    """Wait until `check()` is true (the server applies acks asynchronously)."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def publish_raw(bus: Bus, *payloads: bytes) -> None:
    for payload in payloads:
        await publish(bus, bus.subjects.logs_raw, payload)


async def dlq_messages(bus: Bus) -> list[tuple[bytes, dict[str, str]]]:
    info = await bus.js.stream_info(bus.subjects.dlq_stream.name)
    if info.state.messages == 0:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        stored = await bus.js.get_msg(bus.subjects.dlq_stream.name, seq)
        out.append((stored.data or b"", dict(stored.headers or {})))
    return out


async def settled(consumer: PullConsumer) -> bool:
    """Nothing left to deliver and nothing waiting for an ack."""
    info = await consumer._bus.js.consumer_info(consumer.stream.name, consumer.durable)
    return info.num_ack_pending == 0 and info.num_pending == 0


async def drive(consumer: PullConsumer, handler: Callable[[list[Msg]], Awaitable[None]]) -> None:
    """Fetch and process until the consumer has nothing pending or unacked."""
    deadline = time.monotonic() + 4.0
    while not await settled(consumer):
        assert time.monotonic() < deadline, "consumer did not settle"
        await consumer.process(await consumer.fetch(timeout=0.3), handler)


async def test_fetch_returns_empty_list_on_timeout(bus: Bus) -> None:
    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:
        assert await consumer.fetch(timeout=0.2) == []


async def test_success_acks_the_batch(bus: Bus) -> None:
    await publish_raw(bus, b"a", b"b", b"c")
    seen: list[bytes] = []

    async def handler(msgs: list[Msg]) -> None:
        seen.extend(m.data for m in msgs)

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:
        result = await consumer.process(await consumer.fetch(), handler)
        assert result.acked == 3
        await eventually(lambda: settled(consumer))
    assert seen == [b"a", b"b", b"c"]
    assert await dlq_messages(bus) == []


async def test_ack_only_after_handler_returned(bus: Bus) -> None:
    await publish_raw(bus, b"a", b"b")
    during: list[int | None] = []

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:

        async def handler(msgs: list[Msg]) -> None:
            info = await bus.js.consumer_info(consumer.stream.name, consumer.durable)
            during.append(info.num_ack_pending)

        await consumer.process(await consumer.fetch(), handler)
        await eventually(lambda: settled(consumer))
    assert during == [2]


@pytest.mark.parametrize("error", [TransientError, RuntimeError])
async def test_always_failing_message_is_dead_lettered_after_max_deliver(
    bus: Bus, error: type[Exception]
) -> None:
    await publish_raw(bus, b"doomed")
    calls = 0

    async def handler(msgs: list[Msg]) -> None:
        nonlocal calls
        calls += 1
        raise error("database down\nsecond line")

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:
        await drive(consumer, handler)
        assert await consumer.fetch(timeout=0.5) == []  # not redelivered

    assert calls == bus.settings.max_deliver
    [(data, headers)] = await dlq_messages(bus)
    assert data == b"doomed"
    assert headers[DlqHeader.ERROR] == f"{error.__name__}: database down second line"
    assert headers[DlqHeader.ERROR_TYPE] == error.__name__
    assert headers[DlqHeader.SUBJECT] == bus.subjects.logs_raw
    assert headers[DlqHeader.STREAM] == bus.subjects.logs_raw_stream.name
    assert headers[DlqHeader.SEQUENCE] == "1"
    assert headers[DlqHeader.DELIVERIES] == str(bus.settings.max_deliver)
    assert headers[DlqHeader.CONSUMER] == "parser"


async def test_permanent_failure_is_dead_lettered_at_once(bus: Bus) -> None:
    await publish_raw(bus, b"bad")

    async def handler(msgs: list[Msg]) -> None:
        raise ValueError("cannot decode")

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:
        result = await consumer.process(await consumer.fetch(), handler)
        assert result.dead_lettered == 1
        await eventually(lambda: settled(consumer))

    [(_, headers)] = await dlq_messages(bus)
    assert headers[DlqHeader.DELIVERIES] == "1"
    assert headers[DlqHeader.ERROR] == "ValueError: cannot decode"


async def test_transient_failure_is_retried_then_acked(bus: Bus) -> None:
    await publish_raw(bus, b"x")
    attempts: list[int] = []

    async def handler(msgs: list[Msg]) -> None:
        attempts.append(msgs[0].metadata.num_delivered)
        if len(attempts) == 1:
            raise TransientError("database down")

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:
        first = await consumer.process(await consumer.fetch(), handler)
        assert first.naked == 1
        await drive(consumer, handler)

    assert attempts == [1, 2]
    assert await dlq_messages(bus) == []


async def test_poison_message_is_dead_lettered_alone(bus: Bus) -> None:
    await publish_raw(bus, b"ok1", b"ok2", b"poison", b"ok3", b"ok4")
    stored: list[bytes] = []

    async def handler(msgs: list[Msg]) -> None:
        if any(m.data == b"poison" for m in msgs):
            raise ValueError("poison in batch")
        stored.extend(m.data for m in msgs)

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:
        result = await consumer.process(await consumer.fetch(), handler)
        await eventually(lambda: settled(consumer))

    assert (result.acked, result.naked, result.dead_lettered) == (4, 0, 1)
    assert stored == [b"ok1", b"ok2", b"ok3", b"ok4"]
    [(data, headers)] = await dlq_messages(bus)
    assert data == b"poison"
    assert headers[DlqHeader.SEQUENCE] == "3"


async def test_message_never_acked_is_dead_lettered_after_max_deliver(bus: Bus) -> None:
    """A handler that hangs or crashes the process: redelivered, then dead-lettered unseen."""
    await publish_raw(bus, b"crasher")
    consumer = PullConsumer(
        bus, bus.subjects.logs_raw_stream, "parser", max_deliver=1, ack_wait_s=0.3
    )

    async def handler(msgs: list[Msg]) -> None:
        raise AssertionError("must not be called again")

    async with consumer:
        [msg] = await consumer.fetch()  # "crash": never acked
        assert msg.metadata.num_delivered == 1
        [again] = await consumer.fetch(timeout=2.0)
        result = await consumer.process([again], handler)

    assert result.dead_lettered == 1
    [(_, headers)] = await dlq_messages(bus)
    assert headers[DlqHeader.ERROR_TYPE] == "MaxDeliverExceeded"
    assert headers[DlqHeader.DELIVERIES] == "2"


async def test_stop_drains_the_batch_in_hand(bus: Bus) -> None:
    await publish_raw(bus, *(f"m{i}".encode() for i in range(6)))
    stop = asyncio.Event()
    handled: list[bytes] = []

    async def handler(msgs: list[Msg]) -> None:
        stop.set()  # stop arrives while this batch is being processed
        await asyncio.sleep(0.2)
        handled.extend(m.data for m in msgs)

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser", batch=4) as consumer:
        await asyncio.wait_for(consumer.run(handler, stop), timeout=5)

        assert handled == [b"m0", b"m1", b"m2", b"m3"]

        async def drained() -> bool:
            info = await bus.js.consumer_info(consumer.stream.name, consumer.durable)
            return info.num_ack_pending == 0 and info.num_pending == 2

        await eventually(drained)


async def test_start_time_replays_already_acked_messages(bus: Bus) -> None:
    start = datetime.now(UTC)
    await publish_raw(bus, b"old1", b"old2")

    async def ack_all(msgs: list[Msg]) -> None:
        return None

    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "wifi") as consumer:
        await consumer.process(await consumer.fetch(), ack_all)
        await eventually(lambda: settled(consumer))

    replay = PullConsumer(bus, bus.subjects.logs_raw_stream, "wifi", start_time=start)
    async with replay:
        msgs = await replay.fetch()
    assert [m.data for m in msgs] == [b"old1", b"old2"]


async def test_filter_subject_limits_delivery(bus: Bus) -> None:
    await publish(bus, bus.subjects.logs_parsed("wifi"), b"w")
    await publish(bus, bus.subjects.logs_parsed("wan"), b"n")

    consumer = PullConsumer(
        bus,
        bus.subjects.logs_parsed_stream,
        "wifi",
        filter_subject=bus.subjects.logs_parsed("wifi"),
    )
    async with consumer:
        msgs = await consumer.fetch(timeout=0.5)
    assert [m.data for m in msgs] == [b"w"]


async def test_reentering_applies_changed_consumer_settings(bus: Bus) -> None:
    stream = bus.subjects.logs_raw_stream
    async with PullConsumer(bus, stream, "parser", ack_wait_s=2.0):
        pass
    async with PullConsumer(bus, stream, "parser", ack_wait_s=7.0) as consumer:
        info = await bus.js.consumer_info(stream.name, consumer.durable)
    assert info.config.ack_wait == pytest.approx(7.0)
    assert info.config.max_deliver == -1  # enforced by PullConsumer, never dropped by the server

"""PullConsumer: ack after success, outages held, retries, dead letters, batch fallback, stall
watch, drain, replay."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from nats.aio.msg import Msg

from opmas.bus.connect import Bus
from opmas.bus.consume import DlqHeader, Handler, PullConsumer, TransientError
from opmas.bus.failures import STALLED, TRANSIENT_FAILING, TRANSIENT_RETRIES
from opmas.bus.publish import publish
from opmas.errors import StoreError

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
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


async def drive(consumer: PullConsumer, handler: Handler) -> None:
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


@pytest.mark.parametrize("error", [RuntimeError, LookupError])
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
    assert headers[DlqHeader.KIND] == "failed"


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
    assert headers[DlqHeader.KIND] == "permanent"


def quick_holds(bus: Bus) -> Bus:
    """`bus` with transient failures retried every 0.1 to 0.4 s."""
    settings = bus.settings.model_copy(update={"hold_min_s": 0.1, "hold_max_s": 0.4})
    return dataclasses.replace(bus, settings=settings)


def refused() -> StoreError:
    """What the event store raises while PostgreSQL is down."""
    try:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    except ConnectionRefusedError as exc:
        try:
            raise StoreError("writing 5 events failed") from exc
        except StoreError as error:
            return error


async def test_transient_failure_is_held_and_retried_in_place(bus: Bus) -> None:
    await publish_raw(bus, b"x")
    attempts: list[int] = []

    async def handler(msgs: list[Msg]) -> None:
        attempts.append(msgs[0].metadata.num_delivered)
        if len(attempts) == 1:
            raise TransientError("database down")

    async with PullConsumer(quick_holds(bus), bus.subjects.logs_raw_stream, "parser") as consumer:
        result = await consumer.process(await consumer.fetch(), handler)
        await eventually(lambda: settled(consumer))

    assert (result.acked, result.naked, result.held) == (1, 0, 1)
    assert attempts == [1, 1]  # the same delivery, not a redelivery
    assert await dlq_messages(bus) == []


async def test_an_outage_longer_than_ack_wait_and_max_deliver_is_held_not_dead_lettered(
    bus: Bus,
) -> None:
    """PostgreSQL refuses connections for 2.5 s (ack_wait 1 s, many more attempts than
    max_deliver): the batch stays in hand, is never redelivered nor dead-lettered, and is
    acked once the database is back; meanwhile the consumer says it is degraded."""
    await publish_raw(bus, b"a", b"b")
    back_at = time.monotonic() + 2.5
    seen: list[tuple[int, ...]] = []
    consumer = PullConsumer(
        quick_holds(bus), bus.subjects.logs_raw_stream, "outage", ack_wait_s=1.0
    )
    retries = TRANSIENT_RETRIES.labels("outage")
    before = retries._value.get()

    async def handler(msgs: list[Msg]) -> None:
        seen.append(tuple(m.metadata.num_delivered for m in msgs))
        if time.monotonic() < back_at:
            raise refused()

    async with consumer:
        task = asyncio.create_task(consumer.process(await consumer.fetch(), handler))
        await asyncio.sleep(1.5)
        reason = consumer.health()
        failing = TRANSIENT_FAILING.labels("outage")._value.get()
        assert await consumer.fetch(timeout=0.5) == []  # nothing redelivered meanwhile
        result = await task
        await eventually(lambda: settled(consumer))
        info = await bus.js.consumer_info(consumer.stream.name, consumer.durable)

    assert reason is not None
    assert reason.startswith("PostgreSQL failing for")
    assert "ConnectionRefusedError" not in reason  # the outer error is shown: StoreError
    assert failing == 1
    assert len(seen) > bus.settings.max_deliver
    assert set(seen) == {(1, 1)}
    assert (result.acked, result.dead_lettered, result.naked) == (2, 0, 0)
    assert info.num_redelivered == 0
    assert retries._value.get() - before == len(seen) - 2  # first failure began it
    assert consumer.health() is None
    assert TRANSIENT_FAILING.labels("outage")._value.get() == 0
    assert await dlq_messages(bus) == []


async def test_stopping_during_an_outage_gives_the_batch_back(bus: Bus) -> None:
    await publish_raw(bus, b"held")
    stop = asyncio.Event()

    async def handler(msgs: list[Msg]) -> None:
        raise refused()

    async with PullConsumer(quick_holds(bus), bus.subjects.logs_raw_stream, "parser") as consumer:
        task = asyncio.create_task(consumer.process(await consumer.fetch(), handler, stop=stop))
        await asyncio.sleep(0.3)
        stop.set()
        result = await asyncio.wait_for(task, 2)
        [again] = await consumer.fetch(timeout=2.0)

    assert (result.naked, result.dead_lettered) == (1, 0)
    assert again.metadata.num_delivered == 2
    assert consumer.health() is None
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


async def test_redeliveries_without_an_outcome_do_not_dead_letter_a_good_message(
    bus: Bus,
) -> None:
    """The process died (or NATS restarted) with the message in hand, more often than
    max_deliver: it is handled again (alone) and acked, not dead-lettered unseen."""
    await publish_raw(bus, b"survivor")
    consumer = PullConsumer(
        bus, bus.subjects.logs_raw_stream, "parser", max_deliver=1, ack_wait_s=0.3
    )
    handled: list[list[bytes]] = []

    async def handler(msgs: list[Msg]) -> None:
        handled.append([m.data for m in msgs])

    async with consumer:
        for _ in range(3):  # "crash": never acked
            assert len(await consumer.fetch(timeout=2.0)) == 1
        [again] = await consumer.fetch(timeout=2.0)
        result = await consumer.process([again], handler)

    assert again.metadata.num_delivered == 4
    assert result.acked == 1
    assert handled == [[b"survivor"]]
    assert await dlq_messages(bus) == []


async def test_a_message_that_never_gets_an_outcome_is_dead_lettered_unseen(bus: Bus) -> None:
    """It takes its process down every time: after max_unacked_deliveries, to the DLQ."""
    await publish_raw(bus, b"crasher")
    consumer = PullConsumer(
        bus,
        bus.subjects.logs_raw_stream,
        "parser",
        max_deliver=1,
        max_unacked_deliveries=2,
        ack_wait_s=0.3,
    )

    async def handler(msgs: list[Msg]) -> None:
        raise AssertionError("must not be called again")

    async with consumer:
        for _ in range(2):
            assert len(await consumer.fetch(timeout=2.0)) == 1
        [again] = await consumer.fetch(timeout=2.0)
        result = await consumer.process([again], handler)

    assert result.dead_lettered == 1
    [(_, headers)] = await dlq_messages(bus)
    assert headers[DlqHeader.ERROR_TYPE] == "MaxDeliverExceeded"
    assert headers[DlqHeader.KIND] == "unacked"
    assert headers[DlqHeader.DELIVERIES] == "3"


async def test_a_hung_handler_is_reported_stalled_then_progressing(bus: Bus) -> None:
    """The handler waits on a server that never answers: the watcher, a task of its own,
    reports the stall within stall_after_s (+ one check), and its end once acked."""
    await publish_raw(bus, b"a", b"b")
    release = asyncio.Event()

    async def handler(msgs: list[Msg]) -> None:
        await release.wait()

    consumer = PullConsumer(bus, bus.subjects.logs_raw_stream, "hung", stall_after_s=0.8)
    async with consumer:
        task = asyncio.create_task(consumer.process(await consumer.fetch(), handler))
        started = time.monotonic()
        while consumer.health() is None:
            assert time.monotonic() - started < 2.0, "stall not reported in time"
            await asyncio.sleep(0.05)
        reason = consumer.health() or ""
        stalled = STALLED.labels("hung")._value.get()
        release.set()
        await task
        while consumer.health() is not None:
            assert time.monotonic() - started < 4.0, "stall end not reported"
            await asyncio.sleep(0.05)

    assert reason.startswith("stalled: 2 messages pending")
    assert stalled == 1
    assert STALLED.labels("hung")._value.get() == 0


async def test_an_idle_consumer_is_never_stalled(bus: Bus) -> None:
    consumer = PullConsumer(bus, bus.subjects.logs_raw_stream, "idle", stall_after_s=0.4)
    async with consumer:
        await asyncio.sleep(1.0)
        assert consumer.health() is None


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
            return bool(info.num_ack_pending == 0 and info.num_pending == 2)

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

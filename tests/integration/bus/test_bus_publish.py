"""publish() and Publisher: PubAcks, de-duplication by Nats-Msg-Id, errors."""

from __future__ import annotations

import pytest

from opmas.bus.connect import Bus
from opmas.bus.publish import Publisher, publish
from opmas.errors import StreamMissing

pytestmark = pytest.mark.integration


async def test_same_msg_id_twice_is_stored_once(bus: Bus) -> None:
    first = await publish(bus, bus.subjects.logs_raw, b"batch", msg_id="batch-1")
    second = await publish(bus, bus.subjects.logs_raw, b"batch", msg_id="batch-1")

    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    info = await bus.js.stream_info(bus.subjects.logs_raw_stream.name)
    assert info.state.messages == 1


async def test_headers_are_kept(bus: Bus) -> None:
    ack = await publish(bus, bus.subjects.findings("wifi"), b"{}", headers={"Opmas-V": "1"})

    stored = await bus.js.get_msg(bus.subjects.findings_stream.name, ack.seq)
    assert stored.headers is not None
    assert stored.headers["Opmas-V"] == "1"


async def test_subject_without_stream_raises_stream_missing(bus: Bus) -> None:
    with pytest.raises(StreamMissing, match="no stream captures"):
        await publish(bus, f"{bus.subjects.namespace}.nowhere", b"x")


async def test_publisher_flush_returns_every_ack_in_order(bus: Bus) -> None:
    publisher = Publisher(bus, max_pending=16)
    for i in range(100):
        await publisher.publish(bus.subjects.logs_raw, f"{i}".encode(), msg_id=f"m{i % 50}")
        assert publisher.pending <= 16

    acks = await publisher.flush()

    assert len(acks) == 100
    assert [a.seq for a in acks[:50]] == list(range(1, 51))
    assert all(a.duplicate for a in acks[50:])
    assert publisher.pending == 0
    info = await bus.js.stream_info(bus.subjects.logs_raw_stream.name)
    assert info.state.messages == 50


async def test_publisher_flush_raises_when_a_message_has_no_stream(bus: Bus) -> None:
    publisher = Publisher(bus)
    await publisher.publish(bus.subjects.logs_raw, b"ok")
    await publisher.publish(f"{bus.subjects.namespace}.nowhere", b"lost")

    with pytest.raises(StreamMissing, match="1 of 2 publishes failed"):
        await publisher.flush()
    assert await publisher.flush() == []

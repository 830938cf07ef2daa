"""ensure_streams is idempotent and applies changed limits; stream_report shows lag."""

from __future__ import annotations

import dataclasses

import pytest
from nats.js.api import StorageType

from opmas.bus.connect import Bus
from opmas.bus.consume import PullConsumer
from opmas.bus.publish import publish
from opmas.bus.streams import delete_streams, ensure_streams, stream_report

pytestmark = pytest.mark.integration


async def test_ensure_streams_twice_changes_nothing(bus: Bus) -> None:
    names = [spec.name for spec in bus.subjects.streams()]
    await delete_streams(bus)

    assert await ensure_streams(bus) == names
    assert await ensure_streams(bus) == []

    for spec in bus.subjects.streams():
        info = await bus.js.stream_info(spec.name)
        limits = getattr(bus.settings, spec.limits_key)
        assert info.config.storage == StorageType.FILE
        assert info.config.subjects == list(spec.subjects)
        assert info.config.max_age == pytest.approx(limits.max_age_s)
        assert info.config.max_bytes == limits.max_bytes
        assert info.config.duplicate_window == pytest.approx(bus.settings.duplicate_window_s)


async def test_changed_max_age_is_applied(bus: Bus) -> None:
    settings = bus.settings.model_copy(
        update={"findings": bus.settings.findings.model_copy(update={"max_age_s": 3600})}
    )
    changed_bus = dataclasses.replace(bus, settings=settings)

    assert await ensure_streams(changed_bus) == [bus.subjects.findings_stream.name]
    assert await ensure_streams(changed_bus) == []
    info = await bus.js.stream_info(bus.subjects.findings_stream.name)
    assert info.config.max_age == pytest.approx(3600)


async def test_stream_report_shows_consumer_lag(bus: Bus) -> None:
    for i in range(5):
        await publish(bus, bus.subjects.logs_raw, f"line {i}".encode())
    async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser", batch=2) as consumer:
        msgs = await consumer.fetch()
        assert len(msgs) == 2

        reports = {r.stream: r for r in await stream_report(bus)}

    raw = reports[bus.subjects.logs_raw_stream.name]
    assert raw.exists
    assert raw.messages == 5
    assert raw.bytes > 0
    assert [c.durable for c in raw.consumers] == ["parser"]
    assert raw.consumers[0].num_pending == 3
    assert raw.consumers[0].num_ack_pending == 2
    assert reports[bus.subjects.dlq_stream.name].consumers == []


async def test_stream_report_marks_missing_streams(bus: Bus) -> None:
    await delete_streams(bus)

    reports = await stream_report(bus)

    assert [r.exists for r in reports] == [False] * len(bus.subjects.streams())

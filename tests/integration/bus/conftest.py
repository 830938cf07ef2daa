"""A connected Bus per test, in the test's own namespace; its streams are deleted afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from opmas.bus.connect import Bus, connect_bus
from opmas.bus.streams import delete_streams, ensure_streams
from opmas.settings import BusSettings


@pytest.fixture
async def bus(nats_url: str, bus_settings: BusSettings) -> AsyncIterator[Bus]:
    """A Bus with every OPMAS stream created in the test's namespace."""
    async with connect_bus(nats_url, bus_settings, name="opmas-test") as connected:
        await ensure_streams(connected)
        try:
            yield connected
        finally:
            await delete_streams(connected)

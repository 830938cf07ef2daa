"""connect_bus: reaching the server, failing fast when it is not there, ping."""

from __future__ import annotations

import socket
import time

import pytest

from opmas.bus.connect import connect_bus
from opmas.errors import BusError
from opmas.settings import BusSettings

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_server_raises_bus_error_quickly(bus_settings: BusSettings) -> None:
    url = f"nats://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(BusError, match="cannot connect to NATS"):
        async with connect_bus(url, bus_settings, connect_timeout_s=1.0):
            pass
    assert time.monotonic() - start < 3.0


async def test_ping_returns_round_trip_seconds(nats_url: str, bus_settings: BusSettings) -> None:
    async with connect_bus(nats_url, bus_settings) as bus:
        rtt = await bus.ping()
        assert 0 <= rtt < 1.0
        assert bus.subjects.namespace == bus_settings.namespace
    assert bus.nc.is_closed

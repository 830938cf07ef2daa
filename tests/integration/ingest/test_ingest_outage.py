"""Ingest while the bus is down: a nats-server of the test's own is killed (SIGKILL) and started
again on the same port and store. TCP spools, then pauses; a clean stop keeps everything in the
spool for the next start; kill -9 of the ingest loses nothing spooled; HTTP answers 503 with
Retry-After until the bus is back, then 202."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.api.app import create_app
from opmas.bus.connect import Bus, connect_bus
from opmas.bus.streams import ensure_streams
from opmas.db.engine import session_factory
from opmas.embedded import Endpoints, free_port, nats_server_binary
from opmas.ingest import tokens
from opmas.ingest.service import IngestService, SyslogListen
from opmas.resources import Resources
from opmas.settings import BusSettings, IngestSettings, Settings

from .conftest import RawReader, send_in_chunks

pytestmark = pytest.mark.integration

TCP_ONLY = SyslogListen(host="127.0.0.1", udp_port=-1, tcp_port=0, tls_port=-1)


class PrivateNats:
    """A nats-server -js of one test, on a fixed loopback port and store directory."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._config = root / "nats.conf"
        store = root / "jetstream"
        self._config.write_text(
            f'listen: 127.0.0.1:{self.port}\njetstream {{\n  store_dir: "{store}"\n}}\n'
        )
        self._log = root / "nats.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        with self._log.open("ab") as out:
            self._proc = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(self._config)], stdout=out, stderr=out
            )

    async def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + 15
        while True:
            try:
                nc = await nats.connect(self.url, allow_reconnect=False, connect_timeout=1)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)


@pytest.fixture
async def private_nats(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    server = PrivateNats(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def outage_bus(private_nats: PrivateNats, bus_settings: BusSettings) -> AsyncIterator[Bus]:
    """A Bus on the private server; PubAcks time out after 1 s."""
    fast = bus_settings.model_copy(update={"publish_timeout_s": 1.0})
    async with connect_bus(private_nats.url, fast, name="opmas-test-outage") as bus:
        await ensure_streams(bus)
        yield bus


@asynccontextmanager
async def running(
    bus: Bus, spool_dir: Path, **tuning: Any
) -> AsyncIterator[tuple[IngestService, asyncio.Event]]:
    """A running TCP ingest; set the event to stop it (then it is awaited on exit)."""
    settings = IngestSettings(**{"flush_delay_ms": 5.0, **tuning})
    stop = asyncio.Event()
    async with IngestService(settings, TCP_ONLY, bus, spool_dir=spool_dir) as service:
        task = asyncio.create_task(service.run(stop))
        try:
            yield service, stop
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def spool_files(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*.spool"))


def spooled_lines(spool_dir: Path) -> int:
    return sum(int(path.stem.partition("-")[2]) for path in spool_files(spool_dir))


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def until(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


def assert_exactly_once(reader: RawReader, lines: list[bytes]) -> None:
    items = reader.items
    assert sorted(i.line.encode() for i in items) == sorted(lines)
    assert len({i.event_id for i in items}) == len(lines)


async def test_tcp_during_a_nats_outage_spools_then_pauses_and_arrives_exactly_once(
    outage_bus: Bus, private_nats: PrivateNats, tmp_path: Path
) -> None:
    total = 100_000
    lines = [b"<13>r1 outage: line %07d padding-padding-padding" % i for i in range(total)]
    payload = b"".join(line + b"\n" for line in lines)
    spool_dir, spool_max = tmp_path / "spool", 256 * 1024
    tuning = {"batch_size": 500, "max_queued_lines": 2000, "spool_max_bytes": spool_max}
    async with running(outage_bus, spool_dir, **tuning) as (service, _):
        private_nats.kill()
        _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
        sending = asyncio.create_task(send_in_chunks(writer, payload))
        await until(lambda: service.batcher.paused, 20, "the connection paused")
        await asyncio.sleep(1)
        batcher = service.batcher
        assert not sending.done()  # the sender is blocked: its socket buffers are full
        assert batcher.bus_failing
        assert batcher.queued < 2000 + 2000  # the bound, and what one read may add
        on_disk = sum(path.stat().st_size for path in spool_files(spool_dir))
        assert 0 < on_disk <= spool_max + 512 * 1024  # the bound, and a first file past it
        assert f"bus not storing: {batcher.spooled} lines spooled" in service.describe()

        await private_nats.start()
        await asyncio.wait_for(sending, 60)
        writer.close()
        reader = RawReader(outage_bus)
        await reader.wait_for(total, timeout_s=60)
        await until(lambda: not spool_files(spool_dir), 10, "the spool emptied")
        await asyncio.sleep(0.5)
        await reader.poll()
    assert_exactly_once(reader, lines)
    assert not service.batcher.bus_failing


async def test_a_clean_stop_with_the_bus_down_abandons_nothing_and_the_next_start_replays_it(
    outage_bus: Bus, private_nats: PrivateNats, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    lines = [b"<13>r2 stop: line %05d" % i for i in range(5000)]
    lost_before = metric("opmas_ingest_spool_lost_total")
    async with running(outage_bus, spool_dir) as (service, stop):
        private_nats.kill()
        _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
        writer.write(b"".join(line + b"\n" for line in lines))
        await writer.drain()
        batcher = service.batcher
        # stopped as soon as every line was read: some are still in memory, not yet spooled
        await until(lambda: batcher.queued + batcher.spooled == 5000, 20, "all lines read")
        stop.set()
    writer.close()
    assert batcher.lost == 0
    assert metric("opmas_ingest_spool_lost_total") == lost_before
    assert batcher.spooled == spooled_lines(spool_dir) == 5000

    await private_nats.start()
    await until(lambda: outage_bus.nc.is_connected, 10, "the bus reconnected")
    async with running(outage_bus, spool_dir) as (again, _):
        assert again.batcher.spooled == 5000  # replayed before any new line
        reader = RawReader(outage_bus)
        await reader.wait_for(5000, timeout_s=30)
        await until(lambda: not spool_files(spool_dir), 10, "the spool emptied")
        await asyncio.sleep(0.3)
        await reader.poll()
    assert_exactly_once(reader, lines)


CHILD = """
import asyncio, sys
from pathlib import Path
from opmas.bus.connect import connect_bus
from opmas.ingest.service import IngestService, SyslogListen
from opmas.settings import BusSettings, IngestSettings

async def main() -> None:
    url, namespace, spool, port_file = sys.argv[1:5]
    settings = BusSettings(namespace=namespace, publish_timeout_s=1.0)
    listen = SyslogListen(host="127.0.0.1", udp_port=-1, tcp_port=0, tls_port=-1)
    async with connect_bus(url, settings) as bus:
        ingest = IngestSettings(flush_delay_ms=5)
        async with IngestService(ingest, listen, bus, spool_dir=Path(spool)) as service:
            Path(port_file).write_text(str(service.ports["tcp"]))
            await service.run(asyncio.Event())

asyncio.run(main())
"""


async def test_kill_9_of_the_ingest_loses_no_spooled_line(
    outage_bus: Bus, private_nats: PrivateNats, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    namespace = outage_bus.subjects.namespace
    port_file = tmp_path / "port"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, private_nats.url, namespace, str(spool_dir), str(port_file),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until(lambda: port_file.exists() and port_file.read_text(), 30, "it listens")
        port = int(port_file.read_text())
        private_nats.kill()
        lines = [b"<13>r3 crash: line %05d" % i for i in range(3000)]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(line + b"\n" for line in lines))
        await writer.drain()
        await until(lambda: spooled_lines(spool_dir) == 3000, 30, "all lines spooled")
        os.kill(child.pid, signal.SIGKILL)
        writer.close()
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()

    await private_nats.start()
    await until(lambda: outage_bus.nc.is_connected, 10, "the bus reconnected")
    async with running(outage_bus, spool_dir):
        reader = RawReader(outage_bus)
        await reader.wait_for(3000, timeout_s=30)
        await until(lambda: not spool_files(spool_dir), 10, "the spool emptied")
        await asyncio.sleep(0.3)
        await reader.poll()
    assert_exactly_once(reader, lines)


async def test_http_is_503_with_retry_after_while_the_bus_is_down_and_202_once_it_is_back(
    outage_bus: Bus,
    private_nats: PrivateNats,
    settings: Settings,
    engine: AsyncEngine,
    database_url: str,
) -> None:
    async with session_factory(engine)() as session:
        token, _ = await tokens.create_token(session, "router1")
        await session.commit()
    resources = Resources(
        settings, Endpoints(database_url, private_nats.url, False, False), engine, outage_bus
    )
    app = create_app(settings, resources=resources)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "outage-1"}
    lines = ["<13>r4 http: one", "<13>r4 http: two"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://opmas") as client:
            private_nats.kill()
            await until(lambda: not outage_bus.nc.is_connected, 10, "the bus noticed")
            started = time.monotonic()
            refused = await client.post("/api/v1/logs", json=lines, headers=headers)
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert time.monotonic() - started < 1.0  # answered at once, nothing held

            await private_nats.start()
            answers = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                answer = await client.post("/api/v1/logs", json=lines, headers=headers)
                answers.append(answer.status_code)
                if answer.status_code == 202:
                    break
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "1"
                await asyncio.sleep(float(answer.headers["Retry-After"]) / 4)
            assert answers[-1] == 202, answers
            again = await client.post("/api/v1/logs", json=lines, headers=headers)
            assert again.status_code == 202
            assert again.headers.get("Idempotent-Replayed") == "true"
    reader = RawReader(outage_bus)
    await reader.wait_for(2, timeout_s=10)
    await asyncio.sleep(0.3)
    await reader.poll()
    assert sorted(i.line for i in reader.items) == sorted(lines)  # stored once

"""Syslog over UDP and TCP from util-linux `logger` and raw sockets -> RawBatch on logs.raw."""

from __future__ import annotations

import asyncio
import shutil
import socket

import pytest
from prometheus_client import REGISTRY

from opmas.bus.connect import Bus
from opmas.ingest.service import IngestService
from opmas.messages import Flag, Transport
from opmas.runtime import ComponentStatus, Supervisor
from opmas.settings import RuntimeSettings, Settings

from .conftest import Pki, RawReader, StartIngest

pytestmark = pytest.mark.integration

LOGGER = shutil.which("logger")
# scripts/install-system-deps installs util-linux's logger (bsdutils); its absence is a failure
needs_logger = pytest.mark.usefixtures("_logger_installed")


@pytest.fixture
def _logger_installed() -> None:
    assert LOGGER is not None, "util-linux logger is missing: run scripts/install-system-deps"


async def logger(port: int, *args: str) -> None:
    assert LOGGER is not None
    proc = await asyncio.create_subprocess_exec(
        LOGGER, "--server", "127.0.0.1", "--port", str(port), "--tag", "opmas-test", *args,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err


async def send_tcp(port: int, data: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def send_udp(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@needs_logger
@pytest.mark.parametrize("rfc", ["--rfc3164", "--rfc5424"])
async def test_logger_over_udp_arrives_as_one_raw_log(
    start_ingest: StartIngest, reader: RawReader, rfc: str
) -> None:
    async with start_ingest() as service:
        await logger(
            service.ports["udp"], "--udp", rfc, "wlan0: STA aa:bb:cc:dd:ee:ff authenticated"
        )
        [item] = await reader.wait_for(1)

    assert item.line.startswith("<13>")
    assert " opmas-test" in item.line
    assert item.line.endswith(" wlan0: STA aa:bb:cc:dd:ee:ff authenticated")
    assert (item.transport, item.source_ip, item.flags) == (Transport.UDP, "127.0.0.1", [])
    assert len(item.event_id) == 36
    assert item.event_id[14] == "7"  # a UUIDv7


@needs_logger
@pytest.mark.parametrize("framing", [[], ["--octet-count"]], ids=["lf", "octet"])
@pytest.mark.parametrize("rfc", ["--rfc3164", "--rfc5424"])
async def test_logger_over_tcp_arrives_line_by_line(
    start_ingest: StartIngest, reader: RawReader, rfc: str, framing: list[str]
) -> None:
    lines = [f"dropbear[{i}]: Password auth succeeded for 'root'" for i in range(50)]
    async with start_ingest() as service:
        proc = await asyncio.create_subprocess_exec(
            LOGGER or "logger", "--server", "127.0.0.1", "--port", str(service.ports["tcp"]),
            "--tcp", rfc, *framing, "--tag", "opmas-test", stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.wait_for(proc.communicate("\n".join(lines).encode() + b"\n"), 10)
        items = await reader.wait_for(len(lines))

    assert len(items) == len(lines)
    for item, line in zip(items, lines, strict=True):
        assert item.line.startswith("<13>")
        assert item.line.endswith(" " + line)
    assert {(i.transport, i.source_ip) for i in items} == {(Transport.TCP, "127.0.0.1")}


async def test_nul_terminated_frames_from_logd(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    async with start_ingest() as service:
        await send_tcp(service.ports["tcp"], b"<30>Apr 18 15:02:17 r1 netifd: up\x00<30>x: two\x00")
        items = await reader.wait_for(2)
    assert [i.line for i in items] == ["<30>Apr 18 15:02:17 r1 netifd: up", "<30>x: two"]


async def test_nul_inside_an_octet_frame_is_replaced_and_flagged(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    async with start_ingest() as service:
        await send_tcp(service.ports["tcp"], b"10 <13>a\x00b\x00cd")
        send_udp(service.ports["udp"], b"<13>udp\x00nul\n")
        items = await reader.wait_for(2)
    by_transport = {i.transport: i for i in items}
    assert by_transport["tcp"].line == "<13>a\ufffdb\ufffdcd"
    assert by_transport["tcp"].flags == [Flag.NUL_REPLACED]
    assert by_transport["udp"].line == "<13>udp\ufffdnul"


async def test_a_one_mib_line_is_truncated_flagged_and_the_next_line_kept(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    before = metric("opmas_ingest_truncated_total", transport="tcp")
    async with start_ingest(max_message=65536) as service:
        huge = b"<13>" + b"x" * (1024 * 1024)
        await send_tcp(service.ports["tcp"], huge + b"\n<13>after the big one\n")
        items = await reader.wait_for(2)
        service.housekeeping()
    assert len(items) == 2
    assert len(items[0].line) == 65536
    assert items[0].flags == [Flag.TRUNCATED]
    assert items[1].line == "<13>after the big one"
    assert metric("opmas_ingest_truncated_total", transport="tcp") == before + 1


async def test_oversize_octet_frame_skips_exactly_its_length(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    body = b"<13>" + b"y" * 5000
    async with start_ingest(max_message=1000) as service:
        await send_tcp(service.ports["tcp"], b"5004 " + body + b"8 <13>next")
        items = await reader.wait_for(2)
    assert [(len(i.line), i.flags) for i in items] == [(1000, [Flag.TRUNCATED]), (8, [])]


async def test_oversize_udp_datagram_is_truncated(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    async with start_ingest(max_message=1000) as service:
        send_udp(service.ports["udp"], b"<13>" + "é".encode() * 2000)
        [item] = await reader.wait_for(1)
    assert item.flags == [Flag.TRUNCATED]
    assert item.line == "<13>" + "é" * 498  # cut on a character boundary


async def test_invalid_utf8_is_replaced_and_flagged(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    async with start_ingest() as service:
        send_udp(service.ports["udp"], b"<13>bad \xff\xfe bytes")
        await send_tcp(service.ports["tcp"], b"<13>bad \xc3\x28 tcp\n")
        items = await reader.wait_for(2)
    assert {i.line for i in items} == {"<13>bad \ufffd\ufffd bytes", "<13>bad \ufffd( tcp"}
    assert all(i.flags == [Flag.INVALID_UTF8] for i in items)


async def test_absurd_octet_count_is_read_as_a_line_and_counted(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    before = metric("opmas_ingest_framing_errors_total", transport="tcp")
    async with start_ingest() as service:
        await send_tcp(service.ports["tcp"], b"999999999 <13>liar\n-3 <13>negative\n<13>fine\n")
        items = await reader.wait_for(3)
        service.housekeeping()
    assert [i.line for i in items] == ["999999999 <13>liar", "-3 <13>negative", "<13>fine"]
    assert metric("opmas_ingest_framing_errors_total", transport="tcp") == before + 1


async def test_lines_are_batched_by_size_and_by_delay(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    lines = b"".join(b"<13>line %d\n" % i for i in range(1000))
    async with start_ingest(batch_size=100, flush_delay_ms=50) as service:
        await send_tcp(service.ports["tcp"], lines)
        items = await reader.wait_for(1000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        send_udp(service.ports["udp"], b"<13>alone")
        await reader.wait_for(1001)
        waited = loop.time() - started
    assert [i.line for i in items] == [f"<13>line {i}" for i in range(1000)]
    assert all(len(b.items) <= 100 for b in reader.batches)
    assert len(reader.batches[-1].items) == 1
    assert 0.04 <= waited < 2.0
    assert reader.msg_ids == [b.batch_id for b in reader.batches]
    assert len(set(reader.msg_ids)) == len(reader.msg_ids)


async def test_stop_publishes_every_line_received_before_it(
    start_ingest: StartIngest, reader: RawReader, bus: Bus
) -> None:
    async with start_ingest(flush_delay_ms=10_000, batch_size=10_000) as service:
        send_udp(service.ports["udp"], *(b"<13>u%d" % i for i in range(300)))
        await send_tcp(service.ports["tcp"], b"".join(b"<13>t%d\n" % i for i in range(300)))
        for _ in range(100):
            if service.batcher.queued == 600:
                break
            await asyncio.sleep(0.02)
        assert await reader.stored() == 0  # held by the long flush delay until the stop
    items = await reader.wait_for(600, timeout_s=1)
    assert len({i.line for i in items}) == 600


async def test_received_and_published_counters(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    received = metric("opmas_ingest_received_total", transport="udp")
    published = metric("opmas_ingest_published_total")
    async with start_ingest() as service:
        send_udp(service.ports["udp"], *(b"<13>m%d" % i for i in range(20)))
        await reader.wait_for(20)
        await asyncio.sleep(0.05)
        service.housekeeping()
    assert metric("opmas_ingest_received_total", transport="udp") == received + 20
    assert metric("opmas_ingest_published_total") >= published + 20


async def test_datagrams_the_kernel_drops_are_counted(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    received = metric("opmas_ingest_received_total", transport="udp")
    kernel = metric("opmas_ingest_udp_socket_drops_total")
    async with start_ingest(udp_receive_buffer=4096) as service:
        send_udp(service.ports["udp"], *(b"<13>burst %d" % i for i in range(2000)))  # loop blocked
        await asyncio.sleep(0.2)
        service.housekeeping()
        got = metric("opmas_ingest_received_total", transport="udp") - received
        dropped = metric("opmas_ingest_udp_socket_drops_total") - kernel
        await reader.wait_for(int(got))
    assert dropped > 0
    assert got + dropped == 2000


async def test_runs_under_the_supervisor_from_flat_settings(
    bus: Bus, reader: RawReader, pki: Pki
) -> None:
    settings = Settings(
        syslog_host="127.0.0.1",
        syslog_udp_port=0,
        syslog_tcp_port=0,
        syslog_tls_port=0,
        syslog_tls_cert=pki.server_cert,
        syslog_tls_key=pki.server_key,
        bus=bus.settings,
    )
    made: list[IngestService] = []

    def factory() -> IngestService:
        made.append(IngestService.from_settings(settings, bus))
        return made[-1]

    supervisor = Supervisor({"ingest": factory}, RuntimeSettings(shutdown_grace_s=5))
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    while supervisor.states["ingest"].status is not ComponentStatus.ACTIVE:
        await asyncio.sleep(0.01)
    [service] = made
    assert set(service.ports) == {"udp", "tcp", "tls"}
    send_udp(service.ports["udp"], b"<13>supervised")
    await reader.wait_for(1)
    stop.set()
    await asyncio.wait_for(running, 10)
    final = supervisor.states["ingest"]
    assert final.status is ComponentStatus.STOPPED

"""TLS (openssl s_client, mutual TLS), handshake and idle timeouts, connection limits and
bursts, and backpressure when JetStream refuses the batches."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy
from prometheus_client import REGISTRY

from opmas.bus.connect import Bus
from opmas.errors import ConfigError
from opmas.messages import Transport

from .conftest import Pki, RawReader, StartIngest

pytestmark = pytest.mark.integration


async def s_client(port: int, pki: Pki, data: bytes, *cert: Path) -> tuple[int | None, bytes]:
    """Send `data` through `openssl s_client`; its exit code and output."""
    cert_args = ["-cert", str(cert[0]), "-key", str(cert[1])] if cert else []
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca),
        "-verify_return_error", "-quiet", "-no_ign_eof", *cert_args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(data), 10)
    return proc.returncode, out


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_tls_line_from_openssl_s_client(
    start_ingest: StartIngest, reader: RawReader, pki: Pki
) -> None:
    async with start_ingest(tls_cert=pki.server_cert, tls_key=pki.server_key) as service:
        code, out = await s_client(
            service.ports["tls"], pki, b"<13>over tls\n26 <13>octet counted over tls"
        )
        items = await reader.wait_for(2)
    assert code == 0, out
    assert [i.line for i in items] == ["<13>over tls", "<13>octet counted over tls"]
    assert {(i.transport, i.source_ip) for i in items} == {(Transport.TLS, "127.0.0.1")}


async def test_mutual_tls_takes_only_clients_with_a_certificate_of_the_ca(
    start_ingest: StartIngest, reader: RawReader, pki: Pki
) -> None:
    mtls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_ca": pki.ca}
    async with start_ingest(**mtls) as service:
        port = service.ports["tls"]
        await s_client(port, pki, b"<13>no certificate\n")
        await s_client(port, pki, b"<13>rogue certificate\n", pki.rogue_cert, pki.rogue_key)
        code, out = await s_client(port, pki, b"<13>router1\n", pki.client_cert, pki.client_key)
        await reader.wait_for(1)
        await asyncio.sleep(0.3)
        await reader.poll()
    assert code == 0, out
    assert [i.line for i in reader.items] == ["<13>router1"]


async def test_a_tls_client_that_never_handshakes_is_dropped(
    start_ingest: StartIngest, reader: RawReader, pki: Pki
) -> None:
    tls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key}
    async with start_ingest(tls_handshake_timeout_s=0.5, **tls) as service:
        stalled, writer = await asyncio.open_connection("127.0.0.1", service.ports["tls"])
        started = time.monotonic()
        assert await asyncio.wait_for(stalled.read(), 5) == b""
        assert time.monotonic() - started < 3
        writer.close()
        code, _ = await s_client(service.ports["tls"], pki, b"<13>still serving\n")
        await reader.wait_for(1)
    assert code == 0


async def test_an_idle_connection_is_closed(start_ingest: StartIngest, reader: RawReader) -> None:
    async with start_ingest(idle_timeout_s=0.3) as service:
        idle, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
        writer.write(b"<13>then silence\n")
        assert await asyncio.wait_for(idle.read(), 5) == b""
        await reader.wait_for(1)
        assert len(service.connections) == 0
        writer.close()


async def test_connections_beyond_the_limit_are_refused(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    before = metric("opmas_ingest_rejected_connections_total", transport="tcp")
    async with start_ingest(max_connections=2) as service:
        port = service.ports["tcp"]
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        while len(service.connections) < 2:
            await asyncio.sleep(0.01)
        refused, writer = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionResetError):  # aborted: a reset
            assert await asyncio.wait_for(refused.read(), 5) == b""
        writer.close()
        kept[0][1].write(b"<13>first of two\n")
        await reader.wait_for(1)
        for _, writer in kept:
            writer.close()
    assert metric("opmas_ingest_rejected_connections_total", transport="tcp") == before + 1


async def test_ten_thousand_connections_opened_and_dropped_leave_nothing_behind(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    loop = asyncio.get_running_loop()

    async def open_and_drop(port: int, index: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            if index % 2:  # half of them reset instead of closing
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        finally:
            sock.close()

    async with start_ingest() as service:
        port = service.ports["tcp"]
        for wave in range(0, 10_000, 500):
            await asyncio.gather(*(open_and_drop(port, wave + i) for i in range(500)))
        for _ in range(200):
            if len(service.connections) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(service.connections) == 0
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"<13>after the storm\n")
        await writer.drain()
        [item] = await reader.wait_for(1)
        writer.close()
    assert item.line == "<13>after the storm"
    assert metric("opmas_ingest_connections", transport="tcp") == 0


async def _block_stream(bus: Bus, max_msgs: int) -> None:
    """Make logs.raw refuse new messages beyond `max_msgs` (discard new): a stuck bus."""
    name = bus.subjects.logs_raw_stream.name
    info = await bus.js.stream_info(name)
    await bus.js.update_stream(info.config.evolve(max_msgs=max_msgs, discard=DiscardPolicy.NEW))


async def _unblock_stream(bus: Bus) -> None:
    name = bus.subjects.logs_raw_stream.name
    info = await bus.js.stream_info(name)
    await bus.js.update_stream(info.config.evolve(max_msgs=-1, discard=DiscardPolicy.OLD))


async def test_tcp_pauses_while_the_bus_refuses_and_loses_nothing(
    start_ingest: StartIngest, reader: RawReader, bus: Bus
) -> None:
    total = 300_000
    payload = b"".join(
        b"<13>backpressure line %07d padding-padding-padding\n" % i for i in range(total)
    )
    await _block_stream(bus, max_msgs=2)
    # the smallest spool: full after its first file, then the queue in memory fills
    async with start_ingest(
        batch_size=500, max_queued_lines=2000, spool_max_bytes=65536
    ) as service:
        _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
        sent = 0

        async def send() -> None:
            nonlocal sent
            for start in range(0, len(payload), 256 * 1024):
                writer.write(payload[start : start + 256 * 1024])
                await writer.drain()
                sent = start + 256 * 1024

        sending = asyncio.create_task(send())
        await asyncio.sleep(3)
        assert service.batcher.paused == 1
        assert not sending.done()  # the sender is blocked: its socket buffers are full
        assert sent < len(payload)
        assert service.batcher.queued < 2000 + 64 * 1024
        assert service.batcher.spooled <= 64 * 500  # at most one file past the bound
        assert await reader.stored() == 2

        await _unblock_stream(bus)
        await asyncio.wait_for(sending, 60)
        writer.close()
        items = await reader.wait_for(total, timeout_s=60)
    assert len(items) == total
    assert len({i.line for i in items}) == total
    assert service.batcher.paused == 0


async def test_udp_drops_are_counted_while_the_bus_refuses(
    start_ingest: StartIngest, reader: RawReader, bus: Bus
) -> None:
    before = metric("opmas_ingest_dropped_total", transport="udp")
    received_before = metric("opmas_ingest_received_total", transport="udp")
    await _block_stream(bus, max_msgs=1)
    async with start_ingest(batch_size=10, max_queued_lines=100, spool_max_bytes=65536) as service:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(2000):
                sock.sendto(b"<13>udp %d" % i, ("127.0.0.1", service.ports["udp"]))
                if i % 100 == 0:
                    await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        service.housekeeping()
        dropped = metric("opmas_ingest_dropped_total", transport="udp") - before
        received = metric("opmas_ingest_received_total", transport="udp") - received_before
        assert service.batcher.queued <= 100
        spooled = service.batcher.spooled
        assert f"udp lines dropped: queue_full {int(dropped)}" in service.describe()
        await _unblock_stream(bus)
        items = await reader.wait_for(int(received - dropped), timeout_s=20)
    assert dropped >= 2000 - 100 - 10 - spooled
    assert spooled < 1000  # the spool's bound (64 KiB) holds a few hundred of them
    assert len(items) + dropped == received


async def test_a_port_in_use_or_a_missing_certificate_is_a_config_error(
    start_ingest: StartIngest, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"syslog UDP port {port} on 127.0.0.1 is in use"):
            async with start_ingest(udp_port=port):
                pass
    with pytest.raises(ConfigError, match=r"OPMAS_SYSLOG_TLS_CERT .*missing\.pem: cannot be read"):
        async with start_ingest(tls_cert=tmp_path / "missing.pem"):
            pass


async def test_many_concurrent_connections_each_keep_their_lines(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    async def sender(port: int, n: int) -> None:
        source = (f"127.0.1.{n // 10 + 1}", 0)  # ten routers per address: within the IP cap
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=source)
        for i in range(50):
            framing = (
                b"%d <13>c%d-%d" % (len(b"<13>c%d-%d" % (n, i)), n, i)
                if n % 2
                else b"<13>c%d-%d\n" % (n, i)
            )
            writer.write(framing)
            if i % 10 == 0:
                await writer.drain()
                await asyncio.sleep(0)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with start_ingest() as service:
        await asyncio.gather(*(sender(service.ports["tcp"], n) for n in range(200)))
        items = await reader.wait_for(10_000)
    assert len(items) == 10_000
    by_connection: dict[str, list[int]] = {}
    for item in items:
        conn, index = item.line.removeprefix("<13>c").split("-")
        by_connection.setdefault(conn, []).append(int(index))
    assert len(by_connection) == 200
    assert all(indexes == list(range(50)) for indexes in by_connection.values())

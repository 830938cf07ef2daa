"""Syslog within bounds: a UDP flood from one address never starves another, connections per
source IP are capped, the queue is bounded in bytes, and TLS takes only 1.2+ with AEAD."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy
from prometheus_client import REGISTRY

from opmas.bus.connect import Bus
from opmas.errors import ConfigError

from .conftest import Pki, RawReader, StartIngest

pytestmark = pytest.mark.integration

# The flooder runs at the lowest priority: a real attacker's CPU is not the one OPMAS runs on,
# while here both share a couple of cores (with whatever else runs). It sends 40,000 datagrams/s,
# 40 times its source's rate: what is tested is that the per-source bucket keeps a flood from
# taking the others' room. A flood faster than this process can read at all overflows the
# kernel's receive buffer for every sender alike (counted in opmas_ingest_udp_socket_drops_total;
# the receive buffer and uvloop in `opmas up` are the defence there, not the bucket).
FLOODER = """
import os, socket, sys, time
os.nice(19)
port, count, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.2", 0))
line = b"<13>flood " + b"x" * 100
started, sent = time.monotonic(), 0
while sent < count:
    for _ in range(200):
        sock.sendto(line, ("127.0.0.1", port))
    sent += 200
    ahead = sent / rate - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)
"""


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_udp_flood_from_one_address_loses_none_of_another_ones_lines(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    flooder = {"transport": "udp", "source": "127.0.0.2"}
    dropped_before = metric("opmas_ingest_source_dropped_total", **flooder)
    kernel_before = metric("opmas_ingest_udp_socket_drops_total")
    # A queue the flood alone would fill; a large receive buffer: the kernel holds what this
    # loaded machine cannot read at once.
    limits = {"udp_source_rate": 1000, "udp_source_burst": 2000, "max_queued_lines": 5000}
    limits |= {"udp_receive_buffer": 2**25}
    async with start_ingest(**limits) as service:
        port = service.ports["udp"]
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOODER, str(port), "200000", "40000"
        )
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.3", 0))
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < 4.0 or flood.returncode is None:
                while sent < elapsed * 100:  # 100 lines/s, on time even if the loop was late
                    sock.sendto(b"<13>steady %d" % sent, ("127.0.0.1", port))
                    sent += 1
                await asyncio.sleep(0.005)
                assert elapsed < 60, "the flooder did not finish"
        assert await flood.wait() == 0
        await asyncio.sleep(0.5)
        service.housekeeping()
        await asyncio.sleep(0.5)
        await reader.poll()
    steady = [i for i in reader.items if i.source_ip == "127.0.0.3"]
    flooded = [i for i in reader.items if i.source_ip == "127.0.0.2"]
    assert sent >= 400
    kernel = metric("opmas_ingest_udp_socket_drops_total") - kernel_before
    got = sorted(int(i.line.split()[-1]) for i in steady)
    assert got == list(range(sent)), f"{sent - len(got)} lost, kernel drops {kernel}"
    assert len(flooded) < 2000 + 1000 * (time.monotonic() - started)
    dropped = metric("opmas_ingest_source_dropped_total", **flooder)
    assert dropped - dropped_before > 100_000
    assert metric("opmas_ingest_source_dropped_total", transport="udp", source="127.0.0.3") == 0


async def closed_at_once(stream: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(stream.read(), 5) == b""
    except ConnectionResetError:  # aborted: a reset rather than a close
        return True


async def test_connections_beyond_the_cap_of_their_source_ip_are_refused_and_counted(
    start_ingest: StartIngest, reader: RawReader
) -> None:
    rejected_before = metric(
        "opmas_ingest_source_rejected_connections_total", transport="tcp", source="127.0.0.2"
    )

    async def connect(source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))

    async with start_ingest(max_connections_per_source=3) as service:
        port = service.ports["tcp"]
        held = [await connect("127.0.0.2") for _ in range(3)]
        refused_reader, refused = await connect("127.0.0.2")
        assert await closed_at_once(refused_reader)
        refused.close()
        _, other = await connect("127.0.0.3")  # another address is not affected
        other.write(b"<13>from another address\n")
        await other.drain()
        assert await reader.wait_for(1)
        assert service.connections.per_source == {"127.0.0.2": 3, "127.0.0.3": 1}
        _, first = held.pop(0)
        first.close()
        await first.wait_closed()
        for _ in range(100):
            if service.connections.per_source["127.0.0.2"] == 2:
                break
            await asyncio.sleep(0.02)
        _, again = await connect("127.0.0.2")  # a place was freed
        again.write(b"<13>after one closed\n")
        await again.drain()
        items = await reader.wait_for(2)
        service.housekeeping()
        for _, writer in [*held, (None, other), (None, again)]:
            writer.close()
    assert [i.line for i in items] == ["<13>from another address", "<13>after one closed"]
    rejected = metric(
        "opmas_ingest_source_rejected_connections_total", transport="tcp", source="127.0.0.2"
    )
    assert rejected - rejected_before == 1


async def test_the_queue_is_bounded_in_bytes_and_udp_drops_beyond(
    start_ingest: StartIngest, reader: RawReader, bus: Bus
) -> None:
    stream = bus.subjects.logs_raw_stream.name
    config = (await bus.js.stream_info(stream)).config
    await bus.js.update_stream(config.evolve(max_msgs=1, discard=DiscardPolicy.NEW))
    line = b"<13>" + b"b" * 996  # 1000 bytes
    limits = {"batch_size": 10, "max_queued_lines": 1_000_000, "max_queued_bytes": 65536}
    limits |= {"spool_max_bytes": 65536}  # the smallest spool: it is full after a few lines
    dropped_before = metric("opmas_ingest_dropped_total", transport="udp")
    async with start_ingest(**limits) as service:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(500):
                sock.sendto(line, ("127.0.0.1", service.ports["udp"]))
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        queued_bytes = service.batcher.queued_bytes
        assert 60_000 <= queued_bytes <= 65536 + 1000
        assert service.batcher.queued <= 66
        spooled = service.batcher.spooled
        assert spooled <= 100
        service.housekeeping()
        dropped = metric("opmas_ingest_dropped_total", transport="udp") - dropped_before
        assert dropped >= 500 - 66 - 10 - spooled
        await bus.js.update_stream(config.evolve(max_msgs=-1, discard=DiscardPolicy.OLD))
        items = await reader.wait_for(int(500 - dropped))
        for _ in range(100):
            if service.batcher.queued_bytes == 0:
                break
            await asyncio.sleep(0.02)
        assert service.batcher.queued_bytes == 0
    assert len(items) == 500 - dropped


async def s_client(port: int, pki: Pki, *options: str) -> tuple[int | None, bytes]:
    """Send one line through `openssl s_client` with `options`; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca),
        "-verify_return_error", "-quiet", "-no_ign_eof", *options,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(b"<13>" + " ".join(options).encode()), 10)
    return proc.returncode, out


async def test_tls_takes_only_version_1_2_and_up_with_aead_suites(
    start_ingest: StartIngest, reader: RawReader, pki: Pki
) -> None:
    async with start_ingest(tls_cert=pki.server_cert, tls_key=pki.server_key) as service:
        port = service.ports["tls"]
        old, old_out = await s_client(port, pki, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        cbc, cbc_out = await s_client(port, pki, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256")
        sha1, _ = await s_client(port, pki, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
        gcm, gcm_out = await s_client(
            port, pki, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"
        )
        tls13, _ = await s_client(port, pki, "-tls1_3")
        await reader.wait_for(2)
        await asyncio.sleep(0.3)
        await reader.poll()
    assert old != 0, old_out
    assert cbc != 0, cbc_out
    assert sha1 != 0
    assert (gcm, tls13) == (0, 0), gcm_out
    assert sorted(i.line for i in reader.items) == [
        "<13>-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256",
        "<13>-tls1_3",
    ]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tls_ca": "ca"}, "OPMAS_SYSLOG_TLS_CA is set but OPMAS_SYSLOG_TLS_CERT is not"),
        ({"tls_key": "server_key"}, "OPMAS_SYSLOG_TLS_KEY is set but OPMAS_SYSLOG_TLS_CERT is not"),
        ({"tls_cert": "server_cert"}, "OPMAS_SYSLOG_TLS_CERT .* holds no private key: set OPMAS_"),
        (
            {"tls_cert": "server_cert", "tls_key": "rogue_key"},
            "OPMAS_SYSLOG_TLS_CERT and OPMAS_SYSLOG_TLS_KEY: not a usable certificate and key",
        ),
        (
            {"tls_cert": "server_cert", "tls_key": "directory"},
            "OPMAS_SYSLOG_TLS_KEY .*: cannot be read",
        ),
        (
            {"tls_cert": "server_cert", "tls_key": "server_key", "tls_ca": "garbage"},
            "OPMAS_SYSLOG_TLS_CA .*: not a PEM CA bundle",
        ),
    ],
)
async def test_half_configured_tls_is_a_config_error_naming_the_variable(
    start_ingest: StartIngest, pki: Pki, tmp_path: Path, given: dict[str, str], message: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    files = {"directory": tmp_path, "garbage": garbage}
    paths = {key: files.get(name) or getattr(pki, name) for key, name in given.items()}
    with pytest.raises(ConfigError, match=message) as error:
        async with start_ingest(**paths):
            pass
    assert "\n" not in str(error.value)

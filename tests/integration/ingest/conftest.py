"""A real bus in the test's namespace, a running IngestService on loopback, a logs.raw reader,
and a throwaway CA with server and client certificates made by the openssl CLI."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from opmas.api.server import ApiServer
from opmas.bus.connect import Bus
from opmas.ingest.service import IngestService, SyslogListen
from opmas.messages import RawBatch, RawLog, raw_batch_decoder
from opmas.resources import open_resources
from opmas.settings import IngestSettings, Settings


class RawReader:
    """Reads what reached logs.raw, message by message, from where it stopped last time."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._stream = bus.subjects.logs_raw_stream.name
        self._next_seq = 1
        self.batches: list[RawBatch] = []
        self.msg_ids: list[str] = []

    @property
    def items(self) -> list[RawLog]:
        return [item for batch in self.batches for item in batch.items]

    async def stored(self) -> int:
        info = await self._bus.js.stream_info(self._stream)
        return int(info.state.messages)

    async def poll(self) -> None:
        info = await self._bus.js.stream_info(self._stream)
        while self._next_seq <= info.state.last_seq:
            msg = await self._bus.js.get_msg(self._stream, self._next_seq)
            self._next_seq += 1
            self.batches.append(raw_batch_decoder.decode(msg.data or b""))
            self.msg_ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))

    async def wait_for(self, count: int, timeout_s: float = 15.0) -> list[RawLog]:
        """Every item read so far once there are at least `count`; fails after the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.poll()
            items = self.items
            if len(items) >= count:
                return items
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(items)} of {count} lines arrived in {timeout_s} s")
            await asyncio.sleep(0.05)


@pytest.fixture
def reader(bus: Bus) -> RawReader:
    return RawReader(bus)


LOOPBACK = SyslogListen(host="127.0.0.1", udp_port=0, tcp_port=0, tls_port=0)

StartIngest = Callable[..., contextlib.AbstractAsyncContextManager[IngestService]]


@pytest.fixture
def start_ingest(bus: Bus, tmp_path: Path) -> StartIngest:
    """`async with start_ingest(listen_field=..., settings_field=...) as service`: running,
    with its spool in `spool_dir` (default: the test's own)."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[IngestService]:
        enrolled = overrides.pop("enrolled", None)  # an EnrolledDevices, for TLS peer mapping
        spool_dir = overrides.pop("spool_dir", tmp_path / "spool")
        listen_fields = set(SyslogListen.__dataclass_fields__)
        listen = replace(LOOPBACK, **{k: v for k, v in overrides.items() if k in listen_fields})
        tuning = {"flush_delay_ms": 5} | {
            k: v for k, v in overrides.items() if k not in listen_fields
        }
        settings = IngestSettings(**tuning)
        stop = asyncio.Event()
        service = IngestService(settings, listen, bus, spool_dir=spool_dir, enrolled=enrolled)
        async with service:
            running = asyncio.create_task(service.run(stop))
            try:
                yield service
            finally:
                stop.set()
                await asyncio.wait_for(running, 30)

    return start


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _signed(dir_: Path, name: str, ca: Path, ca_key: Path, ext: str) -> tuple[Path, Path]:
    key, csr, cert, extfile = (dir_ / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
    extfile.write_text(ext)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", extfile)  # fmt: skip
    return cert, key


def _ca(dir_: Path, name: str) -> tuple[Path, Path]:
    cert, key = dir_ / f"{name}.pem", dir_ / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1, a client one, and a rogue client."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is missing: run scripts/install-system-deps")
    dir_ = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca(dir_, "opmas-test-ca")
    rogue_ca, rogue_ca_key = _ca(dir_, "rogue-ca")
    server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    server = _signed(dir_, "server", ca, ca_key, server_ext)
    client = _signed(dir_, "router1", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    rogue = _signed(dir_, "rogue", rogue_ca, rogue_ca_key, "extendedKeyUsage=clientAuth\n")
    return Pki(ca, *server, *client, *rogue)


ServeApi = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve_api(settings: Settings, bus: Bus) -> ServeApi:
    """`async with serve_api(**ingest_overrides) as client`: uvicorn on a free port, no auth."""

    @contextlib.asynccontextmanager
    async def serve(**ingest: Any) -> AsyncIterator[httpx.AsyncClient]:
        own = settings.model_copy(
            update={
                "http_host": "127.0.0.1",
                "http_port": 0,
                "ingest_auth": False,
                "ingest": settings.ingest.model_copy(update=ingest),
            }
        )
        async with (
            open_resources(own, name="opmas-test-api") as resources,
            ApiServer(resources) as server,
        ):
            base = server.describe()
            assert base is not None
            async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as client:
                yield client

    return serve


async def send_in_chunks(writer: asyncio.StreamWriter, payload: bytes) -> None:
    """Write `payload` 64 KiB at a time, waiting whenever the socket's buffers are full (a
    paused receiver keeps this waiting: the sender holds the rest)."""
    for start in range(0, len(payload), 64 * 1024):
        writer.write(payload[start : start + 64 * 1024])
        await writer.drain()

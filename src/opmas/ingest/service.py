"""The `ingest` component: syslog over UDP, TCP and TLS -> RawBatch on logs.raw.

Entering binds the listeners (port 0 picks a free one; `ports` tells which); `run` publishes
until stopped, then closes the listeners and drains what was received before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import structlog

from opmas.bus.connect import Bus
from opmas.errors import BindError, ConfigError
from opmas.ingest.batcher import Batcher
from opmas.ingest.metrics import SOCKET_DROPS, Tally
from opmas.ingest.syslog_tcp import Connections, SyslogTcpSource, open_stream_server, tls_context
from opmas.ingest.syslog_udp import SocketDrops, SyslogUdpSource, open_udp
from opmas.messages import Transport
from opmas.settings import IngestSettings, Settings

log = structlog.get_logger(__name__)

HOUSEKEEPING_INTERVAL_S = 1.0


@dataclass(frozen=True)
class SyslogListen:
    """Where the syslog listeners bind and how long a line may be; a port of -1 is off."""

    host: str = "0.0.0.0"  # noqa: S104 - routers send from the network
    udp_port: int = 5514
    tcp_port: int = 5514
    tls_port: int = 6514
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    max_message: int = 65536

    @classmethod
    def from_settings(cls, settings: Settings) -> SyslogListen:
        return cls(
            host=settings.syslog_host,
            udp_port=settings.syslog_udp_port,
            tcp_port=settings.syslog_tcp_port,
            tls_port=settings.syslog_tls_port,
            tls_cert=settings.syslog_tls_cert,
            tls_key=settings.syslog_tls_key,
            tls_ca=settings.syslog_tls_ca,
            max_message=settings.syslog_max_message,
        )


class IngestService:
    """Receive syslog lines and publish them in batches; owns its listeners and batcher."""

    name = "ingest"

    def __init__(self, settings: IngestSettings, listen: SyslogListen, bus: Bus) -> None:
        self._settings = settings
        self._listen = listen
        self._bus = bus
        self.tally = Tally()
        self.connections = Connections(settings.max_connections, settings.idle_timeout_s)
        self.ports: dict[str, int] = {}
        self._batcher: Batcher | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_drops: SocketDrops | None = None
        self._servers: list[asyncio.Server] = []

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus) -> IngestService:
        """The component as `opmas up` runs it."""
        return cls(settings.ingest, SyslogListen.from_settings(settings), bus)

    def describe(self) -> str:
        """Where syslog is received, for `opmas up` and `opmas status`."""
        return "syslog " + ", ".join(
            f"{transport} {self._listen.host}:{port}" for transport, port in self.ports.items()
        )

    @property
    def batcher(self) -> Batcher:
        if self._batcher is None:
            raise RuntimeError("IngestService is not open")
        return self._batcher

    async def __aenter__(self) -> Self:
        self._batcher = Batcher(self._bus, self._settings)
        try:
            await self._bind(self._batcher)
        except OSError as exc:  # not a bind: those are BindError, naming port and variable
            self._close_listeners()
            raise ConfigError(f"cannot open the syslog listeners: {exc}") from exc
        except BaseException:
            self._close_listeners()
            raise
        log.debug("syslog listening", host=self._listen.host, **self.ports)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._close_listeners()
        self.connections.close_all()
        self.tally.fold()

    async def _bind(self, batcher: Batcher) -> None:
        listen, settings = self._listen, self._settings
        max_message = min(listen.max_message, batcher.max_line_bytes)
        if max_message < listen.max_message:
            log.warning(
                "syslog max message lowered to fit the bus",
                asked=listen.max_message,
                used=max_message,
            )
        if listen.udp_port >= 0:
            source = SyslogUdpSource(batcher, self.tally, max_message)
            with _binding("UDP", listen.host, listen.udp_port):
                self._udp, self.ports[Transport.UDP], self._udp_drops = await open_udp(
                    listen.host, listen.udp_port, source, settings.udp_receive_buffer
                )
        if listen.tcp_port >= 0:
            with _binding("TCP", listen.host, listen.tcp_port):
                server, self.ports[Transport.TCP] = await open_stream_server(
                    listen.host, listen.tcp_port, self._factory(batcher, Transport.TCP, max_message)
                )
            self._servers.append(server)
        if listen.tls_cert is not None and listen.tls_port >= 0:
            try:
                context = tls_context(listen.tls_cert, listen.tls_key, listen.tls_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"syslog TLS certificate, key or CA unusable: {exc}") from exc
            with _binding("TLS", listen.host, listen.tls_port):
                server, self.ports[Transport.TLS] = await open_stream_server(
                    listen.host,
                    listen.tls_port,
                    self._factory(batcher, Transport.TLS, max_message),
                    tls=context,
                    handshake_timeout_s=settings.tls_handshake_timeout_s,
                )
            self._servers.append(server)

    def _factory(self, batcher: Batcher, transport: str, max_message: int) -> _Factory:
        return _Factory(batcher, self.tally, self.connections, transport, max_message)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop`; then stop listening, close connections, drain, return."""
        batcher = self.batcher
        drained = asyncio.Event()
        publishing = asyncio.create_task(batcher.run(drained), name="ingest:publish")
        try:
            while not stop.is_set() and not publishing.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), HOUSEKEEPING_INTERVAL_S)
                self.housekeeping()
            self._close_listeners()
            self.connections.close_all()
            await asyncio.sleep(0)  # let connection_lost hand over the last frames
            drained.set()
            await publishing
        finally:
            publishing.cancel()
            self.tally.fold()
        log.info("ingest stopped", queued=batcher.queued)

    def housekeeping(self) -> None:
        """Fold the tally into the metrics and close idle connections (run every second)."""
        self.tally.fold()
        self.connections.sweep(time.monotonic())
        if self._udp_drops is not None:
            SOCKET_DROPS.inc(self._udp_drops.new_drops())

    def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        if self._udp_drops is not None:
            SOCKET_DROPS.inc(self._udp_drops.new_drops())
            self._udp_drops = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None


@contextlib.contextmanager
def _binding(transport: str, host: str, port: int) -> Iterator[None]:
    """Turn a failure to bind the `transport` listener into a BindError naming its variable."""
    try:
        yield
    except OSError as exc:
        raise BindError.from_os_error(
            exc,
            what=f"syslog {transport}",
            host=host,
            port=port,
            variable=f"OPMAS_SYSLOG_{transport}_PORT (-1: off)",
            host_variable="OPMAS_SYSLOG_HOST",
        ) from exc


@dataclass(frozen=True)
class _Factory:
    """Protocol factory of one stream listener."""

    batcher: Batcher
    tally: Tally
    connections: Connections
    transport: str
    max_message: int

    def __call__(self) -> SyslogTcpSource:
        return SyslogTcpSource(
            self.batcher,
            self.tally,
            self.connections,
            transport_name=self.transport,
            max_message=self.max_message,
        )

"""The `ingest` component: syslog over UDP, TCP and TLS -> RawBatch on logs.raw.

Entering opens the spool (files a previous run left are published first) and binds the
listeners (port 0 picks a free one; `ports` tells which); `run` publishes until stopped, then
closes the listeners and publishes or spools what was received before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.enrolled import EnrolledDevices
from opmas.errors import BindError, ConfigError
from opmas.ingest.batcher import Batcher
from opmas.ingest.metrics import (
    SOCKET_DROPS,
    SOURCE_DROPPED,
    SOURCE_REJECTED,
    SourceCounts,
    Tally,
)
from opmas.ingest.peers import PeerMap
from opmas.ingest.spool import Spool
from opmas.ingest.syslog_tcp import Connections, SyslogTcpSource, open_stream_server, tls_context
from opmas.ingest.syslog_udp import SocketDrops, SourceRates, SyslogUdpSource, open_udp
from opmas.messages import Transport
from opmas.settings import IngestSettings, Settings

log = structlog.get_logger(__name__)

HOUSEKEEPING_INTERVAL_S = 1.0
SPOOL_DIR = Path("spool") / "ingest"  # under data_dir


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
    tls_peers: dict[str, str] | None = None  # certificate fingerprint -> device hostname
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
            tls_peers=settings.syslog_tls_peers,
            max_message=settings.syslog_max_message,
        )


class IngestService:
    """Receive syslog lines and publish them in batches; owns its listeners and batcher."""

    name = "ingest"

    def __init__(
        self,
        settings: IngestSettings,
        listen: SyslogListen,
        bus: Bus,
        *,
        spool_dir: Path,
        enrolled: EnrolledDevices | None = None,
        partitions: int = 1,
    ) -> None:
        self._settings = settings
        self._spool_dir = spool_dir
        self._partitions = partitions
        self._enrolled = enrolled  # maps TLS client certificates to enrolled devices
        self._listen = listen
        self._bus = bus
        self.tally = Tally()
        self.source_drops = SourceCounts(SOURCE_DROPPED, settings.metrics_max_sources)
        self.source_rejects = SourceCounts(SOURCE_REJECTED, settings.metrics_max_sources)
        self.rates = SourceRates(
            settings.udp_source_rate, settings.udp_source_burst, settings.udp_max_sources
        )
        self.connections = Connections(
            settings.max_connections,
            settings.idle_timeout_s,
            max_per_source=settings.max_connections_per_source,
            source_rejects=self.source_rejects,
        )
        self.ports: dict[str, int] = {}
        self._batcher: Batcher | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_drops: SocketDrops | None = None
        self._udp_source: SyslogUdpSource | None = None
        self._servers: list[asyncio.Server] = []
        # what UDP lost since start, for `describe`: queue full, over a source's rate, kernel
        self.udp_drops = {"queue_full": 0, "source_rate": 0, "kernel": 0}

    @classmethod
    def from_settings(
        cls, settings: Settings, bus: Bus, engine: AsyncEngine | None = None
    ) -> IngestService:
        """The component as `opmas up` runs it."""
        enrolled = None
        if engine is not None and settings.syslog_tls_ca is not None:
            enrolled = EnrolledDevices(engine, settings.ingest.trust_refresh_s)
        return cls(
            settings.ingest,
            SyslogListen.from_settings(settings),
            bus,
            spool_dir=settings.data_dir / SPOOL_DIR,
            enrolled=enrolled,
            partitions=settings.pipeline.partitions,
        )

    def describe(self) -> str:
        """Where syslog is received, and what waits or was lost, for `opmas up` and
        `opmas status`."""
        text = "syslog " + ", ".join(
            f"{transport} {self._listen.host}:{port}" for transport, port in self.ports.items()
        )
        batcher = self._batcher
        if batcher is not None and (batcher.spooled or batcher.bus_failing):
            if batcher.bus_failing:
                waiting = "bus not storing"
            elif batcher.backlog.full:
                waiting = batcher.backlog.describe()
            else:
                waiting = "publishing the spool"
            text += f"; {waiting}: {batcher.spooled} lines spooled"
        elif batcher is not None and batcher.backlog.full:
            text += f"; {batcher.backlog.describe()}"
        if batcher is not None and batcher.paused:
            text += f"; {batcher.paused} connections paused (queue full)"
        if any(self.udp_drops.values()):
            drops = ", ".join(f"{why} {n}" for why, n in self.udp_drops.items() if n)
            text += f"; udp lines dropped: {drops}"
        return text

    @property
    def batcher(self) -> Batcher:
        if self._batcher is None:
            raise RuntimeError("IngestService is not open")
        return self._batcher

    async def __aenter__(self) -> Self:
        settings = self._settings
        spool = Spool(self._spool_dir, settings.spool_max_bytes, fsync=settings.spool_fsync)
        self._batcher = Batcher(self._bus, settings, spool, partitions=self._partitions)
        try:
            self._batcher.open()
        except OSError as exc:
            spool.close()
            raise ConfigError(f"cannot open the ingest spool {self._spool_dir}: {exc}") from exc
        try:
            if self._enrolled is not None:
                await self._enrolled.__aenter__()
            await self._bind(self._batcher)
        except OSError as exc:  # not a bind: those are BindError, naming port and variable
            self._close_listeners()
            raise ConfigError(f"cannot open the syslog listeners: {exc}") from exc
        except BaseException:
            self._close_listeners()
            self._batcher.close()
            if self._enrolled is not None:
                await self._enrolled.__aexit__(None, None, None)
            raise
        log.debug("syslog listening", host=self._listen.host, **self.ports)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._close_listeners()
        self.connections.close_all()
        self.fold()
        if self._batcher is not None:
            self._batcher.close()
        if self._enrolled is not None:
            await self._enrolled.__aexit__(None, None, None)

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
            source = self._udp_source = SyslogUdpSource(
                batcher, self.tally, max_message, self.rates
            )
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
        tls_set = (listen.tls_cert, listen.tls_key, listen.tls_ca) != (None, None, None)
        if tls_set and listen.tls_port >= 0:  # half-configured TLS: an error, not no listener
            context = tls_context(listen.tls_cert, listen.tls_key, listen.tls_ca)
            with _binding("TLS", listen.host, listen.tls_port):
                server, self.ports[Transport.TLS] = await open_stream_server(
                    listen.host,
                    listen.tls_port,
                    self._factory(batcher, Transport.TLS, max_message, self._peer_map()),
                    tls=context,
                    handshake_timeout_s=settings.tls_handshake_timeout_s,
                )
            self._servers.append(server)

    def _factory(
        self, batcher: Batcher, transport: str, max_message: int, peers: PeerMap | None = None
    ) -> _Factory:
        return _Factory(batcher, self.tally, self.connections, transport, max_message, peers)

    def _peer_map(self) -> PeerMap | None:
        """Client certificates to devices: only when a CA makes clients present one."""
        if self._listen.tls_ca is None:
            return None
        enrolled = self._enrolled.addresses if self._enrolled is not None else {}
        return PeerMap(self._listen.tls_peers or {}, enrolled)

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
            self.fold()
        log.info("ingest stopped", spooled=batcher.spooled, lost=batcher.lost)

    def housekeeping(self) -> None:
        """Fold the tally into the metrics, forget full rate buckets and close idle
        connections (run every second)."""
        self.fold()
        self.rates.prune(time.time())
        self.connections.sweep(time.monotonic())
        self._count_kernel_drops()

    def _count_kernel_drops(self) -> None:
        if self._udp_drops is not None:
            drops = self._udp_drops.new_drops()
            self.udp_drops["kernel"] += drops
            SOCKET_DROPS.inc(drops)

    def fold(self) -> None:
        """Move the counts of the hot path into the Prometheus metrics."""
        if self._udp_source is not None:
            self.tally.received[Transport.UDP] += self._udp_source.take_datagrams()
        self.udp_drops["queue_full"] += self.tally.dropped[Transport.UDP]
        for source, count in self.rates.take_drops():
            self.udp_drops["source_rate"] += count
            self.tally.dropped[Transport.UDP] += count
            self.source_drops.add(Transport.UDP, source, count)
        self.tally.fold()
        self.source_drops.fold()
        self.source_rejects.fold()

    def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        self._count_kernel_drops()
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
    peers: PeerMap | None = None

    def __call__(self) -> SyslogTcpSource:
        return SyslogTcpSource(
            self.batcher,
            self.tally,
            self.connections,
            transport_name=self.transport,
            max_message=self.max_message,
            peers=self.peers,
        )

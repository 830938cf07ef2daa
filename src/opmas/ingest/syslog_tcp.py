"""Syslog over TCP (RFC 6587) and TLS (RFC 5425) -> Batcher, one Framer per connection.

While the batcher is full no connection is read (the senders' queues hold the lines); idle
connections are closed; beyond `max_connections` a new one is refused (counted).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import structlog

from opmas.ingest.batcher import Batcher
from opmas.ingest.framing import Framer, raw_logs
from opmas.ingest.metrics import CONNECTIONS, IDLE_CLOSED, REJECTED, Tally

log = structlog.get_logger(__name__)

BACKLOG = 4096


class Connections:
    """The open syslog connections of a process, for the limit, the gauge and the idle sweep."""

    def __init__(self, max_connections: int, idle_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.open: set[SyslogTcpSource] = set()

    def __len__(self) -> int:
        return len(self.open)

    def sweep(self, now: float) -> int:
        """Close connections idle (and not paused by us) for longer than the timeout."""
        idle = [
            c for c in self.open if not c.paused and now - c.last_activity > self.idle_timeout_s
        ]
        for conn in idle:
            IDLE_CLOSED.labels(conn.transport_name).inc()
            conn.close()
        return len(idle)

    def pause_all(self, batcher: Batcher) -> None:
        """Stop reading every connection until the batcher has room again."""
        for conn in self.open:
            batcher.wait_for_room(conn)

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.close()


class SyslogTcpSource(asyncio.Protocol):
    """One syslog connection (plain or TLS): frames -> RawLog -> batcher."""

    def __init__(
        self,
        batcher: Batcher,
        tally: Tally,
        connections: Connections,
        *,
        transport_name: str,
        max_message: int,
    ) -> None:
        self._batcher = batcher
        self._tally = tally
        self._connections = connections
        self.transport_name = transport_name
        self._framer = Framer(max_message)
        self._transport: asyncio.Transport | None = None
        self._source_ip: str | None = None
        self._registered = False
        self.paused = False
        self.last_activity = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a stream transport (or uvloop's)
        if len(self._connections) >= self._connections.max_connections:
            REJECTED.labels(self.transport_name).inc()
            stream.abort()
            return
        self._transport = stream
        peer = transport.get_extra_info("peername")
        self._source_ip = peer[0] if isinstance(peer, tuple) and peer else None
        self._connections.open.add(self)
        self._registered = True
        CONNECTIONS.labels(self.transport_name).inc()
        if self._batcher.full:
            self._batcher.wait_for_room(self)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self._take(self._framer.feed(data), len(data))
        if self._batcher.full:
            self._connections.pause_all(self._batcher)

    def eof_received(self) -> bool | None:
        self._finish()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._registered:
            return
        self._registered = False
        self._finish()
        self._connections.open.discard(self)
        self._batcher.forget(self)
        CONNECTIONS.labels(self.transport_name).dec()
        self._transport = None

    def _finish(self) -> None:
        """The connection ended: the last unterminated frame is a line too."""
        frames = self._framer.close()
        self._take(frames, sum(len(f) for f, _ in frames))

    def _take(self, frames: list[tuple[bytes, bool]], nbytes: int) -> None:
        errors = self._framer.framing_errors
        if errors:
            self._tally.framing_errors[self.transport_name] += errors
            self._framer.framing_errors = 0
        if not frames:
            return
        items = raw_logs(frames, self.transport_name, self._source_ip, time.time())
        self._tally.received[self.transport_name] += len(items)
        truncated = sum(1 for _, cut in frames if cut)
        if truncated:
            self._tally.truncated[self.transport_name] += truncated
        self._batcher.add(items, nbytes)

    def pause(self) -> None:
        if self._transport is not None and not self.paused:
            self.paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and self.paused:
            self.paused = False
            self.last_activity = time.monotonic()
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def tls_context(cert: Path, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    """Server context for RFC 5425: TLS 1.2+, and client certificates required when `ca` is set."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def open_stream_server(
    host: str,
    port: int,
    factory: Callable[[], asyncio.Protocol],
    *,
    tls: ssl.SSLContext | None = None,
    handshake_timeout_s: float | None = None,
) -> tuple[asyncio.Server, int]:
    """Listen for TCP (or TLS) connections; return the server and its bound port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory,
        host,
        port,
        ssl=tls,
        ssl_handshake_timeout=handshake_timeout_s if tls is not None else None,
        backlog=BACKLOG,
        reuse_address=True,
    )
    bound = int(server.sockets[0].getsockname()[1])
    return server, bound

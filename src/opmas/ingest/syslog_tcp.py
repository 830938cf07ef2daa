"""Syslog over TCP (RFC 6587) and TLS (RFC 5425) -> Batcher, one Framer per connection.

While the batcher is full no connection is read (the senders' queues hold the lines); idle
connections are closed; beyond `max_connections`, or `max_connections_per_source` from one
IP, a new one is refused (counted).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter as IntCounter
from collections.abc import Callable
from pathlib import Path
from typing import cast

import structlog

from opmas.errors import ConfigError
from opmas.ingest.batcher import Batcher
from opmas.ingest.framing import Framer, raw_logs
from opmas.ingest.metrics import CONNECTIONS, IDLE_CLOSED, REJECTED, SourceCounts, Tally
from opmas.ingest.peers import PeerMap

log = structlog.get_logger(__name__)

BACKLOG = 4096


class Connections:
    """The open syslog connections of a process, for the limit, the gauge and the idle sweep."""

    def __init__(
        self,
        max_connections: int,
        idle_timeout_s: float,
        *,
        max_per_source: int | None = None,
        source_rejects: SourceCounts | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_source = max_per_source or max_connections
        self.idle_timeout_s = idle_timeout_s
        self.open: set[SyslogTcpSource] = set()
        self.per_source: IntCounter[str] = IntCounter()
        self._source_rejects = source_rejects

    def __len__(self) -> int:
        return len(self.open)

    def admit(self, conn: SyslogTcpSource, source: str | None) -> bool:
        """Count `conn` as open, unless the process or its source IP has its maximum open
        (refused and counted)."""
        if len(self.open) >= self.max_connections:
            REJECTED.labels(conn.transport_name).inc()
            return False
        if self.per_source[source or ""] >= self.max_per_source:
            REJECTED.labels(conn.transport_name).inc()
            if self._source_rejects is not None:
                self._source_rejects.add(conn.transport_name, source)
            return False
        self.per_source[source or ""] += 1
        self.open.add(conn)
        return True

    def remove(self, conn: SyslogTcpSource, source: str | None) -> None:
        if conn in self.open:
            self.open.discard(conn)
            self.per_source[source or ""] -= 1
            if self.per_source[source or ""] <= 0:
                del self.per_source[source or ""]

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
        peers: PeerMap | None = None,
    ) -> None:
        self._batcher = batcher
        self._peers = peers
        self._bound: str | None = None  # the device a mapped client certificate speaks for
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
        peer = transport.get_extra_info("peername")
        self._source_ip = peer[0] if isinstance(peer, tuple) and peer else None
        if not self._connections.admit(self, self._source_ip):
            stream.abort()
            return
        self._transport = stream
        if self._peers is not None:
            self._bound = self._peers.hostname_for(transport.get_extra_info("ssl_object"))
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
        self._connections.remove(self, self._source_ip)
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
        items = raw_logs(frames, self.transport_name, self._source_ip, time.time(), self._bound)
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


# TLS 1.2 suites with forward secrecy and an AEAD cipher; TLS 1.3 has nothing else.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
CERT_VAR, KEY_VAR, CA_VAR = "OPMAS_SYSLOG_TLS_CERT", "OPMAS_SYSLOG_TLS_KEY", "OPMAS_SYSLOG_TLS_CA"


def tls_context(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    """Server context for RFC 5425: TLS 1.2+ with AEAD suites only, client certificates
    required when `ca` is set.

    Raises:
        ConfigError: half-configured (a key or CA without a certificate, a certificate without
            its key) or an unreadable or unusable file; the message names the variable.
    """
    if cert is None:
        named = KEY_VAR if key is not None else CA_VAR
        raise ConfigError(f"{named} is set but {CERT_VAR} is not: set both, or neither")
    pem = _read(CERT_VAR, cert)
    if key is not None:
        _read(KEY_VAR, key)
    elif b"PRIVATE KEY-----" not in pem:
        raise ConfigError(f"{CERT_VAR} {cert} holds no private key: set {KEY_VAR}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        named = f"{CERT_VAR} and {KEY_VAR}" if key is not None else CERT_VAR
        raise ConfigError(f"{named}: not a usable certificate and key ({exc.reason})") from exc
    if ca is not None:
        _read(CA_VAR, ca)
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ConfigError(f"{CA_VAR} {ca}: not a PEM CA bundle ({exc.reason})") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable} {path}: cannot be read ({exc.strerror or exc})") from exc


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

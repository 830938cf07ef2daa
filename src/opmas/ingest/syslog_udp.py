"""Syslog over UDP (RFC 5426) -> Batcher: one datagram is one line; best effort by nature.

When the batcher is full the datagram is dropped and counted
(`opmas_ingest_dropped_total{transport="udp"}`); nothing is ever queued without bound. Each
source IP has a token bucket: beyond its rate and burst its datagrams are dropped and counted
per source, so that a flood from one address never takes the room of the others.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import structlog

from opmas.ingest.batcher import Batcher
from opmas.ingest.framing import cut_utf8, decode_line
from opmas.ingest.metrics import Tally
from opmas.messages import Flag, RawLog, Transport, new_id

log = structlog.get_logger(__name__)

_TRAILER = b"\r\n\x00"
SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it


class SourceRates:
    """A token bucket per source IP: `rate` lines/s, up to `burst` at once; refusals are
    counted per bucket (`take_drops`), so that a refused datagram costs a few operations.

    At most `max_sources` buckets are kept; a source beyond them shares one bucket with every
    other such source (spoofed addresses cannot grow the table). `prune` forgets full buckets,
    which are no different from new ones.
    """

    SHARED = ""

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max = max_sources
        self._buckets: dict[str, list[float]] = {}  # source -> [tokens, last time, refused]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        """Take one token from `source`'s bucket; False (counted) when it has none."""
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._bucket(source, now)
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = (tokens if tokens < self._burst else self._burst) - 1.0
            return True
        bucket[0] = tokens
        bucket[2] += 1
        return False

    def _bucket(self, source: str, now: float) -> list[float]:
        if len(self._buckets) >= self._max:
            source = self.SHARED
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = [self._burst, now, 0]
        return bucket

    def take_drops(self) -> list[tuple[str, int]]:
        """(source, datagrams refused) since the last call; the shared bucket is source ""."""
        drops = [(source, int(b[2])) for source, b in self._buckets.items() if b[2]]
        for source, _ in drops:
            self._buckets[source][2] = 0
        return drops

    def prune(self, now: float) -> None:
        """Forget the buckets that are full again (call after `take_drops`)."""
        full = [
            source
            for source, (tokens, last, refused) in self._buckets.items()
            if tokens + (now - last) * self._rate >= self._burst and not refused
        ]
        for source in full:
            del self._buckets[source]


class SyslogUdpSource(asyncio.DatagramProtocol):
    """Turns each datagram into a RawLog for the batcher; drops (counted) when it is full or
    when the source sent beyond its rate (counted per source by `rates`).

    `datagrams` counts every datagram received; the owner moves it into the tally.
    """

    def __init__(
        self, batcher: Batcher, tally: Tally, max_message: int, rates: SourceRates | None = None
    ) -> None:
        self._batcher = batcher
        self._dropped = tally.dropped
        self._truncated = tally.truncated
        self._max = max_message
        self._allow = rates.allow if rates is not None else None
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.datagrams += 1
        source = addr[0] if isinstance(addr[0], str) else None
        now = time.time()
        if self._allow is not None and not self._allow(source or "", now):
            return  # the cheapest path: a flood takes it
        if not self._batcher.has_room():
            self._dropped[Transport.UDP] += 1
            return
        truncated = len(data) > self._max
        if truncated:
            data = cut_utf8(data[: self._max])
            self._truncated[Transport.UDP] += 1
        else:
            data = data.rstrip(_TRAILER)
            if not data:
                return
        text, flags = decode_line(data)
        if truncated:
            flags = [Flag.TRUNCATED, *(flags or ())]
        if flags is None:
            item = RawLog(new_id(), now, text, Transport.UDP, source)
        else:
            item = RawLog(new_id(), now, text, Transport.UDP, source, flags)
        self._batcher.add_one(item, len(data))

    def take_datagrams(self) -> int:
        count, self.datagrams = self.datagrams, 0
        return count

    def error_received(self, exc: Exception) -> None:
        log.warning("udp receive error", error=repr(exc))


class SocketDrops:
    """Datagrams the kernel dropped for one socket (buffer full), read from /proc/net/udp*.

    These never reach OPMAS, so only the kernel can count them; elsewhere than Linux `read`
    returns None.
    """

    PROC_FILES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))

    def __init__(self, sock: socket.socket) -> None:
        self._inode = str(os.fstat(sock.fileno()).st_ino)
        self._last = self.read() or 0

    def read(self) -> int | None:
        for path in self.PROC_FILES:
            try:
                lines = path.read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 12 and fields[9] == self._inode:
                    return int(fields[12])
        return None

    def new_drops(self) -> int:
        """Drops since the last call."""
        now = self.read()
        if now is None:
            return 0
        delta, self._last = max(now - self._last, 0), now
        return delta


class DrainingTransport(asyncio.DatagramTransport):
    """Reads up to `BURST` datagrams per wake-up of a stdlib event loop, whose own transport
    reads one per loop turn: a flood from one address would fill the socket buffer, and the
    kernel would then drop the datagrams of every other address too."""

    BURST = 256

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        super().__init__({"socket": sock, "sockname": sock.getsockname()})
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        loop.add_reader(sock.fileno(), self._read_ready)
        protocol.connection_made(self)

    def _read_ready(self) -> None:
        receive, handle = self._sock.recvfrom, self._protocol.datagram_received
        for _ in range(self.BURST):
            try:
                data, addr = receive(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            handle(data, addr)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._protocol.connection_lost(None)


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask `size` bytes of receive buffer; beyond net.core.rmem_max only with CAP_NET_ADMIN
    (SO_RCVBUFFORCE), else the kernel grants what it allows."""
    force = getattr(socket, "SO_RCVBUFFORCE", SO_RCVBUFFORCE if sys.platform == "linux" else None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def open_udp(
    host: str, port: int, source: SyslogUdpSource, receive_buffer: int
) -> tuple[asyncio.DatagramTransport, int, SocketDrops]:
    """Bind the UDP listener; return its transport, the bound port (port 0: a free one) and
    its kernel drop counter."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if receive_buffer:
            _set_receive_buffer(sock, receive_buffer)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"udp {host}:{port}: {exc.strerror}") from exc
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport: asyncio.DatagramTransport
        if isinstance(loop, asyncio.SelectorEventLoop):
            transport = DrainingTransport(loop, sock, source)
        else:  # uvloop: its own transport already reads datagrams in bursts, in C
            transport, _ = await loop.create_datagram_endpoint(lambda: source, sock=sock)
    except BaseException:
        sock.close()
        raise
    bound = int(sock.getsockname()[1])
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if receive_buffer and granted < receive_buffer:  # Linux reports twice what it reserved
        log.warning(
            "udp receive buffer capped by the kernel: lines are lost in bursts; raise"
            f" net.core.rmem_max to at least {receive_buffer} (sysctl -w"
            f" net.core.rmem_max={receive_buffer}) or lower OPMAS_INGEST__UDP_RECEIVE_BUFFER",
            asked=receive_buffer,
            granted=granted // 2,
        )
    return transport, bound, SocketDrops(sock)

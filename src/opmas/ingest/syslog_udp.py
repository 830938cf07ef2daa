"""Syslog over UDP (RFC 5426) -> Batcher: one datagram is one line; best effort by nature.

When the batcher is full the datagram is dropped and counted
(`opmas_ingest_dropped_total{transport="udp"}`); nothing is ever queued without bound.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import structlog

from opmas.ingest.batcher import Batcher
from opmas.ingest.framing import cut_utf8, decode_line
from opmas.ingest.metrics import Tally
from opmas.messages import Flag, RawLog, Transport, new_id

log = structlog.get_logger(__name__)

_TRAILER = b"\r\n\x00"


class SyslogUdpSource(asyncio.DatagramProtocol):
    """Turns each datagram into a RawLog for the batcher; drops (counted) when it is full."""

    def __init__(self, batcher: Batcher, tally: Tally, max_message: int) -> None:
        self._batcher = batcher
        self._received = tally.received
        self._dropped = tally.dropped
        self._truncated = tally.truncated
        self._max = max_message

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._received[Transport.UDP] += 1
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
        source = addr[0] if isinstance(addr[0], str) else None
        if flags is None:
            item = RawLog(new_id(), time.time(), text, Transport.UDP, source)
        else:
            item = RawLog(new_id(), time.time(), text, Transport.UDP, source, flags)
        self._batcher.add_one(item, len(data))

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


async def open_udp(
    host: str, port: int, source: SyslogUdpSource, receive_buffer: int
) -> tuple[asyncio.DatagramTransport, int, SocketDrops]:
    """Bind the UDP listener; return its transport, the bound port (port 0: a free one) and
    its kernel drop counter."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"udp {host}:{port}: {exc.strerror}") from exc
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: source, sock=sock)
    except BaseException:
        sock.close()
        raise
    bound = int(sock.getsockname()[1])
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if receive_buffer and granted < receive_buffer:
        log.info("udp receive buffer smaller than asked", asked=receive_buffer, granted=granted)
    return transport, bound, SocketDrops(sock)

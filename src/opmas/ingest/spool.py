"""On-disk spool of sealed syslog batches (ingest, between the batcher and logs.raw).

Every round of sealed batches is written to one file before it is published and the file is
deleted once JetStream acknowledged all of it, so lines outlive a bus outage, a clean stop
and `kill -9`; the files left at start are published first. A file
`<seq>-<lines>.spool` is written under a temporary name, fsynced and renamed: it is whole or
absent. It holds records `>II` (length, CRC-32) + a msgpack `SpoolRecord`; a damaged record
ends the file (what follows is counted lost). One process at a time uses a spool (a lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import structlog

log = structlog.get_logger(__name__)

SUFFIX = ".spool"
_HEADER = struct.Struct(">II")


class SpoolBusy(OSError):
    """Another process holds the spool directory."""


class SpoolRecord(msgspec.Struct, array_like=True):
    """One bus message of logs.raw as it will be published: its Nats-Msg-Id and payload."""

    msg_id: str
    partition: int
    partitions: int  # the partition count it was cut for (re-cut if it changed)
    lines: int
    payload: bytes  # the encoded RawBatch


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SpoolRecord).decode


@dataclass(eq=False)
class Segment:
    """One spool file (`path` None: held in memory only, the spool had no room); `records`
    is kept in memory while there is room for it."""

    path: Path | None
    lines: int
    nbytes: int  # size on disk
    queued_bytes: int = 0  # bytes of the lines it holds, as counted by the batcher's bound
    records: list[SpoolRecord] | None = field(default=None, repr=False)


def frame(records: Iterable[SpoolRecord]) -> bytes:
    """The file content for `records`."""
    parts: list[bytes] = []
    for record in records:
        body = _encode(record)
        parts.append(_HEADER.pack(len(body), zlib.crc32(body)))
        parts.append(body)
    return b"".join(parts)


def unframe(data: bytes) -> tuple[list[SpoolRecord], bool]:
    """The records of a file's content, and whether all of it was intact."""
    records: list[SpoolRecord] = []
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _HEADER.size:
            return records, False
        length, crc = _HEADER.unpack_from(data, offset)
        body = data[offset + _HEADER.size : offset + _HEADER.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            return records, False
        try:
            records.append(_decode(body))
        except msgspec.DecodeError:
            return records, False
        offset += _HEADER.size + length
    return records, True


class Spool:
    """The spool directory: files in sequence order, bounded to `max_bytes` in all.

    `write` is blocking (run it in a thread); it neither counts nor lists what it wrote:
    `add` does, on the event loop.
    """

    def __init__(self, directory: Path, max_bytes: int, *, fsync: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._fsync = fsync
        self._bytes = 0
        self._next_seq = 0
        self._lock: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the files on disk (and of those being written)."""
        return self._bytes

    def open(self) -> list[Segment]:
        """Lock the directory (creating it), remove half-written files, return the files
        left, oldest first.

        Raises SpoolBusy when another process holds it, OSError when it cannot be used.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            lock = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                raise SpoolBusy(f"{self.directory} is used by another ingest process") from None
            self._lock = lock
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        found: list[tuple[int, Segment]] = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            seq, _, lines = path.stem.partition("-")
            if not (seq.isdigit() and lines.isdigit()):
                log.warning("spool file of unknown name left alone", path=str(path))
                continue
            found.append((int(seq), Segment(path, int(lines), path.stat().st_size)))
        found.sort(key=lambda pair: pair[0])
        self._bytes = sum(segment.nbytes for _, segment in found)
        self._next_seq = found[-1][0] + 1 if found else 0
        return [segment for _, segment in found]

    def close(self) -> None:
        """Let another process use the directory."""
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def has_room(self, nbytes: int) -> bool:
        """Whether `nbytes` more fit; an empty spool always takes one file."""
        return self._bytes == 0 or self._bytes + nbytes <= self.max_bytes

    def reserve(self, records: list[SpoolRecord], data: bytes) -> tuple[Segment, bytes]:
        """Name the next file for `records` (framed as `data`) and count its bytes; `write`
        it, or `release` it."""
        lines = sum(record.lines for record in records)
        path = self.directory / f"{self._next_seq:020d}-{lines}{SUFFIX}"
        self._next_seq += 1
        self._bytes += len(data)
        return Segment(path, lines, len(data), records=records), data

    def release(self, segment: Segment) -> None:
        """Forget a reserved file that could not be written."""
        self._bytes -= segment.nbytes

    def write(self, segment: Segment, data: bytes) -> None:
        """Write `data` as `segment`'s file: whole or not at all. Raises OSError."""
        if segment.path is None:
            raise ValueError("a held segment has no file")
        temporary = self.directory / f".{segment.path.stem}-{uuid.uuid4().hex}.tmp"
        try:
            with temporary.open("wb") as file:
                file.write(data)
                if self._fsync:
                    file.flush()
                    os.fsync(file.fileno())
            temporary.replace(segment.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        if self._fsync:
            self._sync_directory()

    def read(self, segment: Segment) -> list[SpoolRecord]:
        """The records of `segment`'s file; a damaged part is logged and skipped."""
        if segment.path is None:
            return list(segment.records or ())
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            log.warning("spool file vanished", path=str(segment.path), lines=segment.lines)
            return []
        records, intact = unframe(data)
        if not intact:
            kept = sum(record.lines for record in records)
            log.error(
                "spool file damaged: lines lost",
                path=str(segment.path),
                lines=segment.lines - kept,
                kept=kept,
            )
        return records

    def remove(self, segment: Segment) -> None:
        """Delete `segment`'s file (its lines are in JetStream)."""
        if segment.path is None:
            return
        segment.path.unlink(missing_ok=True)
        self._bytes -= segment.nbytes

    def _sync_directory(self) -> None:
        """Make the rename itself durable."""
        with contextlib.suppress(OSError):
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

"""The body of POST /api/v1/logs: read it within the size limit (gzip too), check it, and turn
it into RawLogs whose ids and arrival time the caller fills in.

Accepted: `application/json` (an array of strings, or of objects with `message` and optional
`hostname`, `timestamp`, `program`, `level`), or `text/plain` (one line per line).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import orjson

from opmas.errors import ApiError
from opmas.ingest.framing import cut_utf8, decode_line
from opmas.messages import Flag, RawLog, Transport, iso_utc

MAX_ERRORS_SHOWN = 10
OPTIONAL_FIELDS = ("hostname", "timestamp", "program", "level")
MAX_FIELD_BYTES = 1024


class PayloadTooLarge(ApiError):
    status_code = 413


class UnsupportedMediaType(ApiError):
    status_code = 415


class Unprocessable(ApiError):
    """A body that is not a valid batch; `detail` names each wrong place (`body[3].message`)."""

    status_code = 422


async def read_body(
    chunks: AsyncIterator[bytes], *, content_length: str | None, encoding: str | None, limit: int
) -> bytes:
    """The body, unzipped while it arrives when `Content-Encoding: gzip` (every member);
    PayloadTooLarge past `limit` bytes (sent or unzipped), UnsupportedMediaType for another
    encoding."""
    coding = (encoding or "identity").strip().lower()
    if coding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported; use gzip")
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    unzip = GzipReader(limit) if coding != "identity" else None
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        if unzip is not None:
            unzip.feed(chunk)
        else:
            parts.append(chunk)
    return unzip.finish() if unzip is not None else b"".join(parts)


class GzipReader:
    """Unzips a gzip stream fed in pieces, member after member (RFC 1952 allows several),
    never holding more than `limit` bytes of output: a zip bomb stops at the limit."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self._in_member = False  # input went into the current member and it has not ended
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Unzip `data`; PayloadTooLarge once the output passes the limit, Unprocessable for
        what is not gzip."""
        while data:
            self._in_member = True
            try:
                out = self._inflater.decompress(data, self._limit - self._size + 1)
            except zlib.error as exc:
                raise Unprocessable(f"body: not valid gzip ({exc})") from exc
            self._size += len(out)
            if self._size > self._limit:
                raise PayloadTooLarge(f"body larger than {self._limit} bytes once unzipped")
            self._parts.append(out)
            if self._inflater.eof:  # a member ended: what follows is the next member
                data = self._inflater.unused_data
                self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
                self._in_member = False
            else:
                data = self._inflater.unconsumed_tail

    def finish(self) -> bytes:
        """The whole output; Unprocessable when the last member is cut short (or none came)."""
        if self._in_member or not self._parts:
            raise Unprocessable("body: gzip stream is cut short")
        return b"".join(self._parts)


def gunzip(data: bytes, limit: int) -> bytes:
    """Unzip `data` (every member), refusing more than `limit` bytes of output."""
    reader = GzipReader(limit)
    reader.feed(data)
    return reader.finish()


class TooManyItems(PayloadTooLarge):
    """More lines in one body than `ingest.http_max_items`."""

    def __init__(self, max_items: int) -> None:
        super().__init__(
            f"more than {max_items} lines in one body (the limit, OPMAS_INGEST__HTTP_MAX_ITEMS)"
        )


def parse_body(
    body: bytes, content_type: str | None, max_message: int, max_items: int | None = None
) -> list[RawLog]:
    """RawLogs (transport http, no id or arrival time yet) from a JSON or text/plain body;
    TooManyItems past `max_items` lines, found before the lines are built."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        items = parse_json(body, max_message, max_items)
    elif media == "text/plain":
        items = parse_text(body, max_message, max_items)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media or 'missing'}; use application/json or text/plain"
        )
    if not items:
        raise Unprocessable("body: no lines")
    return items


def parse_text(body: bytes, max_message: int, max_items: int | None = None) -> list[RawLog]:
    few = max_items is None or body.count(b"\n") < max_items
    items: list[RawLog] = []
    for raw in body.split(b"\n") if few else _lines(body):
        raw = raw.rstrip(b"\r")
        if not raw:
            continue
        if max_items is not None and len(items) >= max_items:
            raise TooManyItems(max_items)
        truncated = len(raw) > max_message
        text, flags = decode_line(cut_utf8(raw[:max_message]) if truncated else raw)
        if truncated:
            flags = [Flag.TRUNCATED, *(flags or ())]
        items.append(RawLog("", 0.0, text, Transport.HTTP, flags=flags or []))
    return items


def _lines(body: bytes) -> Iterator[bytes]:
    """The lines of `body` one at a time (a body of millions of empty lines is no list)."""
    start = 0
    while (end := body.find(b"\n", start)) >= 0:
        yield body[start:end]
        start = end + 1
    yield body[start:]


# A JSON string, and an object without nested ones: what an item of a valid batch can hold.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_OBJECT = re.compile(rb"\{[^{}]*\}")


def _check_json_items(body: bytes, max_items: int) -> None:
    """TooManyItems when the array holds more than `max_items` items, counted before decoding
    (a body of millions of tiny items would cost ten times its size once decoded)."""
    if body.count(b",") < max_items:
        return
    bare = _JSON_OBJECT.sub(b"0", _JSON_STRING.sub(b"0", body))
    if bare.count(b",") >= max_items:
        raise TooManyItems(max_items)


class _Entry(msgspec.Struct):
    message: str
    hostname: str | None = None
    timestamp: str | int | float | None = None
    program: str | None = None
    level: str | None = None


_decode_entries = msgspec.json.Decoder(list[str | _Entry]).decode


def parse_json(body: bytes, max_message: int, max_items: int | None = None) -> list[RawLog]:
    """Fast path: msgspec checks the whole body in C; if it finds a fault, the slow path
    walks the body again to name every wrong place."""
    if max_items is not None:
        _check_json_items(body, max_items)
    try:
        entries = _decode_entries(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _parse_json_slowly(body, max_message)
    if max_items is not None and len(entries) > max_items:
        raise TooManyItems(max_items)
    items: list[RawLog] = []
    for entry in entries:
        if isinstance(entry, str):
            text, flags = _text(entry, max_message)
            items.append(RawLog("", 0.0, text, Transport.HTTP, flags=flags))
            continue
        text, flags = _text(entry.message, max_message)
        timestamp = entry.timestamp
        if timestamp is not None and not isinstance(timestamp, str):
            errors: list[str] = []
            timestamp = _epoch(timestamp, f"body[{len(items)}].timestamp", errors)
            if errors:
                raise Unprocessable(errors[0])
        items.append(
            RawLog(
                "",
                0.0,
                text,
                Transport.HTTP,
                flags=flags,
                hostname=_field(entry.hostname),
                program=_field(entry.program),
                level=_field(entry.level),
                timestamp=_field(timestamp),
            )
        )
    return items


def _field(value: str | None) -> str | None:
    return _text(value, MAX_FIELD_BYTES)[0] if value else None


def _parse_json_slowly(body: bytes, max_message: int) -> list[RawLog]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unprocessable(f"body: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise Unprocessable("body: expected a JSON array of strings or objects")
    items: list[RawLog] = []
    errors: list[str] = []
    for index, entry in enumerate(data):
        item = _entry(entry, f"body[{index}]", errors, max_message)
        if item is not None:
            items.append(item)
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = len(errors) - MAX_ERRORS_SHOWN
        raise Unprocessable(shown + (f"; and {more} more" if more > 0 else ""))
    return items


def _entry(entry: Any, where: str, errors: list[str], max_message: int) -> RawLog | None:
    if isinstance(entry, str):
        text, flags = _text(entry, max_message)
        return RawLog("", 0.0, text, Transport.HTTP, flags=flags)
    if not isinstance(entry, dict):
        errors.append(f"{where}: expected a string or an object")
        return None
    message = entry.get("message")
    if message is None:
        errors.append(f"{where}.message: field required")
    elif not isinstance(message, str):
        errors.append(f"{where}.message: must be a string")
    fields: dict[str, str | None] = {}
    for name in OPTIONAL_FIELDS:
        value = entry.get(name)
        if name == "timestamp" and isinstance(value, int | float) and not isinstance(value, bool):
            value = _epoch(value, f"{where}.timestamp", errors)
        if value is not None and not isinstance(value, str):
            errors.append(f"{where}.{name}: must be a string")
            value = None
        fields[name] = _field(value)
    if not isinstance(message, str):
        return None
    text, flags = _text(message, max_message)
    return RawLog("", 0.0, text, Transport.HTTP, flags=flags, **fields)


def _epoch(value: float, where: str, errors: list[str]) -> str | None:
    """A numeric timestamp (epoch seconds) as ISO 8601 UTC."""
    try:
        return iso_utc(float(value))
    except (OverflowError, OSError, ValueError):
        errors.append(f"{where}: not a valid epoch time")
        return None


def _text(value: str, max_bytes: int) -> tuple[str, list[str]]:
    """`value` cut to `max_bytes` of UTF-8 (flagged) with NUL replaced (flagged)."""
    flags: list[str] = []
    if len(value) * 4 > max_bytes:
        raw = value.encode(errors="surrogatepass")
        if len(raw) > max_bytes:
            value = cut_utf8(raw[:max_bytes]).decode(errors="replace")
            flags.append(Flag.TRUNCATED)
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
        flags.append(Flag.NUL_REPLACED)
    return value, flags

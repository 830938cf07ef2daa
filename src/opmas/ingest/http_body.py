"""The body of POST /api/v1/logs: read it within the size limit (gzip too), check it, and turn
it into RawLogs whose ids and arrival time the caller fills in.

Accepted: `application/json` (an array of strings, or of objects with `message` and optional
`hostname`, `timestamp`, `program`, `level`), or `text/plain` (one line per line).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
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
    """The body, unzipped when `Content-Encoding: gzip`; PayloadTooLarge past `limit` bytes
    (sent or unzipped), UnsupportedMediaType for another encoding."""
    coding = (encoding or "identity").strip().lower()
    if coding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported; use gzip")
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        parts.append(chunk)
    body = b"".join(parts)
    return body if coding == "identity" else gunzip(body, limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """Unzip `data`, refusing more than `limit` bytes of output (a zip bomb stops there)."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Unprocessable(f"body: not valid gzip ({exc})") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"body larger than {limit} bytes once unzipped")
    if not inflater.eof:
        raise Unprocessable("body: gzip stream is cut short")
    return out


def parse_body(body: bytes, content_type: str | None, max_message: int) -> list[RawLog]:
    """RawLogs (transport http, no id or arrival time yet) from a JSON or text/plain body."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        items = parse_json(body, max_message)
    elif media == "text/plain":
        items = parse_text(body, max_message)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media or 'missing'}; use application/json or text/plain"
        )
    if not items:
        raise Unprocessable("body: no lines")
    return items


def parse_text(body: bytes, max_message: int) -> list[RawLog]:
    items: list[RawLog] = []
    for raw in body.split(b"\n"):
        raw = raw.rstrip(b"\r")
        if not raw:
            continue
        truncated = len(raw) > max_message
        text, flags = decode_line(cut_utf8(raw[:max_message]) if truncated else raw)
        if truncated:
            flags = [Flag.TRUNCATED, *(flags or ())]
        items.append(RawLog("", 0.0, text, Transport.HTTP, flags=flags or []))
    return items


class _Entry(msgspec.Struct):
    message: str
    hostname: str | None = None
    timestamp: str | int | float | None = None
    program: str | None = None
    level: str | None = None


_decode_entries = msgspec.json.Decoder(list[str | _Entry]).decode


def parse_json(body: bytes, max_message: int) -> list[RawLog]:
    """Fast path: msgspec checks the whole body in C; if it finds a fault, the slow path
    walks the body again to name every wrong place."""
    try:
        entries = _decode_entries(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _parse_json_slowly(body, max_message)
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

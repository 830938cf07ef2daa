"""Syslog framing (ingest, first step): split a TCP byte stream into frames, decode them.

Three framings are recognised per frame, so a connection may mix them: LF-terminated,
NUL-terminated (OpenWRT logd with `log_trailer_null`) and RFC 6587 octet counting
(`<len> <msg>`, chosen when a frame starts with a digit run, a space and the `<` of a PRI: a
line that starts with a number, `12 packets dropped`, stays a delimited line).
"""

from __future__ import annotations

from opmas.messages import Flag, RawLog, new_id

__all__ = ["MAX_OCTET_COUNT", "Frame", "Framer", "cut_utf8", "decode_line", "raw_logs"]

LF, NUL, CR, LT = 0x0A, 0x00, 0x0D, 0x3C
DIGIT_0, DIGIT_9 = 0x30, 0x39
MAX_COUNT_DIGITS = 9
MAX_OCTET_COUNT = 64 * 1024 * 1024
"""An octet count above this is absurd: the frame is read as a delimited one instead."""

_TRAILER = b"\r\n\x00"

Frame = tuple[bytes, bool]
"""A frame's bytes and whether it was truncated to the maximum message size."""


def cut_utf8(data: bytes) -> bytes:
    """`data` without a UTF-8 sequence cut short at its end (it is the prefix of a longer text)."""
    end = len(data)
    i = end - 1
    while i >= 0 and end - i <= 3 and data[i] & 0xC0 == 0x80:
        i -= 1
    if i >= 0 and data[i] >= 0xC0:
        need = 2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4
        if end - i < need:
            return data[:i]
    return data


class Framer:
    """Frames of one connection: `feed()` bytes as they arrive, `close()` at the end.

    A frame longer than `max_message` is cut there and marked truncated; the rest of it is
    discarded up to the next delimiter, or for octet counting exactly `len` bytes. Held
    bytes never exceed `max_message` plus a count prefix. Empty frames are skipped.
    """

    __slots__ = ("_buf", "_delimited", "_discard", "_max", "_skip", "framing_errors")

    def __init__(self, max_message: int) -> None:
        if max_message < 1:
            raise ValueError("max_message must be at least 1")
        self._max = max_message
        self._buf = b""
        self._skip = 0  # bytes of an oversize octet-counted frame still to discard
        self._discard = False  # discarding an oversize delimited frame up to its delimiter
        self._delimited = False  # the held bytes start a frame already read as delimited
        self.framing_errors = 0  # octet counts that were zero or absurd

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the end of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data`, in order."""
        buf = self._buf + data if self._buf else data
        out: list[Frame] = []
        n, pos = len(buf), 0
        next_lf = next_nul = -2  # cached delimiter positions: -2 unknown, -1 none left
        judged = self._delimited  # so a count is judged (and counted as an error) once
        self._delimited = False
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                continue
            c = buf[pos]
            if not self._discard:
                if c in (LF, NUL, CR):
                    pos += 1
                    continue
                if DIGIT_0 <= c <= DIGIT_9 and not judged:
                    octet = self._octet_frame(buf, pos, out)
                    if octet == -1:
                        break  # wait for more bytes
                    if octet >= 0:
                        pos = octet
                        continue
            if next_lf != -1 and next_lf < pos:
                next_lf = buf.find(b"\n", pos)
            if next_nul != -1 and next_nul < pos:
                next_nul = buf.find(b"\x00", pos)
            end = next_lf if next_nul < 0 or 0 <= next_lf < next_nul else next_nul
            if end < 0:
                if not self._discard and n - pos > self._max:
                    out.append((cut_utf8(buf[pos : pos + self._max]), True))
                    self._discard = True
                if self._discard:
                    pos = n
                else:
                    self._delimited = True
                break
            if self._discard:
                self._discard = False
            elif end - pos > self._max:
                out.append((cut_utf8(buf[pos : pos + self._max]), True))
            else:
                out.append((buf[pos:end].rstrip(b"\r"), False))
            pos = end + 1
            judged = False
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _octet_frame(self, buf: bytes, pos: int, out: list[Frame]) -> int:
        """Read an octet-counted frame at `pos`: the position after it, -1 to wait for more
        bytes, -2 when the bytes at `pos` are not an octet count (read them as delimited)."""
        n = len(buf)
        space = buf.find(b" ", pos, pos + MAX_COUNT_DIGITS + 1)
        if space < 0:
            head = buf[pos : pos + MAX_COUNT_DIGITS + 1]
            return -1 if len(head) <= MAX_COUNT_DIGITS and head.isdigit() else -2
        digits = buf[pos:space]
        if not digits.isdigit():
            return -2
        length = int(digits)
        if length == 0 or length > MAX_OCTET_COUNT or digits[0] == DIGIT_0:
            self.framing_errors += 1
            return -2
        start = space + 1
        if start >= n:
            return -1
        if buf[start] != LT:
            return -2  # `12 packets dropped`: a line that starts with a number, not a count
        take = min(length, self._max)
        if n - start < take:
            return -1
        frame = buf[start : start + take]
        if length > self._max:
            out.append((cut_utf8(frame), True))
            self._skip = length - take
        else:
            out.append((frame.rstrip(_TRAILER), False))
        return start + take

    def close(self) -> list[Frame]:
        """The last, unterminated frame when the connection ends (a cut octet frame: truncated)."""
        rest, self._buf = self._buf, b""
        delimited, self._delimited = self._delimited, False
        if self._skip or self._discard or not rest:
            return []
        head, sep, body = rest.partition(b" ")
        if (
            not delimited
            and sep
            and body[:1] == b"<"
            and head.isdigit()
            and 0 < int(head) <= MAX_OCTET_COUNT
            and head[0] != DIGIT_0
        ):
            body = cut_utf8(body).rstrip(_TRAILER)
            return [(body, True)] if body else []
        rest = rest.rstrip(_TRAILER)
        if len(rest) > self._max:  # digits held while waiting for a count's space
            return [(cut_utf8(rest[: self._max]), True)]
        return [(rest, False)] if rest else []


def decode_line(data: bytes) -> tuple[str, list[str] | None]:
    """Text of a frame, and its flags (None when there are none).

    Undecodable bytes become U+FFFD (INVALID_UTF8); NUL becomes U+FFFD (NUL_REPLACED),
    because PostgreSQL text cannot hold it.
    """
    flags: list[str] | None = None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = data.decode(errors="replace")
        flags = [Flag.INVALID_UTF8]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
        flags = [*(flags or ()), Flag.NUL_REPLACED]
    return text, flags


def raw_logs(
    frames: list[Frame],
    transport: str,
    source_ip: str | None,
    now: float,
    bound_hostname: str | None = None,
) -> list[RawLog]:
    """One RawLog per frame, all arriving at `now`; `bound_hostname`: the device a mapped
    client certificate speaks for."""
    items: list[RawLog] = []
    for data, truncated in frames:
        text, flags = decode_line(data)
        if truncated:
            flags = [Flag.TRUNCATED, *(flags or ())]
        if flags is None:
            items.append(RawLog(new_id(), now, text, transport, source_ip))
        else:
            items.append(RawLog(new_id(), now, text, transport, source_ip, flags))
    if bound_hostname is not None:
        for item in items:
            item.bound_hostname = bound_hostname
    return items

"""Framer: LF, NUL and octet-counted frames, mixed and cut anywhere; limits; decoding."""

from __future__ import annotations

import pytest

from opmas.ingest.framing import MAX_OCTET_COUNT, Framer, cut_utf8, decode_line, raw_logs
from opmas.messages import Flag, Transport


def frames_of(framer: Framer, *chunks: bytes) -> list[tuple[bytes, bool]]:
    out: list[tuple[bytes, bool]] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out + framer.close()


def lines_of(*chunks: bytes, max_message: int = 1024) -> list[bytes]:
    return [data for data, _ in frames_of(Framer(max_message), *chunks)]


def octet(msg: bytes) -> bytes:
    return str(len(msg)).encode() + b" " + msg


def test_newline_frames_are_split_and_crlf_stripped() -> None:
    assert lines_of(b"<13>one\n<13>two\r\n<13>three\n") == [b"<13>one", b"<13>two", b"<13>three"]


def test_nul_terminated_frames_from_logd_trailer_null() -> None:
    assert lines_of(b"<30>a\x00<30>b\x00") == [b"<30>a", b"<30>b"]


def test_octet_counted_frames_may_hold_newlines_and_nul() -> None:
    assert lines_of(octet(b"<13>a\nb") + octet(b"<13>c\x00d")) == [b"<13>a\nb", b"<13>c\x00d"]


def test_octet_frame_trailing_newline_is_stripped() -> None:
    assert lines_of(octet(b"<13>rsyslog style\n")) == [b"<13>rsyslog style"]


def test_mixed_framings_on_one_connection() -> None:
    stream = b"<1>lf\n" + octet(b"<2>counted") + b"<3>nul\x00" + octet(b"<4>again") + b"<5>end\n"
    assert lines_of(stream) == [b"<1>lf", b"<2>counted", b"<3>nul", b"<4>again", b"<5>end"]


def test_empty_frames_are_skipped() -> None:
    assert lines_of(b"\n\n\x00\r\n<1>x\n\n") == [b"<1>x"]


@pytest.mark.parametrize(
    "stream",
    [
        b"<1>alpha\n<2>beta\x00" + octet(b"<3>gamma delta") + b"<4>epsilon\n",
        octet(b"<13>" + "ünïcödé ✓".encode() * 5) + b"<14>tail\n",
    ],
)
def test_a_stream_cut_at_every_byte_gives_the_same_frames(stream: bytes) -> None:
    whole = lines_of(stream)
    for cut in range(1, len(stream)):
        assert lines_of(stream[:cut], stream[cut:]) == whole, cut
    assert lines_of(*(stream[i : i + 1] for i in range(len(stream)))) == whole


def test_unterminated_last_line_is_delivered_at_close() -> None:
    assert frames_of(Framer(100), b"<1>a\n<1>no newline") == [
        (b"<1>a", False),
        (b"<1>no newline", False),
    ]


def test_octet_frame_cut_by_close_is_delivered_truncated() -> None:
    assert frames_of(Framer(100), b"20 <13>only ten") == [(b"<13>only ten", True)]


def test_digits_without_space_are_a_delimited_line() -> None:
    assert lines_of(b"2024-05-01T10:00:00 boot\n1234\n") == [b"2024-05-01T10:00:00 boot", b"1234"]


def test_negative_count_is_a_delimited_line() -> None:
    assert lines_of(b"-5 <13>minus\n<13>next\n") == [b"-5 <13>minus", b"<13>next"]


@pytest.mark.parametrize(
    "head", [b"0 ", b"007 ", str(MAX_OCTET_COUNT + 1).encode() + b" ", b"9999999999 "]
)
def test_zero_or_absurd_count_is_read_as_a_delimited_line(head: bytes) -> None:
    framer = Framer(1024)
    frames = frames_of(framer, head + b"<13>x\n<13>y\n")
    assert frames == [(head + b"<13>x", False), (b"<13>y", False)]
    assert framer.framing_errors == (0 if head == b"9999999999 " else 1)


def test_oversize_delimited_frame_is_truncated_and_rest_discarded() -> None:
    framer = Framer(10)
    frames = frames_of(framer, b"<13>" + b"x" * 30, b"y" * 30 + b"\n<13>ok\n")
    assert frames == [(b"<13>xxxxxx", True), (b"<13>ok", False)]
    assert framer.buffered == 0


def test_oversize_frame_with_its_delimiter_in_the_same_chunk() -> None:
    assert frames_of(Framer(5), b"<1>abcdefgh\n<1>a\n") == [(b"<1>ab", True), (b"<1>a", False)]


def test_oversize_octet_frame_skips_exactly_its_length() -> None:
    body = b"<13>" + b"z" * 96  # 100 bytes
    framer = Framer(10)
    frames = frames_of(framer, octet(body)[:50], octet(body)[50:] + octet(b"<13>next"))
    assert frames == [(b"<13>zzzzzz", True), (b"<13>next", False)]


def test_held_bytes_stay_bounded_while_a_huge_line_streams_in() -> None:
    framer = Framer(1000)
    for _ in range(100):
        framer.feed(b"a" * 4096)
        assert framer.buffered <= 1000
    assert framer.feed(b"\n<1>b\n") == [(b"<1>b", False)]


def test_truncation_does_not_split_a_utf8_character() -> None:
    text = "<13>" + "é" * 10  # 4 + 20 bytes
    framer = Framer(9)
    [(data, truncated)] = frames_of(framer, text.encode() + b"\n")
    assert truncated
    assert data == "<13>éé".encode()
    assert decode_line(data) == ("<13>éé", None)


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"ab\xc3", b"ab"),
        (b"ab\xe2\x82", b"ab"),
        (b"ab\xe2\x82\xac", b"ab\xe2\x82\xac"),
        (b"abc", b"abc"),
    ],
)
def test_cut_utf8_drops_an_incomplete_last_character(data: bytes, kept: bytes) -> None:
    assert cut_utf8(data) == kept


def test_invalid_utf8_is_replaced_and_flagged() -> None:
    assert decode_line(b"<13>bad \xff\xfe end") == ("<13>bad \ufffd\ufffd end", [Flag.INVALID_UTF8])


def test_nul_is_replaced_and_flagged() -> None:
    assert decode_line(b"a\x00b\xff") == ("a\ufffdb\ufffd", [Flag.INVALID_UTF8, Flag.NUL_REPLACED])


def test_raw_logs_carry_metadata_and_flags() -> None:
    items = raw_logs([(b"<13>ok", False), (b"<13>cut\xff", True)], Transport.TLS, "10.0.0.1", 12.5)
    assert [i.line for i in items] == ["<13>ok", "<13>cut\ufffd"]
    assert items[0].flags == []
    assert items[1].flags == [Flag.TRUNCATED, Flag.INVALID_UTF8]
    assert {(i.transport, i.source_ip, i.arrival_ts) for i in items} == {("tls", "10.0.0.1", 12.5)}
    assert items[0].event_id != items[1].event_id


def test_framer_refuses_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Framer(0)

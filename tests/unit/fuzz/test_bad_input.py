"""One test per class of bad input, through the path a TCP line takes (Framer -> RawLog ->
ParserEngine) or the HTTP body decoder: each names what is kept, flagged or refused."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from opmas.ingest.framing import MAX_OCTET_COUNT, Framer, raw_logs
from opmas.ingest.http_body import PayloadTooLarge, Unprocessable, gunzip, parse_body
from opmas.messages import Flag, ParsedEvent
from opmas.parser import ParserEngine

SOURCE = "192.0.2.1"
ARRIVAL = datetime(2026, 11, 21, 10, 0, 30, tzinfo=UTC).timestamp()  # DIRECT's time + 29 s
MAX = 65_536
DIRECT = b"<38>Nov 21 10:00:01 OpenWrt-R1 dropbear[1234]: "
BAD_PASSWORD = b"Bad password attempt for 'root' from 198.51.100.7:52114"


@pytest.fixture
def engine() -> ParserEngine:
    """A fresh engine per test: what it met before decides which lines are clock_skew."""
    return ParserEngine.from_dirs()


def events_of(
    engine: ParserEngine, stream: bytes, arrival: float = ARRIVAL, max_message: int = MAX
) -> list[ParsedEvent]:
    """What one TCP connection sending `stream` and closing gives."""
    framer = Framer(max_message)
    frames = framer.feed(stream) + framer.close()
    return engine.parse_many(raw_logs(frames, "tcp", SOURCE, arrival))


def octet(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


def test_invalid_utf8_is_replaced_flagged_and_the_line_still_parses(engine: ParserEngine) -> None:
    [event] = events_of(engine, DIRECT + BAD_PASSWORD + b" \xff\xfe\xc3\n")
    assert event.flags == [Flag.INVALID_UTF8]
    assert event.parser_name == "dropbear_parser_v1"
    assert event.structured_fields["ip"] == "198.51.100.7"
    assert event.message.endswith(" \ufffd\ufffd\ufffd")


def test_a_line_of_invalid_utf8_only_is_kept_unparsed(engine: ParserEngine) -> None:
    [event] = events_of(engine, b"\xff\xfe\xfd\x80\n")
    assert (event.parser_name, event.log_source_type) == ("unparsed", "other")
    assert event.message == "\ufffd" * 4
    assert event.flags == [Flag.INVALID_UTF8]


def test_nul_inside_an_octet_frame_is_replaced_and_flagged(engine: ParserEngine) -> None:
    [event] = events_of(engine, octet(DIRECT + b"Bad password\x00attempt"))
    assert event.flags == [Flag.NUL_REPLACED]
    assert event.message == "Bad password\ufffdattempt"
    assert event.process_name == "dropbear"


def test_nul_ends_a_delimited_frame_as_logd_trailer_null_does(engine: ParserEngine) -> None:
    events = events_of(engine, DIRECT + BAD_PASSWORD + b"\x00" + DIRECT + BAD_PASSWORD + b"\x00")
    assert [e.structured_fields["ip"] for e in events] == ["198.51.100.7", "198.51.100.7"]
    assert all(not e.flags for e in events)


def test_nul_in_an_http_line_is_replaced_and_flagged(engine: ParserEngine) -> None:
    [item] = parse_body(b'["<30>Nov 21 10:00:01 h app: a\\u0000b"]', "application/json", MAX)
    assert item.line == "<30>Nov 21 10:00:01 h app: a\ufffdb"
    assert item.flags == [Flag.NUL_REPLACED]


def test_a_one_mebibyte_line_is_cut_to_the_maximum_and_the_next_line_survives(
    engine: ParserEngine,
) -> None:
    huge = DIRECT + BAD_PASSWORD + b" " + b"x" * (1024 * 1024) + b"\n"
    first, second = events_of(engine, huge + DIRECT + BAD_PASSWORD + b"\n")
    assert first.flags == [Flag.TRUNCATED]
    assert len(first.message.encode()) == MAX - len(DIRECT)
    assert first.structured_fields["ip"] == "198.51.100.7"  # the head still parses
    assert second.flags == []
    assert second.message == BAD_PASSWORD.decode()


def test_a_one_mebibyte_line_over_http_is_cut_and_flagged() -> None:
    [item] = parse_body(b"x" * (1024 * 1024) + b"\n", "text/plain", MAX)
    assert len(item.line) == MAX
    assert item.flags == [Flag.TRUNCATED]


def test_an_octet_count_too_small_splits_the_message_into_two_events(
    engine: ParserEngine,
) -> None:
    message = DIRECT + BAD_PASSWORD
    first, second = events_of(engine, b"20 " + message + b"\n")
    assert message[:20] == b"<38>Nov 21 10:00:01 "  # a header and nothing else
    assert (first.parser_name, first.original_ts, first.message) == (
        "unparsed",
        "Nov 21 10:00:01",
        "",
    )
    assert second.message == message[20:].decode()  # the rest, read as a delimited line
    assert (second.parser_name, second.hostname) == ("unparsed", None)


def test_an_octet_count_too_large_swallows_what_follows_up_to_its_count(
    engine: ParserEngine,
) -> None:
    message = DIRECT + BAD_PASSWORD
    stream = str(len(message) + 10).encode() + b" " + message + b"\n" + DIRECT + BAD_PASSWORD
    first, second = events_of(engine, stream)
    assert first.message == BAD_PASSWORD.decode() + "\n" + DIRECT[:9].decode()
    assert second.message == DIRECT[9:].decode() + BAD_PASSWORD.decode()


def test_an_octet_count_cut_by_the_end_of_the_connection_is_kept_truncated(
    engine: ParserEngine,
) -> None:
    [event] = events_of(engine, b"9999 " + DIRECT + BAD_PASSWORD)
    assert event.flags == [Flag.TRUNCATED]
    assert event.structured_fields["ip"] == "198.51.100.7"


def test_an_absurd_octet_count_is_a_framing_error_and_a_delimited_line() -> None:
    framer = Framer(MAX)
    count = str(MAX_OCTET_COUNT + 1).encode()
    assert framer.feed(count + b" <13>x\n") == [(count + b" <13>x", False)]
    assert framer.framing_errors == 1


def test_a_count_not_followed_by_a_pri_is_a_line_that_starts_with_a_number(
    engine: ParserEngine,
) -> None:
    [event] = events_of(engine, b"12 packets dropped on wan\n")
    assert event.message == "12 packets dropped on wan"


def test_a_huge_octet_count_holds_no_more_than_the_maximum() -> None:
    framer = Framer(1024)
    assert framer.feed(b"999999 <13>" + b"y" * 5000) == [(b"<13>" + b"y" * 1020, True)]
    assert framer.buffered == 0
    assert framer.feed(b"z" * 10_000) == []  # still inside the promised 999,999 bytes
    assert framer.buffered == 0


def test_empty_lines_give_no_events(engine: ParserEngine) -> None:
    assert events_of(engine, b"\n\r\n\x00\n\n") == []


def test_an_http_body_of_empty_lines_is_refused() -> None:
    with pytest.raises(Unprocessable, match="no lines"):
        parse_body(b"\n\r\n\n", "text/plain", MAX)


def test_an_empty_line_given_to_the_engine_is_an_unparsed_event(engine: ParserEngine) -> None:
    [event] = engine.parse_many(raw_logs([(b"", False)], "tcp", SOURCE, ARRIVAL))
    assert (event.parser_name, event.message, event.hostname) == ("unparsed", "", None)


@pytest.mark.parametrize("pri", [b"192", b"999", b"-1", b"x", b"1000"])
def test_a_pri_out_of_range_is_flagged_and_the_rest_parsed(
    engine: ParserEngine, pri: bytes
) -> None:
    [event] = events_of(engine, b"<" + pri + b">" + DIRECT[4:] + BAD_PASSWORD + b"\n")
    assert Flag.INVALID_PRI in event.flags
    assert event.facility is None  # no PRI: no facility, the pattern's own level
    assert (event.hostname, event.process_name) == ("OpenWrt-R1", "dropbear")
    assert event.structured_fields["ip"] == "198.51.100.7"


@pytest.mark.parametrize(
    ("stamp", "event_ts"),
    [
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59-14:00", None),  # past year 9999 in UTC
        ("0001-01-01T00:00:00+14:00", None),  # before year 1 in UTC
        ("0000-01-01T00:00:00Z", None),
    ],
)
def test_dates_far_in_the_future_or_past_are_kept_or_left_without_event_time(
    engine: ParserEngine, stamp: str, event_ts: str | None
) -> None:
    line = f"<38>1 {stamp} OpenWrt-R1 dropbear 1234 - - ".encode() + BAD_PASSWORD
    [event] = events_of(engine, line + b"\n")
    if event_ts and stamp.startswith("9999"):  # ahead of its arrival: counted at arrival
        assert event.flags == [Flag.CLOCK_SKEW]
    else:  # the first line this engine meets: nothing to be behind of
        assert event.flags == []
    assert event.original_ts == stamp
    assert event.event_ts == event_ts
    if event_ts is not None:
        assert datetime.fromisoformat(event_ts).year == int(stamp[:4])  # the store reads it
    assert event.structured_fields["ip"] == "198.51.100.7"


@pytest.mark.parametrize(
    ("stamp", "arrival", "event_ts"),
    [
        (b"Dec 31 23:59:58", "2027-01-01T00:00:03", "2026-12-31T23:59:58.000Z"),
        (b"Jan  1 00:00:02", "2026-12-31T23:59:59", "2027-01-01T00:00:02.000Z"),
        (b"Dec 31 23:59:59", "2027-01-01T23:00:00", "2026-12-31T23:59:59.000Z"),
        (b"Jan  1 12:00:00", "2026-12-31T11:00:00", "2026-01-01T12:00:00.000Z"),  # 25 h ahead
    ],
)
def test_year_less_lines_around_new_year_get_the_year_nearest_before_arrival(
    engine: ParserEngine, stamp: bytes, arrival: str, event_ts: str
) -> None:
    at = datetime.fromisoformat(arrival).replace(tzinfo=UTC).timestamp()
    [event] = events_of(engine, b"<38>" + stamp + DIRECT[19:] + BAD_PASSWORD + b"\n", at)
    assert event.event_ts == event_ts


@pytest.mark.parametrize("host", [b"ho\x1bst", b"ho\x07st", b"r\x7f1", b"rou\xc2\x85ter"])
def test_a_hostname_with_control_characters_is_replaced_and_kept_escaped(
    engine: ParserEngine, host: bytes
) -> None:
    [event] = events_of(engine, b"<38>Nov 21 10:00:01 " + host + DIRECT[30:] + BAD_PASSWORD + b"\n")
    assert event.hostname == SOURCE
    assert Flag.INVALID_HOSTNAME in event.flags
    claimed = event.structured_fields["claimed_hostname"]
    assert isinstance(claimed, str)
    assert claimed.isprintable()
    assert claimed == host.decode().encode("unicode_escape").decode()
    assert event.structured_fields["ip"] == "198.51.100.7"


def test_rfc5424_with_every_nilvalue_keeps_the_message_and_no_header_field(
    engine: ParserEngine,
) -> None:
    [event] = events_of(engine, b"<14>1 - - - - - - the message\n")
    assert (event.hostname, event.process_name, event.pid, event.original_ts) == (None,) * 4
    assert (event.facility, event.log_level) == ("user", "INFO")
    assert (event.parser_name, event.message, event.event_ts) == ("unparsed", "the message", None)
    assert "sd" not in event.structured_fields


def test_rfc5424_with_every_nilvalue_and_no_message_is_an_empty_event(
    engine: ParserEngine,
) -> None:
    [event] = events_of(engine, b"<14>1 - - - - - -\n")
    assert (event.parser_name, event.message, event.facility) == ("unparsed", "", "user")


def test_structured_data_escapes_decode(engine: ParserEngine) -> None:
    line = rb'<38>1 2026-11-21T10:00:01Z r app - - [x@1 a="\]" b="\"" c="\\" d="\n"] msg'
    [event] = events_of(engine, line + b"\n")
    assert event.structured_fields["sd"] == {"x@1": {"a": "]", "b": '"', "c": "\\", "d": "\\n"}}
    assert event.message == "msg"


def test_duplicate_sd_ids_keep_the_first_and_count_the_rest(engine: ParserEngine) -> None:
    line = b'<38>1 2026-11-21T10:00:01Z r app - - [o ip="10.0.0.1"][o ip="6.6.6.6"][o x="1"] m'
    [event] = events_of(engine, line + b"\n")
    assert event.structured_fields["sd"] == {"o": {"ip": "10.0.0.1"}}
    assert event.structured_fields["sd_dropped"] == 2


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"\xef\xbb\xbf" + DIRECT + BAD_PASSWORD + b"\n", BAD_PASSWORD.decode()),  # line start
        (b"<38>1 2026-11-21T10:00:01Z OpenWrt-R1 dropbear 1234 - - \xef\xbb\xbf" + BAD_PASSWORD
         + b"\n", BAD_PASSWORD.decode()),  # RFC 5424 MSG
    ],
)  # fmt: skip
def test_a_bom_is_dropped_where_it_may_stand(
    engine: ParserEngine, stream: bytes, message: str
) -> None:
    [event] = events_of(engine, stream)
    assert (event.message, event.flags) == (message, [])
    assert event.structured_fields["ip"] == "198.51.100.7"


def test_binary_garbage_is_kept_unparsed_line_by_line(engine: ParserEngine) -> None:
    garbage = bytes(range(1, 10)) + b"\xff\xfe" + bytes(range(0x80, 0x90)) + b"\n\x01\x02\n"
    first, second = events_of(engine, garbage)
    assert first.parser_name == second.parser_name == "unparsed"
    assert first.flags == [Flag.INVALID_UTF8]
    assert first.message == garbage[:9].decode() + "\ufffd" * 18
    assert second.message == "\x01\x02"


def test_binary_garbage_over_http_is_a_clear_error() -> None:
    with pytest.raises(Unprocessable, match="not valid JSON"):
        parse_body(b"\x00\xff\x13garbage", "application/json", MAX)
    with pytest.raises(Unprocessable, match="not valid gzip"):
        gunzip(b"garbage\xff\x00", MAX)
    with pytest.raises(Unprocessable, match="cut short"):
        gunzip(gzip.compress(b"<30>x")[:12], MAX)
    with pytest.raises(PayloadTooLarge):
        gunzip(gzip.compress(b"\x00" * (MAX + 1)), MAX)

"""Property tests of the syslog header parser: any text gives a Header keeping what it could
not read, generated RFC 3164 / RFC 5424 lines give back the fields they were built from, and
the parser engine turns any line into an event that keeps the raw text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from opmas.messages import Flag, RawLog
from opmas.parser import ParserEngine
from opmas.parser.header import FACILITIES, SEVERITIES, Header, hostname_of, parse_header
from tests.unit.fuzz.strategies import FUZZ, Line, rfc3164_lines, rfc5424_lines

ENGINE = ParserEngine.from_dirs()
ARRIVAL = 1795300000.0


def _assert_pri(header: Header, pri: int) -> None:
    assert header.pri == pri
    assert header.facility == FACILITIES[pri >> 3]
    assert header.severity == SEVERITIES[pri & 7]


@FUZZ
@given(st.text(max_size=300))
def test_any_text_gives_a_header_whose_message_is_part_of_the_line(line: str) -> None:
    header = parse_header(line)
    assert isinstance(header, Header)
    assert header.message in line
    if header.format == "none" and header.program is None:
        assert header.message == line  # nothing read: the whole line is the message


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decoded_as_ingest_does_give_a_header(data: bytes) -> None:
    line = data.decode(errors="replace").replace("\x00", "\ufffd")
    header = parse_header(line)
    assert header.message in line
    assert header.pri is None or 0 <= header.pri <= 191


@FUZZ
@given(rfc3164_lines())
def test_generated_rfc3164_lines_give_back_their_fields(line: Line) -> None:
    header = parse_header(line.text)
    assert header.format == "rfc3164"
    _assert_pri(header, line.pri)
    assert (header.timestamp, header.hostname) == (line.timestamp, line.hostname)
    assert (header.program, header.pid, header.message) == (line.program, line.pid, line.message)
    assert hostname_of(line.text) == line.hostname


@FUZZ
@given(rfc5424_lines())
def test_generated_rfc5424_lines_give_back_their_fields(line: Line) -> None:
    header = parse_header(line.text)
    assert header.format == "rfc5424"
    _assert_pri(header, line.pri)
    assert (header.timestamp, header.hostname) == (line.timestamp, line.hostname)
    assert (header.program, header.pid, header.message) == (line.program, line.pid, line.message)
    assert (header.structured_data or {}) == line.sd
    assert header.sd_dropped == 0


@FUZZ
@given(rfc3164_lines())
def test_an_rsyslog_relayed_line_parses_like_the_direct_one(line: Line) -> None:
    """RSYSLOG_SyslogProtocol23Format keeps the space after the tag in MSG."""
    direct = ENGINE.parse(RawLog("d", ARRIVAL, line.text, "tcp"))
    pid = line.pid or "-"
    stamp = "2026-11-21T10:00:01+00:00"
    relayed_text = f"<{line.pri}>1 {stamp} {line.hostname} {line.program} {pid} - -  {line.message}"
    relayed = ENGINE.parse(RawLog("r", ARRIVAL, relayed_text, "tcp"))
    assert relayed.message == direct.message
    assert relayed.parser_name == direct.parser_name
    assert relayed.structured_fields == direct.structured_fields
    assert (relayed.hostname, relayed.process_name, relayed.pid) == (
        direct.hostname,
        direct.process_name,
        direct.pid,
    )


@FUZZ
@given(st.text(max_size=300) | rfc3164_lines().map(lambda x: x.text))
def test_the_engine_gives_every_line_an_event_without_a_parse_error(line: str) -> None:
    event = ENGINE.parse(RawLog("e", ARRIVAL, line, "tcp"))
    assert Flag.PARSE_ERROR not in event.flags  # the engine's catch-all never had to act
    assert event.event_id == "e"
    cleaned = _cleaned(line)
    if event.parser_name == "unparsed" and parse_header(cleaned).format == "none":
        assert event.message == cleaned  # no header: the raw line is kept whole
    else:
        assert event.message in cleaned


def _cleaned(line: str) -> str:
    """The line as the engine cleans it before reading the header."""
    return line.replace("\x00", "\ufffd").rstrip("\r\n").removeprefix("\ufeff")


@FUZZ
@given(
    st.text(max_size=120)
    | st.tuples(
        rfc3164_lines(),
        st.sampled_from(["", "\n", "\r\n", "\x00"]),
        st.sampled_from(["", "\ufeff"]),
    ).map(lambda parts: parts[2] + parts[0].text + parts[1])
)
def test_hostname_of_names_the_host_the_parser_reads(line: str) -> None:
    """The ingest partitions by hostname_of before parsing; it must agree with the parser."""
    assert hostname_of(line) == parse_header(_cleaned(line)).hostname

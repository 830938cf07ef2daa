"""Header formats: RFC 3164 and 5424, OpenWRT logread, LuCI, dmesg, bare lines, bad PRI."""

from __future__ import annotations

import pytest

from opmas.messages import RawLog
from opmas.parser import ParserEngine
from opmas.parser.header import (
    MAX_SD_ELEMENTS,
    MAX_SD_PARAMS,
    MAX_SD_VALUE,
    normalize_level,
    parse_header,
    parse_sd,
    parse_structured_data,
)
from tests.unit.parser.conftest import ARRIVAL


@pytest.mark.parametrize(
    ("line", "fmt", "stamp", "host", "program", "pid", "facility", "severity", "message"),
    [
        (
            "<30>Nov 21 10:00:01 OpenWrt hostapd: wlan0: AP-ENABLED",
            "rfc3164", "Nov 21 10:00:01", "OpenWrt", "hostapd", None, "daemon", "INFO",
            "wlan0: AP-ENABLED",
        ),
        (
            "<30>Mar  9 12:12:34 ap dnsmasq-dhcp[1141]: DHCPACK(br-lan) 10.0.0.2 aa:bb:cc:dd:ee:ff",
            "rfc3164", "Mar  9 12:12:34", "ap", "dnsmasq-dhcp", "1141", "daemon", "INFO",
            "DHCPACK(br-lan) 10.0.0.2 aa:bb:cc:dd:ee:ff",
        ),
        (
            "<13>Nov 21 10:00:01 logger: hello",
            "rfc3164", "Nov 21 10:00:01", None, "logger", None, "user", "NOTICE", "hello",
        ),
        (
            "Mar 22 17:30:07 LPM dnsmasq-dhcp[32377]: not giving name x",
            "rfc3164", "Mar 22 17:30:07", "LPM", "dnsmasq-dhcp", "32377", None, None,
            "not giving name x",
        ),
        (
            "Nov 21 10:00:01 router daemon.warn odhcpd[783]: No default route present",
            "rfc3164", "Nov 21 10:00:01", "router", "odhcpd", "783", "daemon", "WARNING",
            "No default route present",
        ),
        (
            "<30>Nov 21 2026 10:00:01 router ntpd[1]: x",
            "rfc3164", "Nov 21 2026 10:00:01", "router", "ntpd", "1", "daemon", "INFO", "x",
        ),
        (
            "<30>2026-11-21T10:00:01.5+01:00 router pppd[9]: Exit.",
            "rfc3164_iso", "2026-11-21T10:00:01.5+01:00", "router", "pppd", "9", "daemon",
            "INFO", "Exit.",
        ),
        (
            "Wed Oct 25 23:33:39 2017 daemon.info hostapd: wlan0: STA x",
            "logread", "Wed Oct 25 23:33:39 2017", None, "hostapd", None, "daemon", "INFO",
            "wlan0: STA x",
        ),
        (
            "Mon Mar  9 12:12:34 2020 kern.err kernel: [  123.456789] ath10k_pci x: boom",
            "logread", "Mon Mar  9 12:12:34 2020", None, "kernel", None, "kern", "ERR",
            "[  123.456789] ath10k_pci x: boom",
        ),
        (
            "Sat Nov 21 10:00:01 2026 [1795300000.123] user.warn mwan3track[3]: Lost 1 ping(s)",
            "logread", "Sat Nov 21 10:00:01 2026", None, "mwan3track", "3", "user", "WARNING",
            "Lost 1 ping(s)",
        ),
        (
            "daemon.warn odhcp6c[32628]: Server returned IA_PD status",
            "logread_fragment", None, None, "odhcp6c", "32628", "daemon", "WARNING",
            "Server returned IA_PD status",
        ),
        (
            "user.info : luci: failed login on / for root from 192.168.0.2",
            "logread_fragment", None, None, "", None, "user", "INFO",
            "luci: failed login on / for root from 192.168.0.2",
        ),
        (
            "[12 dic 2025, 20:46:05 CET] daemon.notice: odhcp6c[7520]: IA_PD 0001 T1 0 T2 0",
            "luci", "12 dic 2025, 20:46:05 CET", None, "odhcp6c", "7520", "daemon", "NOTICE",
            "IA_PD 0001 T1 0 T2 0",
        ),
        (
            "[257572.531232] ath10k_pci 0000:02:00.0: firmware crashed! (guid n/a)",
            "dmesg", None, None, "kernel", None, None, None,
            "[257572.531232] ath10k_pci 0000:02:00.0: firmware crashed! (guid n/a)",
        ),
    ],
)  # fmt: skip
def test_header_formats_split_into_their_fields(
    line: str,
    fmt: str,
    stamp: str | None,
    host: str | None,
    program: str | None,
    pid: str | None,
    facility: str | None,
    severity: str | None,
    message: str,
) -> None:
    header = parse_header(line)
    assert header.format == fmt
    assert header.timestamp == stamp
    assert header.hostname == host
    assert header.program == program
    assert header.pid == pid
    assert header.facility == facility
    assert header.severity == severity
    assert header.message == message


@pytest.mark.parametrize("line", ["<999>Nov 21 10:00:01 h p: m", "<abc>Nov 21 10:00:01 h p: m"])
def test_a_pri_out_of_range_or_not_a_number_is_dropped_and_reported(line: str) -> None:
    header = parse_header(line)
    assert header.invalid_pri
    assert header.pri is None
    assert header.facility is None
    assert (header.hostname, header.program, header.message) == ("h", "p", "m")


def test_pri_191_is_the_largest_valid_one() -> None:
    header = parse_header("<191>Nov 21 10:00:01 h p: m")
    assert (header.pri, header.facility, header.severity) == (191, "local7", "DEBUG")
    assert not header.invalid_pri


def test_pri_without_timestamp_keeps_the_tag() -> None:
    header = parse_header("<30>hostapd: wlan0: AP-ENABLED")
    assert (header.format, header.program, header.message) == (
        "rfc3164",
        "hostapd",
        "wlan0: AP-ENABLED",
    )


def test_rfc5424_reads_structured_data_bom_and_nil_values() -> None:
    line = (
        '<165>1 2026-11-21T10:00:01.003Z router app 42 ID47 [ex@1 a="1" b="x \\"y\\" \\]"]'
        " \ufeffthe message"
    )
    header = parse_header(line)
    assert header.format == "rfc5424"
    assert (header.timestamp, header.hostname, header.program, header.pid) == (
        "2026-11-21T10:00:01.003Z",
        "router",
        "app",
        "42",
    )
    assert header.msgid == "ID47"
    assert (header.facility, header.severity) == ("local4", "NOTICE")
    assert header.structured_data == {"ex@1": {"a": "1", "b": 'x "y" ]'}}
    assert header.message == "the message"


def test_rfc5424_nilvalues_become_none() -> None:
    header = parse_header("<14>1 - - - - - - msg")
    assert header.format == "rfc5424"
    assert header.timestamp is header.hostname is header.program is header.pid is None
    assert header.structured_data is None
    assert header.message == "msg"


def test_structured_data_with_several_elements() -> None:
    assert parse_structured_data('[a k="v"][b@2 x="1" y=""]') == {
        "a": {"k": "v"},
        "b@2": {"x": "1", "y": ""},
    }


@pytest.mark.parametrize(
    "line", ["", "just text", "   ", "<", "<30", "\ufffd\ufffd bytes that were invalid UTF-8"]
)
def test_lines_without_a_header_keep_the_whole_line_as_message(line: str) -> None:
    header = parse_header(line)
    assert header.format in ("none", "rfc3164")
    assert header.program in (None, "")
    assert header.message == line


def test_a_one_mebibyte_line_is_parsed_quickly() -> None:
    body = "x" * (1024 * 1024)
    header = parse_header(f"<30>Nov 21 10:00:01 router hostapd: {body}")
    assert header.program == "hostapd"
    assert len(header.message) == len(body)


def test_a_tag_with_a_non_numeric_bracket_keeps_it_in_the_program_name() -> None:
    header = parse_header("Tue Sep 10 01:49:56 2019 user.info banIP-[0.2.0]: 16 IPSets")
    assert (header.program, header.pid) == ("banIP-[0.2.0]", None)


@pytest.mark.parametrize(
    ("text", "level"),
    [("warn", "WARNING"), ("err", "ERR"), ("Warning", "WARNING"), ("emerg", "EMERG"),
     ("panic", "EMERG"), ("crit", "CRIT"), ("notice", "NOTICE"), ("bogus", None), (None, None)],
)  # fmt: skip
def test_level_names_normalize_to_syslog_names(text: str | None, level: str | None) -> None:
    assert normalize_level(text) == level


RELAYED_DROPBEAR = (
    "<38>1 2026-11-21T10:00:01+00:00 OpenWrt-R1 dropbear 1234 - -  "
    "Bad password attempt for 'root' from 198.51.100.7:52114"
)  # rsyslog RSYSLOG_SyslogProtocol23Format: MSG keeps the space after the RFC 3164 tag


def test_an_rsyslog_relayed_rfc5424_message_loses_the_space_kept_after_the_tag() -> None:
    header = parse_header(RELAYED_DROPBEAR)
    assert header.message == "Bad password attempt for 'root' from 198.51.100.7:52114"
    assert (header.hostname, header.program, header.pid) == ("OpenWrt-R1", "dropbear", "1234")


def test_a_relayed_dropbear_line_parses_exactly_like_the_direct_one() -> None:
    engine = ParserEngine.from_dirs()
    direct = engine.parse(
        RawLog("d", ARRIVAL, "<38>Nov 21 10:00:01 OpenWrt-R1 dropbear[1234]: "
               "Bad password attempt for 'root' from 198.51.100.7:52114", "udp")
    )  # fmt: skip
    relayed = engine.parse(RawLog("r", ARRIVAL, RELAYED_DROPBEAR, "tcp"))
    assert relayed.structured_fields == direct.structured_fields
    assert relayed.structured_fields["ip"] == "198.51.100.7"
    assert relayed.structured_fields["event"] == "ssh_bad_password"
    assert (relayed.parser_name, relayed.message, relayed.hostname) == (
        direct.parser_name,
        direct.message,
        "OpenWrt-R1",
    )


def test_only_the_space_after_the_tag_is_dropped_from_an_rfc5424_message() -> None:
    direct = parse_header("<14>Nov 21 10:00:01 host app:   indented")  # tag, then 3 spaces
    relayed = parse_header("<14>1 - host app - - -    indented")  # SP, then MSG "   indented"
    assert relayed.message == direct.message == "  indented"


@pytest.mark.parametrize("version", ["1", "2", "9", "10", "99", "999"])
def test_any_one_to_three_digit_rfc5424_version_is_read(version: str) -> None:
    header = parse_header(f"<14>{version} 2026-11-21T10:00:01Z host app 7 ID - hello")
    assert header.format == "rfc5424"
    assert header.version == int(version)
    assert (header.hostname, header.program, header.pid, header.msgid) == ("host", "app", "7", "ID")
    assert header.message == "hello"


@pytest.mark.parametrize("version", ["0", "01", "1000"])
def test_a_version_outside_the_grammar_is_not_rfc5424(version: str) -> None:
    line = f"<14>{version} 2026-11-21T10:00:01Z host app 7 ID - hello"
    header = parse_header(line)
    assert header.format == "rfc3164"
    assert header.pri == 14
    assert header.message == line[4:]


def test_a_pid_thread_procid_is_the_pid_not_part_of_the_program() -> None:
    header = parse_header("<30>Nov 21 10:00:01 host monit[2340:0]: 'wan' is up")
    assert (header.program, header.pid, header.message) == ("monit", "2340:0", "'wan' is up")


@pytest.mark.parametrize(
    ("tag", "program", "pid"),
    [("monit[2340:0]:", "monit", "2340:0"), ("app[12]:", "app", "12"),
     ("banIP-[0.2.0]:", "banIP-[0.2.0]", None), ("x[1:2:3]:", "x[1:2:3]", None),
     ("x[:1]:", "x[:1]", None)],
)  # fmt: skip
def test_brackets_hold_a_pid_only_when_it_is_digits_or_pid_colon_thread(
    tag: str, program: str, pid: str | None
) -> None:
    header = parse_header(f"Nov 21 10:00:01 host {tag} m")
    assert (header.program, header.pid) == (program, pid)


def test_structured_data_escapes_decode_and_other_backslashes_stay() -> None:
    sd = parse_structured_data(r'[x@1 a="close \] quote \" slash \\ other \n"]')
    assert sd == {"x@1": {"a": 'close ] quote " slash \\ other \\n'}}


def test_a_backslash_outside_a_value_is_part_of_a_name_not_an_escape() -> None:
    """Found by hypothesis: `[\\]` is an element with SD-ID `\\` (escapes exist only inside
    PARAM-VALUE); the header took `\\]` for an escape and read the line as RFC 3164."""
    header = parse_header('<14>1 1970-01-01T00:00:00Z h app - - [\\][a\\b k="v"] msg')
    assert header.format == "rfc5424"
    assert header.structured_data == {"\\": {}, "a\\b": {"k": "v"}}
    assert header.message == "msg"


def test_a_repeated_sd_id_keeps_the_first_element_and_counts_the_rest() -> None:
    sd, dropped = parse_sd('[origin ip="10.0.0.1"][meta a="1"][origin ip="6.6.6.6" x="y"]')
    assert sd == {"origin": {"ip": "10.0.0.1"}, "meta": {"a": "1"}}
    assert dropped == 1


def test_structured_data_is_bounded() -> None:
    many = "".join(f'[e{i} p="v"]' for i in range(MAX_SD_ELEMENTS + 5))
    sd, dropped = parse_sd(many)
    assert list(sd) == [f"e{i}" for i in range(MAX_SD_ELEMENTS)]
    assert dropped == 5
    params = " ".join(f'p{i}="v"' for i in range(MAX_SD_PARAMS + 3))
    sd, dropped = parse_sd(f"[e {params}]")
    assert len(sd["e"]) == MAX_SD_PARAMS
    assert dropped == 3
    sd, dropped = parse_sd(f'[e big="{"x" * (MAX_SD_VALUE + 10)}"]')
    assert sd["e"]["big"] == "x" * MAX_SD_VALUE
    assert dropped == 1


@pytest.mark.parametrize(
    "element", ['[' + "n" * 33 + ' a="1"]', '[id ' + "n" * 33 + '="1"]', '[id a=1]', '[id a="1"x]'],
)  # fmt: skip
def test_an_element_outside_the_rfc_grammar_is_left_out_and_counted(element: str) -> None:
    sd, dropped = parse_sd(element + '[ok a="1"]')
    assert sd == {"ok": {"a": "1"}}
    assert dropped == 1


def test_structured_data_goes_into_the_event_and_explain() -> None:
    engine = ParserEngine.from_dirs()
    line = (
        '<30>1 2026-11-21T10:00:04Z router myapp 42 ID47 [ex@32473 iut="3" '
        'src="App \\"q\\" \\] \\\\"][ex@32473 iut="dup"][origin ip="192.0.2.1"] event'
    )
    event = engine.parse(RawLog("e", ARRIVAL, line, "tcp"))
    sd = {"ex@32473": {"iut": "3", "src": 'App "q" ] \\'}, "origin": {"ip": "192.0.2.1"}}
    assert event.structured_fields["sd"] == sd
    assert event.structured_fields["sd_dropped"] == 1
    assert event.message == "event"
    explained = engine.explain(line, ARRIVAL)
    assert explained.sd == sd
    text = explained.render()
    assert "  structured data:\n    [ex@32473] iut='3' src='App \"q\" ] \\\\'\n" in text
    assert "    [origin] ip='192.0.2.1'" in text
    assert "  sd_dropped: 1" in text

"""ParserEngine behaviour: sanitising, fallbacks, catch-alls, the PID join, explain."""

from __future__ import annotations

import msgspec
import pytest

from opmas.messages import Flag, ParsedEvent, RawLog
from opmas.parser import INVALID_PRI, PARSE_ERROR, ParserEngine
from tests.unit.parser.conftest import ARRIVAL, raw


def test_parsed_event_fields_are_in_the_order_the_engine_passes_them() -> None:
    assert ParsedEvent.__struct_fields__ == (
        "event_id", "arrival_ts_utc", "source_ip", "original_ts", "hostname", "process_name",
        "pid", "log_level", "facility", "event_type", "message", "parser_name",
        "log_source_type", "structured_fields", "event_ts", "transport", "flags", "trust",
    )  # fmt: skip


def test_a_remote_syslog_line_becomes_a_complete_event(engine: ParserEngine) -> None:
    line = (
        "<30>Nov 21 10:00:01 OpenWrt-Router1 hostapd: "
        "wlan0: STA 1c:4b:d6:3d:4d:0d IEEE 802.11: authenticated"
    )
    on_time = (
        ARRIVAL - 12 * 3600 - 26 * 60 + 10
    )  # 2026-11-21T10:00:10Z: the router's clock is right
    event = engine.parse(RawLog("e1", on_time, line, "udp", source_ip="192.0.2.1"))
    assert msgspec.to_builtins(event) == {
        "event_id": "e1",
        "arrival_ts_utc": "2026-11-21T10:00:50.000Z",
        "source_ip": "192.0.2.1",
        "original_ts": "Nov 21 10:00:01",
        "hostname": "OpenWrt-Router1",
        "process_name": "hostapd",
        "pid": None,
        "log_level": "INFO",
        "facility": "daemon",
        "event_type": "AUTH",
        "message": "wlan0: STA 1c:4b:d6:3d:4d:0d IEEE 802.11: authenticated",
        "parser_name": "hostapd_parser_v1",
        "log_source_type": "wifi",
        "structured_fields": {
            "event": "sta_authenticated",
            "interface": "wlan0",
            "mac_address": "1c:4b:d6:3d:4d:0d",
        },
        "event_ts": "2026-11-21T10:00:01.000Z",
        "transport": "udp",
        "flags": [],
        "trust": "untrusted",
    }


def test_nul_bytes_are_replaced_and_flagged(engine: ParserEngine) -> None:
    event = engine.parse(raw("<30>Nov 21 10:00:01 r pppd[1]: Remote message: a\x00b"))
    assert "\x00" not in event.message
    assert event.flags == [Flag.NUL_REPLACED]
    assert event.structured_fields["remote_message"] == "a\ufffdb"


def test_flags_from_ingest_are_kept(engine: ParserEngine) -> None:
    event = engine.parse(raw("<999>x: y", flags=[Flag.TRUNCATED]))
    assert event.flags == [Flag.TRUNCATED, INVALID_PRI]


def test_trailing_newlines_and_a_leading_bom_are_dropped(engine: ParserEngine) -> None:
    event = engine.parse(raw("\ufeff<29>Nov 21 10:00:01 r netifd: Interface 'wan' is now up\r\n"))
    assert event.message == "Interface 'wan' is now up"
    assert event.structured_fields == {"event": "interface_up", "interface": "wan"}


@pytest.mark.parametrize("line", ["", "no header here", "\ufffd\ufffd\ufffd", "x" * 1_048_576])
def test_lines_without_a_header_are_kept_as_unparsed(engine: ParserEngine, line: str) -> None:
    event = engine.parse(raw(line))
    assert (event.parser_name, event.log_source_type, event.event_type) == (
        "unparsed",
        "other",
        "LOG",
    )
    assert event.message == line
    assert event.process_name is None


def test_an_unknown_program_is_unparsed_but_keeps_its_header(engine: ParserEngine) -> None:
    event = engine.parse(raw("Wed Apr 10 21:02:36 2024 daemon.info avahi-daemon[10331]: hi"))
    assert event.parser_name == "unparsed"
    assert (event.process_name, event.pid, event.log_level) == ("avahi-daemon", "10331", "INFO")
    assert event.event_ts == "2024-04-10T21:02:36.000Z"


def test_a_known_program_with_an_unknown_message_gets_its_catch_all(engine: ParserEngine) -> None:
    event = engine.parse(raw("<30>Nov 21 10:00:01 r dnsmasq-dhcp[1]: something new"))
    assert event.parser_name == "dnsmasq_parser_v1"
    assert event.structured_fields == {"event": "dnsmasq_dhcp_message"}
    assert event.log_source_type == "other"
    kernel = engine.parse(raw("[   12.345678] random: crng init done"))
    assert kernel.structured_fields == {"event": "kernel_message", "uptime": "12.345678"}
    assert kernel.log_source_type == "health"


def test_hostname_falls_back_to_the_one_ingest_knows(engine: ParserEngine) -> None:
    line = "Wed Apr 10 21:02:36 2024 daemon.notice netifd: Interface 'wan' is now down"
    assert engine.parse(raw(line, hostname="ap-7")).hostname == "ap-7"
    assert engine.parse(raw(line)).hostname is None
    remote = "<29>Nov 21 10:00:01 router netifd: Interface 'wan' is now down"
    assert engine.parse(raw(remote, hostname="ap-7")).hostname == "router"


def test_structured_input_from_http_fills_what_the_line_lacks(engine: ParserEngine) -> None:
    event = engine.parse(
        raw(
            "Interface 'wan' is now down",
            program="netifd",
            level="warn",
            timestamp="2026-11-21T10:00:01Z",
            hostname="ap-1",
        )
    )
    assert event.parser_name == "netifd_parser_v1"
    assert event.structured_fields["event"] == "interface_down"
    assert (event.log_level, event.hostname, event.original_ts, event.event_ts) == (
        "WARNING",
        "ap-1",
        "2026-11-21T10:00:01Z",
        "2026-11-21T10:00:01.000Z",
    )


def test_an_empty_tag_is_read_through_the_messages_own_tag(engine: ParserEngine) -> None:
    event = engine.parse(raw("user.info : luci: failed login on / for root from 192.168.0.2"))
    assert event.parser_name == "luci_parser_v1"
    assert event.process_name == ""
    assert event.log_source_type == "security"
    assert event.structured_fields["event"] == "luci_login_failed"


def test_a_program_given_as_a_path_uses_its_basename(engine: ParserEngine) -> None:
    event = engine.parse(raw("<30>Nov 21 10:00:01 r /usr/sbin/hostapd: wlan0: AP-ENABLED"))
    assert event.parser_name == "hostapd_parser_v1"


def test_netifd_delegates_udhcpc_output_and_lan_is_not_wan(engine: ParserEngine) -> None:
    lease = engine.parse(
        raw(
            "<29>Nov 21 10:00:01 r netifd: wan (4940): udhcpc: "
            "lease of 1.2.3.4 obtained, lease time 600"
        )
    )
    assert lease.parser_name == "netifd_parser_v1"
    assert lease.log_source_type == "wan"
    assert lease.structured_fields == {
        "event": "dhcp_lease_obtained",
        "interface": "wan",
        "udhcpc_pid": "4940",
        "ip": "1.2.3.4",
        "lease_time": "600",
    }
    lan = engine.parse(raw("<29>Nov 21 10:00:01 r netifd: Interface 'lan' is now down"))
    assert lan.log_source_type == "other"


def test_a_pattern_severity_fills_only_a_missing_level(engine: ParserEngine) -> None:
    dmesg = engine.parse(raw("[  1.000000] Kernel panic - not syncing: VFS"))
    assert dmesg.log_level == "EMERG"
    logged = engine.parse(raw("Sat Nov 21 10:00:01 2026 kern.info kernel: Kernel panic - x"))
    assert logged.log_level == "INFO"


def test_firewall_log_lines_become_fields(engine: ParserEngine) -> None:
    event = engine.parse(
        raw(
            "<4>Nov 21 10:00:01 r kernel: [ 1.5] DROP wan in: IN=eth1 OUT= SRC=203.0.113.7 "
            "DST=198.51.100.2 LEN=40 PROTO=TCP SPT=44321 DPT=22 SYN URGP=0"
        )
    )
    fields = event.structured_fields
    assert event.log_source_type == "security"
    assert fields["event"] == "firewall_packet"
    assert (fields["action"], fields["zone"], fields["chain"]) == ("drop", "wan", "in")
    assert (fields["src_ip"], fields["dst_ip"], fields["src_port"], fields["dst_port"]) == (
        "203.0.113.7",
        "198.51.100.2",
        "44321",
        "22",
    )
    assert (fields["protocol"], fields["tcp_flags"], fields["in_interface"]) == (
        "TCP",
        "SYN",
        "eth1",
    )
    assert "out_interface" not in fields


def test_dropbear_exit_without_address_gets_it_from_the_same_pid() -> None:
    engine = ParserEngine.from_dirs()
    lines = [
        "<86>Sep 18 05:56:48 r1 dropbear[29286]: Child connection from 14.17.121.130:43422",
        "<86>Sep 18 05:56:48 r2 dropbear[29286]: Child connection from 10.9.9.9:1000",
        "<86>Sep 18 05:56:48 r1 dropbear[29286]: Exit before auth (user 'root', 1 fails): bye",
        "<86>Sep 18 05:56:49 r1 dropbear[29286]: Exit before auth (user 'root', 1 fails): bye",
    ]
    events = engine.parse_many([raw(line) for line in lines])
    joined, after_forget = events[2].structured_fields, events[3].structured_fields
    assert (joined["ip"], joined["port"], joined["user"], joined["fails"]) == (
        "14.17.121.130",
        "43422",
        "root",
        "1",
    )
    assert "ip" not in after_forget


def test_the_pid_join_map_is_bounded() -> None:
    engine = ParserEngine.from_dirs(join_size=2)
    for pid in (1, 2, 3):
        engine.parse(
            raw(f"<86>Sep 18 05:56:48 r dropbear[{pid}]: Child connection from 10.0.0.{pid}:22")
        )
    exit_line = "<86>Sep 18 05:56:48 r dropbear[{}]: Exit before auth: Exited normally"
    assert "ip" not in engine.parse(raw(exit_line.format(1))).structured_fields
    assert engine.parse(raw(exit_line.format(3))).structured_fields["ip"] == "10.0.0.3"


def test_parse_never_raises_on_a_broken_rawlog(engine: ParserEngine) -> None:
    broken = RawLog("x", float("nan"), "<30>Nov 21 10:00:01 r hostapd: m\x00", "udp")
    event = engine.parse(broken)
    assert event.parser_name == "unparsed"
    assert PARSE_ERROR in event.flags
    assert Flag.NUL_REPLACED in event.flags
    assert event.arrival_ts_utc == "1970-01-01T00:00:00.000Z"
    assert engine.parse_many([broken])[0].parser_name == "unparsed"


def test_parse_many_keeps_the_order(engine: ParserEngine) -> None:
    lines = [f"<29>Nov 21 10:00:0{n} r netifd: Interface 'wan{n}' is now up" for n in range(5)]
    events = engine.parse_many([raw(line) for line in lines])
    assert [e.structured_fields["interface"] for e in events] == [f"wan{n}" for n in range(5)]


def test_explain_says_which_parser_and_pattern_and_why(engine: ParserEngine) -> None:
    explained = engine.explain("<29>Nov 21 10:00:01 r hostapd: wlan0: AP-ENABLED", ARRIVAL)
    assert explained.header_format == "rfc3164"
    assert explained.header["hostname"] == "r"
    assert explained.parser_name == "hostapd_parser_v1"
    assert "program 'hostapd'" in explained.reason
    assert explained.pattern_regex is not None
    assert explained.pattern_index is not None
    assert explained.tried
    assert all(index < explained.pattern_index for index, _ in explained.tried)
    assert explained.domain == "wifi"
    assert explained.structured_fields == {"event": "ap_enabled", "interface": "wlan0"}
    text = explained.render()
    assert "ap_enabled" in text
    assert "hostapd_parser_v1" in text


def test_explain_reports_unparsed_lines_and_joins(engine: ParserEngine) -> None:
    assert (
        "no parser for program 'avahi'" in engine.explain("<30>Nov 21 10:00:01 r avahi: x").reason
    )
    assert "no syslog header" in engine.explain("hello").reason
    fresh = ParserEngine(engine.parsers)
    fresh.explain("<86>Nov 21 10:00:01 r dropbear[5]: Child connection from 10.0.0.5:22", ARRIVAL)
    joined = fresh.explain(
        "<86>Nov 21 10:00:02 r dropbear[5]: Exit before auth: Exited normally", ARRIVAL
    )
    assert joined.joined == {"ip": "10.0.0.5", "port": "22"}
    assert "joined by pid" in joined.render()

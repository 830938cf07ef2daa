"""Hostname hygiene: a hostname that is not one is replaced by the source address, flagged,
and kept escaped in `claimed_hostname`; valid names pass unchanged."""

from __future__ import annotations

import pytest

from opmas.messages import Flag, RawLog
from opmas.parser import ParserEngine
from opmas.parser.header import valid_hostname
from tests.unit.parser.conftest import ARRIVAL

SOURCE = "192.0.2.50"


@pytest.mark.parametrize(
    "name",
    [
        "OpenWrt",
        "router-A",
        "ap_kitchen",
        "gw1.example.net",
        "gw1.example.net.",
        "192.0.2.1",
        "2001:db8::1",
        "a" * 63,
        ".".join(["b" * 63] * 4),  # 255 characters
    ],
)
def test_valid_hostnames_are_kept(name: str) -> None:
    assert valid_hostname(name)


@pytest.mark.parametrize(
    "name",
    [
        "router\nA",
        "router\rA",
        "router\x1bA",
        "r<!channel>",
        "<script>",
        "router A",
        "-router",
        "router-",
        "a..b",
        "a" * 64,
        "café",
        "r;reboot",
        "fe80::1%eth0",
        "1:2:3",
        ".".join(["b" * 63] * 4) + "x",  # 256 characters
    ],
)
def test_invalid_hostnames_are_refused(name: str) -> None:
    assert not valid_hostname(name)


def test_markup_in_a_syslog_hostname_becomes_the_source_address(engine: ParserEngine) -> None:
    line = "<30>Nov 21 10:00:01 r<!channel> dnsmasq[1]: using nameserver 8.8.8.8#53"

    event = engine.parse(RawLog("e1", ARRIVAL, line, "udp", source_ip=SOURCE))

    assert event.hostname == SOURCE
    assert Flag.INVALID_HOSTNAME in event.flags
    assert event.structured_fields["claimed_hostname"] == "r<!channel>"
    assert event.structured_fields["event"] == "dns_upstream_server"  # the line still parses


def test_a_newline_in_a_structured_hostname_is_escaped_and_replaced(engine: ParserEngine) -> None:
    raw = RawLog(
        "e2",
        ARRIVAL,
        "segfault at 0",
        "http",
        source_ip=SOURCE,
        hostname="router-A\nBcc: victim@example.com",
        program="kernel",
    )

    event = engine.parse(raw)

    assert event.hostname == SOURCE
    assert Flag.INVALID_HOSTNAME in event.flags
    assert event.structured_fields["claimed_hostname"] == "router-A\\nBcc: victim@example.com"


def test_an_invalid_hostname_without_a_source_address_is_unknown(engine: ParserEngine) -> None:
    line = "<30>1 2026-11-21T10:00:01Z r\x1b[31m dnsmasq 1 - - started, version 2.90"

    event = engine.parse(RawLog("e3", ARRIVAL, line, "file"))

    assert event.hostname == "unknown"
    assert event.structured_fields["claimed_hostname"] == "r\\x1b[31m"


def test_a_valid_hostname_is_neither_flagged_nor_claimed(engine: ParserEngine) -> None:
    line = "<30>Nov 21 10:00:01 ap_kitchen dnsmasq[1]: started, version 2.90 cachesize 150"

    event = engine.parse(RawLog("e4", ARRIVAL, line, "udp", source_ip=SOURCE))

    assert event.hostname == "ap_kitchen"
    assert Flag.INVALID_HOSTNAME not in event.flags
    assert "claimed_hostname" not in event.structured_fields

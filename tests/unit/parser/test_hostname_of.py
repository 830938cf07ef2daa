"""header.hostname_of: the cheap hostname the ingest partitions by, as the full parser reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from opmas.messages import RawLog
from opmas.parser import ParserEngine
from opmas.parser.header import hostname_of, parse_header, valid_hostname
from tests.unit.parser.conftest import ARRIVAL, CORPUS, DATA

PATHS = [CORPUS / "openwrt-sample.log", *sorted(DATA.glob("*/input.log"))]


def cleaned(line: str) -> str:
    """The line as the engine hands it to parse_header."""
    return line.replace("\x00", "\ufffd").rstrip("\r\n").removeprefix("\ufeff")


@pytest.mark.parametrize("path", PATHS, ids=[p.parent.name for p in PATHS])
def test_hostname_of_agrees_with_the_full_parser(path: Path) -> None:
    engine = ParserEngine.from_dirs()
    lines = path.read_text(encoding="utf-8").split("\n")
    for line in lines:
        for variant in (line, line + "\r\n", f"<30>{line}", f"\ufeff{line}"):
            expected = parse_header(cleaned(variant)).hostname
            if expected is not None and not valid_hostname(expected):
                continue  # the parser replaces it: any stable answer will do
            assert hostname_of(variant) == expected, variant
            event = engine.parse(RawLog("h", ARRIVAL, variant, "udp"))
            if expected is not None:
                assert event.hostname == expected, variant


@pytest.mark.parametrize(
    ("line", "host"),
    [
        ("<30>Nov 21 10:00:01 OpenWrt-R01 hostapd: wlan0: x", "OpenWrt-R01"),
        ("<30>Nov 21 10:00:01 hostapd: wlan0: x", None),
        ("Nov 21 10:00:01 OpenWrt-R01 dropbear[12]: x", "OpenWrt-R01"),
        ("Nov 21 10:00:01 2026 dropbear[12]: x", None),  # a year, not a host
        ("Nov 21 10:00:01 r1 daemon.info dropbear[12]: x", "r1"),
        ("Sat Nov 21 10:00:01 2026 daemon.info hostapd: x", None),
        ("<13>1 2026-11-21T10:00:01Z OpenWrt-R02 app 1 - - msg", "OpenWrt-R02"),
        ("2026-11-21T10:00:01+00:00 ap-7 netifd: up", "ap-7"),
        ("<999>Nov 21 10:00:01 r9 x: y", "r9"),
        ("\ufeff<30>Nov 21 10:00:01 r3 x: y\r\n", "r3"),
        ("no header here", None),
        ("", None),
    ],
)
def test_hostname_of_reads_each_header_form(line: str, host: str | None) -> None:
    assert hostname_of(line) == host == parse_header(cleaned(line)).hostname

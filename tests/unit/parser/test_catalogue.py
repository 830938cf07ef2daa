"""The message catalogues: every operator-relevant message a program's sources log parses.

tests/data/parser/catalogue/<program>.yaml lists, per format string of the program's own
sources, realistic lines as OpenWRT's logd forwards them (RFC 3164 with hostname and tag) and
the event and the exact structured fields each must give. A file's lines go through one
engine in order, so the dropbear PID join is checked as a router would exercise it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from opmas.messages import RawLog
from opmas.parser import ParserEngine
from tests.unit.parser.conftest import ARRIVAL, DATA

CATALOGUE = DATA / "catalogue"
FILES = sorted(CATALOGUE.glob("*.yaml"))
PROGRAMS = {
    "dropbear", "hostapd", "wpa_supplicant", "dnsmasq", "odhcpd", "netifd", "pppd", "kernel",
}  # fmt: skip


def _cases(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [case for message in document["messages"] for case in message["cases"]]


def _parsed(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each case of a file with the event its line parsed into, all through one engine."""
    engine = ParserEngine.from_dirs()
    cases = _cases(path)
    raws = [
        RawLog(f"{path.stem}-{n}", ARRIVAL, case["line"], "udp", source_ip="192.0.2.1")
        for n, case in enumerate(cases)
    ]
    events = engine.parse_many(raws)
    return [(case, {
        "process_name": event.process_name,
        "parser_name": event.parser_name,
        "log_level": event.log_level,
        "domain": event.log_source_type,
        "event_type": event.event_type,
        "structured_fields": event.structured_fields,
    }) for case, event in zip(cases, events, strict=True)]  # fmt: skip


def test_every_catalogued_program_has_a_catalogue() -> None:
    assert {path.stem for path in FILES} == PROGRAMS


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_message_has_a_format_a_source_and_cases(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert document["program"] == path.stem
    for message in document["messages"]:
        assert message["format"]
        assert message["source"]
        assert message["cases"], message["format"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_catalogued_messages_parse_into_their_event_and_fields(path: Path) -> None:
    failures = []
    for case, got in _parsed(path):
        want = {"event": case["event"], **case["fields"]}
        problems = []
        if got["parser_name"] == "unparsed":
            problems.append("unparsed")
        if got["structured_fields"] != want:
            problems.append(f"fields {got['structured_fields']} != {want}")
        for key in ("domain", "event_type", "log_level"):
            if key in case and got[key] != case[key]:
                problems.append(f"{key} {got[key]!r} != {case[key]!r}")
        if problems:
            failures.append(f"{case['line']}\n    " + "\n    ".join(problems))
    assert not failures, "\n".join(failures)


def test_a_line_without_the_client_address_takes_it_from_its_connection_only() -> None:
    engine = ParserEngine.from_dirs()
    lines = [
        "<86>Nov 21 10:00:01 ap-1 dropbear[7001]: Child connection from 198.51.100.4:40022",
        "<84>Nov 21 10:00:02 ap-1 dropbear[7002]: Login attempt for nonexistent user",
        "<84>Nov 21 10:00:03 ap-1 dropbear[7001]: Login attempt for nonexistent user",
    ]
    events = engine.parse_many([RawLog(f"j{n}", ARRIVAL, x, "udp") for n, x in enumerate(lines)])
    assert "ip" not in events[1].structured_fields  # another PID: nothing to join
    assert events[2].structured_fields["ip"] == "198.51.100.4"

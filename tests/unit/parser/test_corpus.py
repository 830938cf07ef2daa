"""The real OpenWRT sample: every labelled line, and every line of a supported program.

Label keys map to ParsedEvent fields: timestamp -> original_ts, severity -> log_level
(syslog names, `warn` = WARNING), facility, program -> process_name, pid and hostname (the
header's, or a structured field of the same name such as a DHCP client's); `format` names
the header form and is not a field; every other key is a structured field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from opmas.messages import ParsedEvent
from opmas.parser import ParserEngine
from opmas.parser.header import normalize_level
from tests.unit.parser.conftest import CORPUS, raw

LABELS = CORPUS / "openwrt-sample-labels.jsonl"
SAMPLE = CORPUS / "openwrt-sample.log"
SUPPORTED = {
    "hostapd", "wpa_supplicant", "dnsmasq", "dnsmasq-dhcp", "odhcpd", "odhcp6c", "dropbear",
    "uhttpd", "rpcd", "luci", "netifd", "pppd", "kernel", "procd", "firewall", "fw3", "fw4",
    "ntpd", "sysntpd", "mwan3", "mwan3track", "mwan3-hotplug", "mwan3rtmon", "udhcpc",
}  # fmt: skip


def _labels() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()]


def _sample_lines() -> list[str]:
    if not SAMPLE.is_file():
        return []
    text = SAMPLE.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _field(event: ParsedEvent, key: str, expected: str) -> object:
    if key == "timestamp":
        return event.original_ts
    if key == "severity":
        return event.log_level
    if key == "facility":
        return event.facility
    if key == "program":
        return event.process_name or ""
    if key in ("pid", "hostname"):
        header_value = getattr(event, key)
        return header_value if header_value == expected else event.structured_fields.get(key)
    return event.structured_fields.get(key)


@pytest.mark.parametrize("label", _labels(), ids=lambda label: label["line"][:70])
def test_labelled_corpus_line_parses_to_its_labels(
    engine: ParserEngine, label: dict[str, Any]
) -> None:
    event = engine.parse(raw(label["line"]))
    assert (event.process_name or "") == label["program"]
    assert event.log_source_type == label["domain"]
    assert event.parser_name != "unparsed"
    for key, value in label["fields"].items():
        if key == "format":
            continue
        expected = normalize_level(value) if key == "severity" else value
        assert _field(event, key, value) == expected, key


def test_every_supported_program_line_of_the_sample_gets_its_program_parser() -> None:
    engine = ParserEngine.from_dirs()
    checked = 0
    for line in _sample_lines():
        explained = engine.explain(line, 1795300000.0)
        program = explained.header.get("program")
        if program in SUPPORTED or explained.header_format == "dmesg" or program == "":
            assert explained.parser_name != "unparsed", line
            checked += 1
    assert checked > 150


def test_every_pattern_example_matches_its_own_pattern(engine: ParserEngine) -> None:
    for parser in engine.parsers:
        for pattern in parser.patterns:
            examples = pattern.spec.example
            assert examples, f"{parser.name} pattern {pattern.index} has no example"
            for example in [examples] if isinstance(examples, str) else examples:
                explained = ParserEngine(engine.parsers).explain(example, 1795300000.0)
                where = f"{parser.name} pattern {pattern.index}: {example}"
                assert explained.parser_name == parser.name, where
                assert explained.pattern_index == pattern.index, where


def test_shipped_patterns_are_also_re2_compatible(engine: ParserEngine) -> None:
    from opmas.parser.regexes import Re2Pattern

    for parser in engine.parsers:
        for pattern in parser.patterns:
            Re2Pattern(pattern.spec.regex)


def test_fast_and_traced_matching_agree_on_every_example(engine: ParserEngine) -> None:
    for parser in engine.parsers:
        for pattern in parser.patterns:
            examples = pattern.spec.example or []
            for example in [examples] if isinstance(examples, str) else examples:
                fresh = ParserEngine(engine.parsers)
                parsed = fresh.parse(raw(example))
                traced = ParserEngine(engine.parsers).explain(example, 1795300000.0).event
                assert parsed.structured_fields == traced.structured_fields, example
                assert parsed.log_source_type == traced.log_source_type, example

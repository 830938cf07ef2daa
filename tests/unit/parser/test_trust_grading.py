"""The parser grades each line's origin and keeps a bound sender's lines on its device."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opmas import trust
from opmas.cli.main import app
from opmas.messages import Flag, RawLog
from opmas.parser import ParserEngine
from tests.unit.parser.conftest import ARRIVAL

LINE = "<11>Dec  7 10:00:00 router-B hostapd: wlan0: STA 1c:4b:d6:3d:4d:0d IEEE 802.11: deauth"
ENROLLED = {"router-A": "192.0.2.1", "router-B": "192.0.2.2"}


def test_the_directory_grades_address_only_for_the_registered_ip_of_the_named_device() -> None:
    assert trust.grade(ENROLLED, "router-A", "192.0.2.1") == trust.ADDRESS
    assert trust.grade(ENROLLED, "router-A", "::ffff:192.0.2.1") == trust.ADDRESS
    assert trust.grade(ENROLLED, "router-A", "192.0.2.2") == trust.UNTRUSTED  # B's address
    assert trust.grade(ENROLLED, "router-C", "192.0.2.1") == trust.UNTRUSTED  # not enrolled
    assert trust.grade(ENROLLED, None, "192.0.2.1") == trust.UNTRUSTED
    assert trust.grade(ENROLLED, "router-A", None) == trust.UNTRUSTED


def test_a_line_from_the_enrolled_devices_ip_is_address_trusted() -> None:
    engine = ParserEngine.from_dirs(enrolled=dict(ENROLLED))
    own = engine.parse(RawLog("e1", ARRIVAL, LINE, "udp", "192.0.2.2"))
    spoofed = engine.parse(RawLog("e2", ARRIVAL, LINE, "udp", "203.0.113.9"))
    assert (own.hostname, own.trust) == ("router-B", trust.ADDRESS)
    assert (spoofed.hostname, spoofed.trust) == ("router-B", trust.UNTRUSTED)


def test_the_directory_is_read_live_so_a_reload_in_place_applies_to_the_next_line() -> None:
    addresses: dict[str, str] = {}
    engine = ParserEngine.from_dirs(enrolled=addresses)
    assert engine.parse(RawLog("e1", ARRIVAL, LINE, "udp", "192.0.2.2")).trust == trust.UNTRUSTED
    addresses.update(ENROLLED)
    assert engine.parse(RawLog("e2", ARRIVAL, LINE, "udp", "192.0.2.2")).trust == trust.ADDRESS


def test_a_bound_sender_naming_another_router_keeps_its_own_hostname_and_is_flagged() -> None:
    engine = ParserEngine.from_dirs(enrolled=dict(ENROLLED))
    event = engine.parse(
        RawLog("e1", ARRIVAL, LINE, "http", "198.51.100.7", bound_hostname="router-A")
    )
    assert event.hostname == "router-A"
    assert event.trust == trust.VERIFIED
    assert Flag.HOSTNAME_MISMATCH in event.flags
    assert event.structured_fields["claimed_hostname"] == "router-B"
    assert event.structured_fields["event"]  # still parsed as the hostapd line it is


def test_a_bound_sender_naming_itself_or_nothing_is_not_flagged() -> None:
    engine = ParserEngine.from_dirs()
    on_time = datetime(2026, 12, 7, 10, 0, 30, tzinfo=UTC).timestamp()  # LINE's clock is right
    own = engine.parse(RawLog("e1", on_time, LINE, "http", bound_hostname="ROUTER-b"))
    bare = engine.parse(RawLog("e2", ARRIVAL, "just text", "http", bound_hostname="router-A"))
    claimed = engine.parse(
        RawLog("e3", ARRIVAL, "just text", "http", hostname="router-B", bound_hostname="router-A")
    )
    assert (own.hostname, own.flags, own.trust) == ("ROUTER-b", [], trust.VERIFIED)
    assert "claimed_hostname" not in own.structured_fields
    assert (bare.hostname, bare.flags) == ("router-A", [])
    assert (claimed.hostname, claimed.flags) == ("router-A", [Flag.HOSTNAME_MISMATCH])


def test_a_line_the_engine_chokes_on_still_keeps_the_bound_device() -> None:
    engine = ParserEngine.from_dirs()
    raw = RawLog("e1", ARRIVAL, LINE, "http", bound_hostname="router-A")
    failed = engine._failed(raw)
    assert (failed.hostname, failed.trust) == ("router-A", trust.VERIFIED)


def test_explain_says_why_a_line_gets_its_trust() -> None:
    engine = ParserEngine.from_dirs(enrolled=dict(ENROLLED))
    offline = ParserEngine.from_dirs().explain(LINE)
    address = engine.explain(LINE, source_ip="192.0.2.2")
    elsewhere = engine.explain(LINE, source_ip="192.0.2.9")
    bound = engine.explain(LINE, bound_hostname="router-A")
    assert offline.event.trust == trust.UNTRUSTED
    assert "offline" in offline.trust_reason
    assert address.event.trust == trust.ADDRESS
    assert "192.0.2.2" in address.trust_reason
    assert "enrolled at 192.0.2.2" in elsewhere.trust_reason
    assert bound.event.trust == trust.VERIFIED
    assert "router-B" in bound.trust_reason
    assert "trust:         verified" in bound.render()


def test_the_explain_command_shows_the_trust_a_line_would_get(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPMAS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    runner = CliRunner()
    options = ["--source-ip", "192.0.2.2", "--enrolled", "router-B=192.0.2.2", "--json"]
    address = runner.invoke(app, ["explain", *options, LINE])
    assert address.exit_code == 0, address.output
    assert json.loads(address.output)["trust"] == "address"
    bound = runner.invoke(app, ["explain", "--token-device", "router-A", "--json", LINE])
    event = json.loads(bound.output)
    assert (event["hostname"], event["trust"]) == ("router-A", "verified")
    assert "router-B" in event["trust_reason"]
    bad = runner.invoke(app, ["explain", "--enrolled", "router-B", LINE])
    assert bad.exit_code == 2

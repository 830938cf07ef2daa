"""docs/events.md is generated from the parser files and must be up to date."""

from __future__ import annotations

from pathlib import Path

from opmas.parser import ParserEngine
from opmas.parser.docs import render

EVENTS_MD = Path(__file__).resolve().parents[3] / "docs" / "events.md"


def test_events_page_is_up_to_date() -> None:
    expected = render(ParserEngine.from_dirs())
    assert EVENTS_MD.read_text(encoding="utf-8") == expected, (
        "run: .venv/bin/python -m opmas.parser.docs > docs/events.md"
    )


def test_events_page_lists_the_labelled_event_names() -> None:
    text = EVENTS_MD.read_text(encoding="utf-8")
    for name in ("sta_associated", "dhcpack", "ssh_exit_before_auth", "wifi_firmware_crashed",
                 "interface_down", "service_crash_loop", "mwan3_interface_offline"):  # fmt: skip
        assert f"`{name}`" in text

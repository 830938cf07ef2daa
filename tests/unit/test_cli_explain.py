"""`opmas explain`: offline, one report per line, or JSON lines in input order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opmas.cli.main import app

runner = CliRunner()
CHILD = (
    "Mon Sep 18 05:56:48 2017 authpriv.info dropbear[29286]: "
    "Child connection from 14.17.121.130:43422"
)
EXIT = (
    "Mon Sep 18 05:56:48 2017 authpriv.info dropbear[29286]: "
    "Exit before auth (user 'root', 1 fails): Exited normally"
)


@pytest.fixture(autouse=True)
def _no_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPMAS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("OPMAS_NATS_URL", "nats://127.0.0.1:1")


def test_explain_names_header_parser_pattern_and_fields() -> None:
    result = runner.invoke(app, ["explain", CHILD])
    assert result.exit_code == 0, result.output
    assert "header format: logread" in result.output
    assert "dropbear_parser_v1" in result.output
    assert "ssh_connection" in result.output
    assert "domain:        security" in result.output


def test_explain_file_json_is_one_event_per_line_in_order_with_the_pid_join(
    tmp_path: Path,
) -> None:
    log = tmp_path / "auth.log"
    log.write_text(f"# comment\n{CHILD}\n{EXIT}\nnot a syslog line at all\n")
    result = runner.invoke(app, ["explain", "--file", str(log), "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert [e["structured_fields"].get("event") for e in events[:2]] == [
        "ssh_connection",
        "ssh_exit_before_auth",
    ]
    assert events[1]["structured_fields"]["ip"] == "14.17.121.130"  # joined by PID
    assert events[2]["parser_name"] == "unparsed"
    assert events[2]["log_source_type"] == "other"


def test_explain_needs_a_line_or_a_file() -> None:
    result = runner.invoke(app, ["explain"])
    assert result.exit_code == 2

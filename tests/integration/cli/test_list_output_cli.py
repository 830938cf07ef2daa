"""What list and show commands print when stdout is a pipe (as under CliRunner): whole cells,
never cut to 80 columns; `--json` everywhere; a finding's evidence as its log lines."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import typer
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli.findings import app as findings_app
from opmas.cli.main import app as opmas
from opmas.cli.tokens import app as tokens_app
from opmas.models import Device, Event, Finding
from tests.integration.cli.conftest import run_db

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("cli_database")

LONG_HOST = "access-point-" + "b" * 100 + ".branch-office.example.net"
LONG_MESSAGE = "hostapd: wlan0: STA 02:00:00:00:00:01 " + "x" * 300 + " END"


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)


def _ok(app: typer.Typer, args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _line_with(output: str, text: str) -> str:
    return next(line for line in output.splitlines() if text in line)


def test_tokens_list_piped_prints_a_long_name_whole_on_one_line(cli_database: str) -> None:
    name = "router-" + "n" * 150
    run_db(
        cli_database,
        lambda session: _add(session, [Device(hostname=LONG_HOST, ip_address="192.0.2.7")]),
    )
    _ok(tokens_app, ["create", "--name", name, "--device", LONG_HOST])

    listed = _ok(tokens_app, ["list"])

    line = _line_with(listed, name)
    assert LONG_HOST in line
    assert "active" in line


def test_tokens_list_json_has_every_field_and_never_the_secret() -> None:
    token = _ok(tokens_app, ["create", "--name", "gw1"]).strip().splitlines()[0]

    (view,) = json.loads(_ok(tokens_app, ["list", "--json"]))

    assert view["name"] == "gw1"
    assert view["state"] == "active"
    assert token.startswith(view["prefix"])
    assert view["revoked_at"] is None
    assert token not in json.dumps(view)
    assert {"id", "device", "created_at", "expires_at", "last_used_at", "scopes"} <= set(view)


def _event(event_id: uuid.UUID, at: datetime, host: str, program: str, message: str) -> Event:
    return Event(
        event_id=event_id,
        arrival_ts_utc=at,
        event_ts=at,
        hostname=host,
        process_name=program,
        message=message,
        log_source_type="wifi",
    )


async def _add(session: AsyncSession, rows: list[object]) -> None:
    session.add_all(rows)


def test_events_list_piped_prints_a_long_host_and_message_whole(cli_database: str) -> None:
    event = _event(uuid.uuid4(), datetime.now(UTC), LONG_HOST, "hostapd", LONG_MESSAGE)
    run_db(cli_database, lambda session: _add(session, [event]))

    listed = _ok(opmas, ["events", "list"])

    line = _line_with(listed, LONG_HOST)
    assert LONG_MESSAGE in line


def test_findings_show_lists_the_evidence_log_lines_and_json_includes_them(
    cli_database: str,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    first, second, dropped = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    finding = Finding(
        created_at=now - timedelta(minutes=2),
        finding_uuid=uuid.uuid4(),
        domain="wifi",
        agent_name="WifiAgent",
        rule_name="auth-storm",
        device_hostname=LONG_HOST,
        finding_type="HighAuthFailureRate",
        severity="warning",
        evidence_event_ids=[first, second, dropped],
    )
    events = [
        _event(first, now - timedelta(minutes=2), LONG_HOST, "hostapd", LONG_MESSAGE),
        _event(second, now - timedelta(minutes=1), LONG_HOST, "hostapd", "wlan0: auth failed"),
        _event(uuid.uuid4(), now, LONG_HOST, "dnsmasq", "not evidence"),
    ]
    run_db(cli_database, lambda session: _add(session, [finding, *events]))
    ref = str(finding.finding_uuid)

    shown = _ok(findings_app, ["show", ref])
    view = json.loads(_ok(findings_app, ["show", ref, "--json"]))

    line = _line_with(shown, LONG_MESSAGE)
    assert LONG_HOST in line
    assert "hostapd" in line
    assert f"{now - timedelta(minutes=2):%Y-%m-%d %H:%M:%S}" in line
    assert "wlan0: auth failed" in shown
    assert "not evidence" not in shown
    assert "1 more evidence events are no longer stored" in shown
    assert str(dropped) not in shown
    assert [e["message"] for e in view["evidence"]] == [LONG_MESSAGE, "wlan0: auth failed"]
    assert view["evidence"][0] == {
        "event_id": str(first),
        "time": (now - timedelta(minutes=2)).isoformat().replace("+00:00", "Z"),
        "arrival_ts_utc": (now - timedelta(minutes=2)).isoformat().replace("+00:00", "Z"),
        "host": LONG_HOST,
        "program": "hostapd",
        "message": LONG_MESSAGE,
    }
    assert len(view["evidence_event_ids"]) == 3

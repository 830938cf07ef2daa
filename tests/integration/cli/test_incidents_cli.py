"""`opmas incidents`: list, show, ack, resolve with its findings, assign, comment."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli import findings as findings_cli
from opmas.cli.incidents import app
from opmas.models import Incident
from tests.integration.cli.conftest import Seeded, run_db

runner = CliRunner()


def _show(incident_id: int) -> dict[str, Any]:
    result = runner.invoke(app, ["show", str(incident_id), "--json"])
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.output)
    return shown


def test_list_filters_by_status_and_device(seeded: Seeded) -> None:
    listed = runner.invoke(app, ["list", "--json", "--status", "new", "--device", "gw"])
    assert listed.exit_code == 0, listed.output
    assert [i["id"] for i in json.loads(listed.output)] == [seeded.incident_id]
    none = runner.invoke(app, ["list", "--json", "--status", "resolved"])
    assert json.loads(none.output) == []
    assert runner.invoke(app, ["list", "--status", "closed"]).exit_code == 2


def test_list_by_device_finds_a_fleet_incident_naming_that_router(
    seeded: Seeded, cli_database: str
) -> None:
    async def _fleet(session: AsyncSession) -> int:
        incident = Incident(
            title="Attack from 203.0.113.7 on 2 routers",
            incident_type="fleet_attack",
            severity="error",
            details={"devices": ["gw", "gw-far"], "attacker_ip": "203.0.113.7"},
        )
        session.add(incident)
        await session.flush()
        return incident.id

    fleet_id = run_db(cli_database, _fleet)
    listed = runner.invoke(app, ["list", "--json", "--device", "gw-far"])
    assert [i["id"] for i in json.loads(listed.output)] == [fleet_id]
    both = runner.invoke(app, ["list", "--json", "--device", "gw"])
    assert {i["id"] for i in json.loads(both.output)} == {fleet_id, seeded.incident_id}


def test_assign_and_comment_show_up_in_show(seeded: Seeded) -> None:
    ref = str(seeded.incident_id)
    assert runner.invoke(app, ["assign", ref, "bob"]).exit_code == 0
    commented = runner.invoke(app, ["comment", ref, "blocked upstream too", "--by", "carol"])
    assert commented.exit_code == 0, commented.output
    shown = _show(seeded.incident_id)
    assert shown["assignee"] == "bob"
    assert [(c["author"], c["body"]) for c in shown["comments"]] == [
        ("carol", "blocked upstream too")
    ]
    assert [f["id"] for f in shown["findings"]] == [seeded.brute_force]
    assert [a["id"] for a in shown["actions"]] == [seeded.pending_action]
    text = runner.invoke(app, ["show", ref])
    assert "blocked upstream too" in text.output


def test_resolving_an_incident_resolves_its_open_findings(seeded: Seeded) -> None:
    ref = str(seeded.incident_id)
    assert runner.invoke(app, ["ack", ref]).exit_code == 0
    resolved = runner.invoke(app, ["resolve", ref, "--by", "dave"])
    assert resolved.exit_code == 0, resolved.output
    assert "1 open finding(s) closed" in resolved.output
    shown = _show(seeded.incident_id)
    assert shown["status"] == "resolved"
    assert shown["resolved_at"] is not None
    assert shown["findings"][0]["status"] == "resolved"
    finding = runner.invoke(findings_cli.app, ["show", str(seeded.brute_force), "--json"])
    assert json.loads(finding.output)["resolved_at"] is not None
    refused = runner.invoke(app, ["ack", ref])
    assert refused.exit_code == 1
    assert "cannot become acknowledged" in refused.output


def test_a_missing_incident_is_exit_1(seeded: Seeded) -> None:
    result = runner.invoke(app, ["comment", "4242", "hello"])
    assert result.exit_code == 1
    assert "no incident 4242" in result.output

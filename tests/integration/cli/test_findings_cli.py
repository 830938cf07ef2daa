"""`opmas findings` on the stored findings: list with filters, show, ack and resolve."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli.findings import app
from opmas.models import Finding
from tests.integration.cli.conftest import Seeded, run_db

runner = CliRunner()


def _ids(*args: str) -> list[int]:
    result = runner.invoke(app, ["list", "--json", *args])
    assert result.exit_code == 0, result.output
    return [row["id"] for row in json.loads(result.output)]


def test_list_filters_by_status_severity_device_agent_and_age(seeded: Seeded) -> None:
    assert _ids() == [seeded.brute_force, seeded.old_wifi]  # newest first
    assert _ids("--severity", "error") == [seeded.brute_force]
    assert _ids("--status", "resolved") == [seeded.old_wifi]
    assert _ids("--device", "192.0.2.1") == [seeded.brute_force]
    assert _ids("--device", "ap1") == [seeded.old_wifi]
    assert _ids("--agent", "WifiAgent") == [seeded.old_wifi]
    assert _ids("--rule", "ssh-brute-force-fast") == [seeded.brute_force]
    assert _ids("--since", "1d") == [seeded.brute_force]
    assert _ids("--limit", "1") == [seeded.brute_force]
    table = runner.invoke(app, ["list"])
    assert table.exit_code == 0, table.output
    assert "no findings" not in table.output
    assert "┃ id" in table.output


def test_list_refuses_an_unknown_severity_with_exit_2(seeded: Seeded) -> None:
    result = runner.invoke(app, ["list", "--severity", "huge"])
    assert result.exit_code == 2


def test_show_by_uuid_prefix_names_incident_evidence_and_actions(seeded: Seeded) -> None:
    result = runner.invoke(app, ["show", seeded.brute_force_uuid[:8], "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["id"] == seeded.brute_force
    assert shown["details"] == {"ip": "203.0.113.7", "count": 12}
    assert len(shown["evidence_event_ids"]) == 1
    assert shown["incident"]["title"] == "SSH attack on gw"
    assert [a["id"] for a in shown["actions"]] == [seeded.pending_action]
    text = runner.invoke(app, ["show", str(seeded.brute_force)])
    assert text.exit_code == 0, text.output
    assert "SSH attack on gw" in text.output
    assert "Block 203.0.113.7 on gw" in text.output


def test_show_of_a_missing_finding_is_one_error_line_and_exit_1(seeded: Seeded) -> None:
    result = runner.invoke(app, ["show", "999999"])
    assert result.exit_code == 1
    assert "no finding 999999" in result.output
    assert "Traceback" not in result.output


def _finding(url: str, finding_id: int) -> Finding:
    async def _get(session: AsyncSession) -> Finding:
        return (await session.scalars(select(Finding).where(Finding.id == finding_id))).one()

    return run_db(url, _get)


def test_ack_then_resolve_sets_status_times_and_assignee(seeded: Seeded, cli_database: str) -> None:
    ref = str(seeded.brute_force)
    acked = runner.invoke(app, ["ack", ref, "--by", "alice"])
    assert acked.exit_code == 0, acked.output
    row = _finding(cli_database, seeded.brute_force)
    assert (row.status, row.assignee) == ("acknowledged", "alice")
    assert row.acknowledged_at is not None
    assert row.resolved_at is None
    resolved = runner.invoke(app, ["resolve", ref, "--false-positive"])
    assert resolved.exit_code == 0, resolved.output
    row = _finding(cli_database, seeded.brute_force)
    assert row.status == "false_positive"
    assert row.resolved_at is not None


def test_ack_of_a_resolved_finding_is_refused(seeded: Seeded, cli_database: str) -> None:
    result = runner.invoke(app, ["ack", str(seeded.old_wifi)])
    assert result.exit_code == 1
    assert "is resolved; it cannot become acknowledged" in result.output
    assert _finding(cli_database, seeded.old_wifi).acknowledged_at is None
    again = runner.invoke(app, ["resolve", str(seeded.old_wifi), "--false-positive"])
    assert again.exit_code == 1


def test_a_uuid_prefix_of_digits_only_is_found_when_no_id_matches(
    seeded: Seeded, cli_database: str
) -> None:
    digits = uuid.UUID("95047087-6dec-4977-a74f-4e2c42a446ee")  # a uuid4 may start so

    async def _renumber(session: AsyncSession) -> None:
        await session.execute(
            update(Finding).where(Finding.id == seeded.brute_force).values(finding_uuid=digits)
        )

    run_db(cli_database, _renumber)
    result = runner.invoke(app, ["show", str(digits)[:8], "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["id"] == seeded.brute_force

"""`opmas playbooks mode`, `opmas devices remove` and the allowlist's checked values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli.main import app
from opmas.models import Device, Finding, IntendedAction, Playbook, PlaybookStep
from opmas.settings import BusSettings
from tests.integration.cli.conftest import Seeded, run_db

runner = CliRunner()
pytestmark = pytest.mark.integration


def _ok(*args: str, stdin: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


def test_playbook_mode_switches_between_manual_and_auto(seeded: Seeded, cli_database: str) -> None:
    assert "block-ssh: manual -> auto" in _ok("playbooks", "mode", seeded.playbook, "auto")
    (listed,) = json.loads(_ok("playbooks", "list", "--json"))
    assert listed["execution_mode"] == "auto"
    assert "was auto" in _ok("playbooks", "mode", seeded.playbook, "auto")
    assert runner.invoke(app, ["playbooks", "mode", seeded.playbook, "sometimes"]).exit_code == 2
    assert runner.invoke(app, ["playbooks", "mode", "nope", "auto"]).exit_code == 1

    async def _own_mode(session: AsyncSession) -> None:
        step = await session.scalar(select(PlaybookStep))
        assert step is not None
        step.execution_mode = "auto"

    run_db(cli_database, _own_mode)
    out = _ok("playbooks", "mode", seeded.playbook, "manual")
    assert "step 1 keeps its own mode: auto" in out


def test_removing_a_device_keeps_its_history_and_rejects_its_open_actions(
    seeded: Seeded, cli_database: str, cli_bus: BusSettings
) -> None:
    refused = runner.invoke(app, ["devices", "remove", "gw"], input="n\n")
    assert refused.exit_code == 1
    assert "Kept, without the link to it: 1 finding(s), 1 incident(s), 1 action(s)" in (
        refused.output
    )
    assert "Its 1 pending or approved action(s) are rejected" in refused.output
    assert [d["hostname"] for d in json.loads(_ok("devices", "list", "--json"))] == ["gw"]

    out = _ok("devices", "remove", "gw", "--yes", "--by", "alice")
    assert f"device gw removed; rejected action(s) {seeded.pending_action}" in out
    assert json.loads(_ok("devices", "list", "--json")) == []

    async def _after(session: AsyncSession) -> dict[str, Any]:
        action = await session.get(IntendedAction, seeded.pending_action)
        assert action is not None
        return {
            "status": action.status,
            "note": action.history[-1]["note"],
            "device_id": action.device_id,
            "findings": await session.scalar(select(func.count()).select_from(Finding)),
            "playbooks": await session.scalar(select(func.count()).select_from(Playbook)),
            "devices": await session.scalar(select(func.count()).select_from(Device)),
        }

    after = run_db(cli_database, _after)
    assert after == {
        "status": "rejected",
        "note": "device removed",
        "device_id": None,
        "findings": 2,
        "playbooks": 1,
        "devices": 0,
    }
    assert runner.invoke(app, ["devices", "remove", "gw", "--yes"]).exit_code == 1


def test_the_allowlist_refuses_an_impossible_ip_with_one_line(cli_database: str) -> None:
    result = runner.invoke(app, ["allowlist", "add", "192.168.1.300"])
    assert result.exit_code == 2
    assert "looks like an IPv4 address but is not one" in result.output
    assert "Octet 300" in result.output
    assert json.loads(_ok("allowlist", "list", "--json")) == []
    assert "device gw-1.lan added" in _ok("allowlist", "add", "gw-1.lan")
    assert "network 10.0.0.0/8 added" in _ok("allowlist", "add", "10.1.2.3/8")
    assert "removed" in _ok("allowlist", "remove", "gw-1.lan")

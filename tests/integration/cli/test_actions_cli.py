"""`opmas actions`: list, show, approve (published on actions.approved), reject."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.bus.connect import connect_bus
from opmas.cli.actions import app
from opmas.messages import Action
from opmas.models import IntendedAction
from opmas.settings import BusSettings
from tests.integration.cli.conftest import Seeded, run_db

runner = CliRunner()


def _show(action_id: int) -> dict[str, Any]:
    result = runner.invoke(app, ["show", str(action_id), "--json"])
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.output)
    return shown


def _published(nats_url: str, bus_settings: BusSettings, state: str) -> list[Action]:
    async def _read() -> list[Action]:
        async with connect_bus(nats_url, bus_settings) as bus:
            sub = await bus.js.subscribe(bus.subjects.actions(state))
            found: list[Action] = []
            try:
                while True:
                    msg = await sub.next_msg(timeout=1.0)
                    found.append(msgspec.json.decode(msg.data, type=Action))
            except TimeoutError:
                return found
            finally:
                await sub.unsubscribe()

    return asyncio.run(_read())


def test_list_filters_by_status_and_device(seeded: Seeded) -> None:
    listed = runner.invoke(app, ["list", "--json", "--status", "pending", "--device", "192.0.2.1"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["id"], r["device_hostname"]) for r in rows] == [(seeded.pending_action, "gw")]
    assert json.loads(runner.invoke(app, ["list", "--json", "--status", "failed"]).output) == []
    assert runner.invoke(app, ["list", "--status", "bogus"]).exit_code == 2


def test_approve_commits_and_publishes_on_actions_approved(
    seeded: Seeded, cli_bus: BusSettings, nats_url: str
) -> None:
    result = runner.invoke(app, ["approve", str(seeded.pending_action), "--by", "alice"])
    assert result.exit_code == 0, result.output
    shown = _show(seeded.pending_action)
    assert (shown["status"], shown["decided_by"]) == ("approved", "alice")
    assert [h["state"] for h in shown["history"]] == ["pending", "approved"]
    messages = _published(nats_url, cli_bus, "approved")
    assert [(m.action_id, m.state, m.device_hostname) for m in messages] == [
        (seeded.pending_action, "approved", "gw")
    ]


def test_reject_keeps_the_reason_and_a_rejected_action_cannot_be_approved(
    seeded: Seeded, cli_bus: BusSettings, nats_url: str
) -> None:
    ref = str(seeded.pending_action)
    rejected = runner.invoke(app, ["reject", ref, "--reason", "false alarm", "--by", "bob"])
    assert rejected.exit_code == 0, rejected.output
    assert _show(seeded.pending_action)["history"][-1]["note"] == "false alarm"
    assert len(_published(nats_url, cli_bus, "rejected")) == 1
    approved = runner.invoke(app, ["approve", ref])
    assert approved.exit_code == 1
    assert f"action {seeded.pending_action} is rejected; it cannot become approved" in (
        approved.output
    )
    assert _show(seeded.pending_action)["status"] == "rejected"
    assert _published(nats_url, cli_bus, "approved") == []


def test_show_prints_history_and_result(seeded: Seeded, cli_database: str) -> None:
    async def _finish(session: AsyncSession) -> None:
        await session.execute(
            update(IntendedAction)
            .where(IntendedAction.id == seeded.pending_action)
            .values(
                status="failed",
                attempts=2,
                result={"exit_status": 3, "stdout": "out-line", "stderr": "err-line"},
            )
        )

    run_db(cli_database, _finish)
    result = runner.invoke(app, ["show", str(seeded.pending_action)])
    assert result.exit_code == 0, result.output
    for expected in ("orchestrator", "nft_block_ip", "exit_status", "out-line", "err-line"):
        assert expected in result.output
